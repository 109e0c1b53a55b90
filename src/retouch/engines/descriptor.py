"""The model descriptor: what a loaded model needs and gives, and the one way to run it.

An ``ImageModel`` is a loaded ONNX or ncnn network plus its typed metadata (``ModelSpec``):
output scale, size requirements (a multiple, a fixed size, a minimum; padded or stretched to
it), the value range it takes and gives, its tensor layout, an optional mask input, and
whether it may be tiled. ``run`` takes RGB pixels (uint8, uint16, or float in 0..1, HxWxC)
and returns the output at ``scale`` times the input size, clamped to 0..1 as float32 or
rounded once to uint8/uint16: padding, NCHW, value ranges and cropping back are done here
and nowhere else. ``run_tiled`` does the same in blended overlapping tiles (``tiling.py``),
retried smaller when the engine runs out of memory.

``load_onnx`` and ``load_ncnn`` load through the process's bounded cache (``cache.py``): one
load per file and description, whatever thread count a request asks for (see the package
docstring for threads).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from retouch import tiling
from retouch.engines import cap_threads
from retouch.engines.cache import ModelCache, shared_models
from retouch.errors import InvalidRequest
from retouch.types import ProgressCallback, no_progress

Layout = Literal["NCHW", "NHWC"]
Tiling = Literal["supported", "discouraged"]
OutDtype = type[np.float32] | type[np.uint8] | type[np.uint16]


@dataclass(frozen=True)
class SizeRequirements:
    """What sizes the network takes (after spandrel's ``SizeRequirements``)."""

    multiple: int = 1
    """Height and width are padded up to a multiple of this."""
    fixed: int | None = None
    """The network takes exactly ``fixed`` x ``fixed``."""
    minimum: int = 1
    """Sides shorter than this are padded up to it."""
    fit: Literal["pad", "stretch"] = "pad"
    """How an image meets a fixed size: padded and cropped back after (the image may be at
    most ``fixed``), or resized to it and the output resized back (for networks that look at
    the whole frame at one resolution, as segmenters do)."""
    pad_mode: Literal["reflect", "reflect-or-edge", "edge"] = "reflect"
    """"reflect" mirrors (repeatedly, when the padding is longer than the side);
    "reflect-or-edge" mirrors when the side is longer than the padding and repeats the edge
    pixel otherwise (LaMa's reference code); "edge" repeats the edge pixel."""

    def __post_init__(self) -> None:
        if self.multiple < 1 or self.minimum < 1 or (self.fixed is not None and self.fixed < 1):
            raise ValueError("size requirements must be positive")
        if self.fit == "stretch" and self.fixed is None:
            raise ValueError("stretching needs a fixed size")

    def padded(self, height: int, width: int, *, name: str = "this model") -> tuple[int, int]:
        """The (height, width) the network gets for an image of this size (pad fit)."""
        if self.fixed is not None:
            if max(height, width) > self.fixed:
                raise InvalidRequest(
                    f"{name} takes at most {self.fixed} px; got {width} x {height}"
                )
            return self.fixed, self.fixed

        def up(side: int) -> int:
            return max(self.minimum, -(-side // self.multiple) * self.multiple)

        return up(height), up(width)


@dataclass(frozen=True)
class InputRange:
    """How the network wants its pixels: ``(x / peak - mean) / std * white`` per channel,
    with x in 0..1 (peak is 1, or the image's own maximum with ``by_peak``)."""

    white: float = 1.0
    """The network's value for full intensity: 1.0 or 255.0."""
    dtype: Literal["float32", "uint8"] = "float32"
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)
    by_peak: bool = False
    """Scale by the image's own maximum instead of white (what U^2-Net was trained with)."""

    def __post_init__(self) -> None:
        if self.dtype == "uint8" and (
            self.white != 255.0 or any(self.mean) or self.std != (1.0, 1.0, 1.0) or self.by_peak
        ):
            raise ValueError("uint8 inputs are plain 0..255 pixels (white 255, no mean/std)")
        if min(self.std) <= 0 or self.white <= 0:
            raise ValueError("std and white must be positive")

    def affine(self, peak: float) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
        """(offset, factor) with model value = (x - offset) * factor, x in 0..1."""
        peak = max(peak, 1e-6) if self.by_peak else 1.0
        mean, std = np.asarray(self.mean, np.float32), np.asarray(self.std, np.float32)
        return (mean * peak).astype(np.float32), (self.white / (std * peak)).astype(np.float32)


@dataclass(frozen=True)
class OutputRange:
    """How to read the network's output as 0..1 (then clamped)."""

    white: float | None = 1.0
    """The output's value for full intensity; None: 255 when the output's maximum is over
    1.5, else 1 (exports of one network disagree)."""
    sigmoid: bool = False
    """The output is logits."""
    stretch: bool = False
    """Stretch the output's own minimum..maximum to 0..1 (saliency maps)."""


@dataclass(frozen=True)
class MaskInput:
    """A second input: the mask of pixels to fill, in the network's own convention."""

    hole: float = 1.0
    keep: float = 0.0
    dtype: Literal["float32", "uint8"] = "float32"


@dataclass(frozen=True)
class ModelSpec:
    """Typed metadata of an image model: everything ``run`` needs to know about it."""

    scale: int = 1
    size: SizeRequirements = field(default_factory=SizeRequirements)
    input: InputRange = field(default_factory=InputRange)
    output: OutputRange = field(default_factory=OutputRange)
    layout: Layout = "NCHW"
    mask: MaskInput | None = None
    tiling: Tiling = "discouraged"
    """"supported": output pixels depend on a bounded neighbourhood (convolutional SR), so
    blended tiles match one big run. "discouraged": the network normalises or attends over
    its whole input, so tiles come out different."""
    bytes_per_pixel: int = 0
    """Engine memory per input pixel, measured, for sizing tiles; 0 when unknown."""

    def __post_init__(self) -> None:
        if self.scale < 1:
            raise ValueError(f"scale must be >= 1, got {self.scale}")


@dataclass(frozen=True, eq=False)
class ImageModel:
    name: str
    spec: ModelSpec
    engine: Any
    """An ``OnnxEngine`` or an ``NcnnEngine``."""

    @property
    def scale(self) -> int:
        return self.spec.scale

    @property
    def threads(self) -> int:
        """Threads of a run that does not ask for its own (for ONNX: of every run)."""
        threads: int = self.engine.threads
        return threads

    @property
    def session(self) -> Any:
        """The runtime's own object: an onnxruntime InferenceSession or an ncnn Net."""
        return self.engine.session

    @property
    def path(self) -> Path:
        path: Path = self.engine.path
        return path

    def run(
        self,
        image: NDArray[Any],
        *,
        mask: NDArray[np.bool_] | None = None,
        extra: Mapping[str, NDArray[Any]] | None = None,
        threads: int | None = None,
        out_dtype: OutDtype = np.float32,
    ) -> NDArray[Any]:
        """HxWxC pixels -> the output at ``scale`` x the size: float32 in 0..1, or uint8 /
        uint16 rounded once. ``mask`` (True = fill) goes to the mask input; ``extra`` are
        further inputs by name, passed as they are."""
        pixels = _as_pixels(image)
        height, width = pixels.shape[:2]
        size, spec = self.spec.size, self.spec
        if (mask is None) != (spec.mask is None):
            raise InvalidRequest(
                f"{self.name} {'takes' if spec.mask else 'takes no'} mask; "
                f"{'none' if mask is None else 'one'} was given"
            )
        if mask is not None and mask.shape != (height, width):
            raise InvalidRequest(f"the mask is {mask.shape[::-1]}, the image {(width, height)}")
        if size.fit == "stretch":
            assert size.fixed is not None
            work = _resize(pixels, (size.fixed, size.fixed))
            work_mask = None if mask is None else _resize_mask(mask, size.fixed)
        else:
            padded = size.padded(height, width, name=self.name)
            work = _pad(pixels, padded, size.pad_mode)
            work_mask = None if mask is None else _pad(mask, padded, "edge")
        raw = self._infer(work, work_mask, extra, threads)
        if size.fit == "pad":
            raw = raw[: height * spec.scale, : width * spec.scale]
            if raw.shape[:2] != (height * spec.scale, width * spec.scale):
                raise InvalidRequest(
                    f"{self.name} returned {raw.shape[1]} x {raw.shape[0]} for a "
                    f"{work.shape[1]} x {work.shape[0]} input; expected x{spec.scale}"
                )
        unit = _to_unit(raw, spec.output)
        target = (width * spec.scale, height * spec.scale)
        if out_dtype is np.uint8 or out_dtype is np.uint16:
            quantised = tiling.quantise(unit, out_dtype)
            return quantised if size.fit == "pad" else _resize(quantised, target)
        return unit if size.fit == "pad" else _resize(unit, target)

    def embed(
        self,
        image: NDArray[Any],
        *,
        extra: Mapping[str, NDArray[Any]] | None = None,
        threads: int | None = None,
    ) -> NDArray[np.float32]:
        """The network's first output as it comes (a style vector, features): the input is
        prepared as for ``run``; nothing is done to the output."""
        pixels = _as_pixels(image)
        size = self.spec.size
        if size.fit == "stretch":
            assert size.fixed is not None
            work = _resize(pixels, (size.fixed, size.fixed))
        else:
            work = _pad(pixels, size.padded(*pixels.shape[:2], name=self.name), size.pad_mode)
        if self.engine.runtime != "onnxruntime":
            raise InvalidRequest(f"{self.name}: only ONNX models give raw outputs")
        feeds = self._feeds(work, None, extra)
        return np.asarray(self.engine.infer(feeds, [self.engine.outputs[0].name])[0], np.float32)

    def probe(self, side: int = 32) -> tuple[int, ...]:
        """The shape of the raw output (HxWxC) for a black ``side`` x ``side`` input: how a
        model from a file reveals its scale and channels."""
        zeros = np.zeros((side, side, 3), np.uint8)
        return tuple(self._infer(zeros, None, None, None).shape)

    def run_tiled(
        self,
        image: NDArray[Any],
        *,
        tile: int,
        overlap: int,
        threads: int | None = None,
        out_dtype: type[np.uint8] | type[np.uint16] = np.uint8,
        progress: ProgressCallback = no_progress,
        stage: str = "tiles",
        tile_width: int | None = None,
    ) -> NDArray[Any]:
        """``run`` in blended overlapping tiles of ``tile`` rows by ``tile_width`` (default
        ``tile``) columns, halved while the engine runs out of memory (down to 32 px);
        raises ``EngineOutOfMemory`` after that."""
        if self.spec.tiling != "supported" or self.spec.size.fixed is not None:
            raise InvalidRequest(
                f"{self.name} sees its whole input at once; tiles would come out different"
            )
        return tiling.run_tiled_with_retry(
            _as_pixels(image),
            functools.partial(self.run, threads=threads),
            scale=self.spec.scale,
            tile=tile,
            overlap=overlap,
            out_dtype=out_dtype,
            progress=progress,
            stage=stage,
            tile_width=tile_width,
        )

    def _infer(
        self,
        work: NDArray[Any],
        mask: NDArray[np.bool_] | None,
        extra: Mapping[str, NDArray[Any]] | None,
        threads: int | None,
    ) -> NDArray[np.float32]:
        if self.engine.runtime == "ncnn":
            if mask is not None or extra:
                raise InvalidRequest(f"{self.name}: ncnn models here take one image input")
            offset, factor = self.spec.input.affine(_peak(work, self.spec.input))
            if work.dtype == np.uint8:  # ncnn scales 0..255 pixels itself
                mean, norm = offset * 255.0, factor / 255.0
            else:
                mean, norm = offset, factor
            result: NDArray[np.float32] = self.engine.run_pixels(
                work,
                mean=[float(v) for v in mean],
                norm=[float(v) for v in norm],
                threads=cap_threads(threads or self.engine.threads),
            )
            return result
        from retouch.engines.onnx_session import from_batch

        feeds = self._feeds(work, mask, extra)
        (out,) = self.engine.infer(feeds, [self.engine.outputs[0].name])
        return from_batch(out, layout=self.spec.layout)

    def _feeds(
        self,
        work: NDArray[Any],
        mask: NDArray[np.bool_] | None,
        extra: Mapping[str, NDArray[Any]] | None,
    ) -> dict[str, NDArray[Any]]:
        from retouch.engines.onnx_session import to_batch

        spec = self.spec
        offset, factor = spec.input.affine(_peak(work, spec.input))
        names = self.engine.input_names
        feeds = {
            names[0]: to_batch(work, offset, factor, dtype=spec.input.dtype, layout=spec.layout)
        }
        if mask is not None and spec.mask is not None:
            values = np.where(mask, spec.mask.hole, spec.mask.keep)
            shaped = values[None, None] if spec.layout == "NCHW" else values[None, :, :, None]
            feeds[names[1]] = np.ascontiguousarray(
                shaped, np.uint8 if spec.mask.dtype == "uint8" else np.float32
            )
        for key, value in (extra or {}).items():
            if key not in names:
                raise InvalidRequest(f"{self.name} has no input {key!r}; it has {names}")
            feeds[key] = value
        missing = [n for n in names if n not in feeds]
        if missing:
            raise InvalidRequest(f"{self.name} also needs the inputs {missing}")
        return feeds


def _as_pixels(image: NDArray[Any]) -> NDArray[Any]:
    """uint8 stays uint8 (runtimes scale it themselves); anything else is float32 in 0..1."""
    if image.ndim != 3:
        raise InvalidRequest(f"expected an H x W x C image, got shape {image.shape}")
    if image.dtype == np.uint8:
        return image
    if image.dtype == np.uint16:
        return image.astype(np.float32) / np.float32(65535.0)
    return image.astype(np.float32, copy=False)


def _peak(pixels: NDArray[Any], convention: InputRange) -> float:
    if not convention.by_peak:
        return 1.0
    peak = float(pixels.max())
    return peak / 255.0 if pixels.dtype == np.uint8 else peak


def _pad(pixels: NDArray[Any], size: tuple[int, int], mode: str) -> NDArray[Any]:
    height, width = pixels.shape[:2]
    pad_h, pad_w = size[0] - height, size[1] - width
    if not pad_h and not pad_w:
        return pixels
    if mode == "reflect-or-edge":
        mode = "reflect" if height > pad_h and width > pad_w else "edge"
    elif mode == "reflect" and min(height, width) < 2:
        mode = "edge"  # nothing to mirror
    widths = [(0, pad_h), (0, pad_w)] + [(0, 0)] * (pixels.ndim - 2)
    padded: NDArray[Any] = np.pad(pixels, widths, mode=mode)  # type: ignore[call-overload]
    return padded


def _resize(pixels: NDArray[Any], size: tuple[int, int]) -> NDArray[Any]:
    """Resize to (width, height): Lanczos with Pillow for 8-bit 1- or 3-channel pixels (what
    the segmenters' reference code does; big reductions first halve by whole factors, which
    Pillow documents as indistinguishable from one Lanczos pass at a gap of 3 and which is 3x
    faster from 2048 px to 320), OpenCV otherwise (area down, Lanczos up)."""
    width, height = size
    if pixels.shape[1] == width and pixels.shape[0] == height:
        return pixels
    channels = pixels.shape[2]
    if pixels.dtype == np.uint8 and channels in (1, 3):
        from PIL import Image

        picture = Image.fromarray(pixels[:, :, 0] if channels == 1 else pixels)
        resized = np.asarray(picture.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0))
        return resized[:, :, None] if channels == 1 else resized
    import cv2

    shrink = width < pixels.shape[1] and height < pixels.shape[0]
    out = cv2.resize(pixels, size, interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LANCZOS4)
    out = out[:, :, None] if out.ndim == 2 else out
    return np.clip(out, 0, 1) if out.dtype == np.float32 else out


def _resize_mask(mask: NDArray[np.bool_], side: int) -> NDArray[np.bool_]:
    import cv2

    grey = cv2.resize(mask.astype(np.uint8), (side, side), interpolation=cv2.INTER_NEAREST)
    resized: NDArray[np.bool_] = grey > 0
    return resized


def _to_unit(raw: NDArray[np.float32], output: OutputRange) -> NDArray[np.float32]:
    values = raw
    if output.sigmoid:
        values = (1.0 / (1.0 + np.exp(-values))).astype(np.float32, copy=False)
    if output.stretch:
        low, high = float(values.min()), float(values.max())
        if high - low > 1e-6:
            values = ((values - np.float32(low)) * np.float32(1.0 / (high - low))).astype(
                np.float32, copy=False
            )
        else:
            values = np.zeros_like(values)
    else:
        white = output.white or (255.0 if float(values.max()) > 1.5 else 1.0)
        if white != 1.0:
            values = values * np.float32(1.0 / white)
    unit: NDArray[np.float32] = np.clip(values, 0.0, 1.0, out=values)  # ours: in place
    return unit


# --- loading, through the bounded cache --------------------------------------------------------

Describe = Callable[["ImageModel"], ModelSpec]
"""Reads a model's spec off the loaded model (its input types, a probe run), once per load."""


def load_onnx(
    path: Path,
    *,
    name: str | None = None,
    spec: ModelSpec | Describe | None = None,
    threads: int | None = None,
    cache: ModelCache[Any] | None = None,
) -> ImageModel:
    """The ONNX model at ``path``, loaded once per file and spec. ``threads`` sizes the
    session's pool when this call is the one that loads it (capped at the machine's cores);
    later calls share that session whatever they ask."""
    from retouch.engines.onnx_session import OnnxEngine

    def load() -> ImageModel:
        engine = OnnxEngine(path, threads=cap_threads(threads))
        return _describe(name or path.name, engine, spec)

    return _cached(cache, ("onnx", *file_key(path), _spec_key(spec)), load)


def load_ncnn(
    param: Path,
    weights: Path | None = None,
    *,
    name: str | None = None,
    spec: ModelSpec | Describe | None = None,
    threads: int | None = None,
    cache: ModelCache[Any] | None = None,
) -> ImageModel:
    """The ncnn model ``param`` + ``weights`` (default: the .bin beside it), loaded once.
    ncnn takes threads per run, so ``threads`` here is only the default of runs that do
    not ask."""
    from retouch.engines.ncnn_net import load_net

    bin_path = weights or param.with_suffix(".bin")

    def load() -> ImageModel:
        engine = load_net(param, bin_path, threads=cap_threads(threads))
        return _describe(name or param.stem, engine, spec)

    key = ("ncnn", *file_key(param), *file_key(bin_path), _spec_key(spec))
    return _cached(cache, key, load)


def _describe(name: str, engine: Any, spec: ModelSpec | Describe | None) -> ImageModel:
    if spec is None or isinstance(spec, ModelSpec):
        return ImageModel(name=name, spec=spec or ModelSpec(), engine=engine)
    return ImageModel(name=name, spec=spec(ImageModel(name, ModelSpec(), engine)), engine=engine)


def _cached(
    cache: ModelCache[Any] | None, key: Hashable, load: Callable[[], ImageModel]
) -> ImageModel:
    model = (cache if cache is not None else shared_models()).get(key, load)
    assert isinstance(model, ImageModel)
    return model


def file_key(path: Path) -> tuple[str, int, int]:
    """A file by where it is and what it is now: a replaced file is loaded again."""
    try:
        stat = path.stat()
    except OSError:
        raise InvalidRequest(f"{path}: no such model file") from None
    return str(path.resolve()), stat.st_mtime_ns, stat.st_size


def _spec_key(spec: ModelSpec | Describe | None) -> Hashable:
    if spec is None or isinstance(spec, ModelSpec):
        return spec
    return f"{spec.__module__}.{spec.__qualname__}"
