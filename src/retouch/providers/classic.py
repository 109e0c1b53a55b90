"""Classic algorithms, no weights: band / PatchMatch / Telea / Navier-Stokes fill, Lanczos.

- erase: PatchMatch (pypatchmatch) copies real texture from the rest of the image; a large
  hole that touches the picture's border is filled from a band around it instead (``fill``):
  PatchMatch would bring in whatever is strongest in the picture. Telea and Navier-Stokes
  (OpenCV) diffuse the border inwards: fast, smooth, blurry on texture.
- outpaint: each new strip is filled from a band next to its side, coarse to fine, fading
  into a blurred extension beyond what the band supports (``fill.extend``); PatchMatch over
  the whole canvas on request (it clones the subject into the new area).
- upscale / resize: Lanczos (OpenCV), any factor, 8 or 16 bit, alpha kept.
"""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import NDArray

from retouch import compose, fill
from retouch._modules import module_available
from retouch.errors import DependencyMissing, InvalidRequest, UnsupportedOperation
from retouch.results import ImageResult, OutputImage
from retouch.types import (
    EraseRequest,
    OperationSpec,
    OutpaintRequest,
    Pixels,
    Progress,
    ProgressCallback,
    ProviderInfo,
    ProviderStatus,
    Request,
    ResizeRequest,
    UpscaleRequest,
    param,
    parse_options,
)

NAME = "classic"
Method = Literal["auto", "patchmatch", "band", "telea", "ns"]
METHODS: tuple[Method, ...] = ("auto", "patchmatch", "band", "telea", "ns")
OutpaintMethod = Literal["band", "patchmatch"]
OUTPAINT_METHODS: tuple[OutpaintMethod, ...] = ("band", "patchmatch")
BORDER_HOLE_DEPTH = 16
"""auto fills a hole from the band around it when the hole touches the border and reaches
this many pixels from its nearest known pixel; smaller ones PatchMatch fills well."""


@dataclass(frozen=True)
class EraseOptions:
    method: Method = param(
        "auto",
        kind="text",
        choices=METHODS,
        help="classic fill: auto (band for big holes at the border, else patchmatch), band, "
        "patchmatch (texture from the whole picture), telea or ns (fast, smooth)",
    )
    """auto: band for a hole that touches the picture's border and is at least 32 pixels
    across, patchmatch otherwise. band: from the pixels around the hole, coarse to fine.
    patchmatch: texture from the whole picture. telea / ns: the border diffused inwards."""
    patch_size: int = param(5, low=1, high=32, help="PatchMatch patch radius (default 5)")
    """PatchMatch patch radius: patches span (2p+1)^2 pixels. Larger follows larger structure, slower."""
    radius: int = 5
    """Telea / Navier-Stokes neighbourhood radius in pixels."""

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {', '.join(METHODS)}, not {self.method!r}")
        if not 1 <= self.patch_size <= 32:
            raise ValueError(f"patch_size must be 1..32, got {self.patch_size}")
        if not 1 <= self.radius <= 64:
            raise ValueError(f"radius must be 1..64, got {self.radius}")


@dataclass(frozen=True)
class OutpaintOptions:
    method: OutpaintMethod = param(
        "band",
        kind="text",
        choices=OUTPAINT_METHODS,
        help="classic fill: band (continues each border, default) or patchmatch",
    )
    """band: each strip from a band next to its side (half the strip's width), coarse to
    fine; beyond what the band supports the detail fades into a blurred extension.
    patchmatch: PatchMatch over the whole canvas (copies the picture's strongest structures,
    the subject too)."""
    patch_size: int = 5
    """PatchMatch patch radius. (The seam's width is the request's ``feather``.)"""

    def __post_init__(self) -> None:
        if self.method not in OUTPAINT_METHODS:
            raise ValueError(
                f"method must be one of {', '.join(OUTPAINT_METHODS)}, not {self.method!r}"
            )
        if not 1 <= self.patch_size <= 32:
            raise ValueError(f"patch_size must be 1..32, got {self.patch_size}")


@dataclass(frozen=True)
class NoOptions:
    pass


# PatchMatch keeps its random seed in process-wide native state.
_patchmatch_lock = threading.Lock()


def patchmatch_fill(rgb: Pixels, hole: Pixels, *, patch_size: int, seed: int) -> Pixels:
    try:
        import patchmatch
    except ImportError as exc:
        raise DependencyMissing("pypatchmatch", purpose="PatchMatch fill") from exc
    if not patchmatch.patchmatch_available:
        raise DependencyMissing(
            "pypatchmatch", purpose="PatchMatch fill (its native library did not load)"
        )
    with _patchmatch_lock:
        patchmatch.set_random_seed(seed)
        out: Pixels = patchmatch.inpaint(np.ascontiguousarray(rgb), hole, patch_size=patch_size)
    return out


def draw_seed(seed: int | None) -> int:
    return seed if seed is not None else random.SystemRandom().randrange(2**32)


def border_hole(hole: NDArray[np.bool_]) -> bool:
    """Whether ``hole`` touches the picture's border and is big enough for the band fill."""
    edges = hole[0].any() or hole[-1].any() or hole[:, 0].any() or hole[:, -1].any()
    return bool(edges) and fill.hole_depth(hole) >= BORDER_HOLE_DEPTH


class ClassicProvider:
    info = ProviderInfo(
        name=NAME,
        kind="local",
        description="PatchMatch / Telea / Navier-Stokes fill and Lanczos resizing; no weights",
        operations={
            "erase": OperationSpec(honours=frozenset({"seed"}), options=EraseOptions),
            "outpaint": OperationSpec(honours=frozenset({"seed"}), options=OutpaintOptions),
            "upscale": OperationSpec(
                accepts_alpha=True,
                accepts_16bit=True,
                honours=frozenset({"model"}),
                options=NoOptions,
            ),
            "resize": OperationSpec(accepts_alpha=True, accepts_16bit=True, options=NoOptions),
        },
        priority=0,
    )

    def status(self) -> ProviderStatus:
        for module, package in (("patchmatch", "pypatchmatch"), ("cv2", "opencv-python-headless")):
            if not module_available(module):
                error = DependencyMissing(package)
                return ProviderStatus(ready=False, detail=str(error), error=error)
        return ProviderStatus(ready=True, detail="PatchMatch, Telea, Navier-Stokes, Lanczos")

    def run(self, request: Request, progress: ProgressCallback) -> ImageResult:
        if isinstance(request, EraseRequest):
            return self._erase(request, progress)
        if isinstance(request, OutpaintRequest):
            return self._outpaint(request, progress)
        if isinstance(request, (UpscaleRequest, ResizeRequest)):
            return self._resize(request, progress)
        raise UnsupportedOperation(f"{NAME} does not do {request.operation}")

    def _erase(self, request: EraseRequest, progress: ProgressCallback) -> ImageResult:
        options = parse_options(EraseOptions, request.options, provider=NAME)
        rgb = request.image.rgb8()
        hole = np.where(request.mask.array > 0, 255, 0).astype(np.uint8)
        progress(Progress("erase", 0, 1))
        method = options.method
        if method == "auto":
            method = "band" if border_hole(hole > 0) else "patchmatch"
        seed: int | None = None
        filled: Pixels
        if method == "band":
            seed = draw_seed(request.seed)
            filled = fill.fill_hole(
                rgb,
                hole > 0,
                seed=seed,
                on_round=lambda done, planned: progress(Progress("erase", done, planned)),
            )
        elif method == "patchmatch":
            seed = draw_seed(request.seed)
            filled = patchmatch_fill(rgb, hole, patch_size=options.patch_size, seed=seed)
        else:
            import cv2

            flag = cv2.INPAINT_TELEA if method == "telea" else cv2.INPAINT_NS
            filled = cv2.inpaint(rgb, hole, options.radius, flag)
            seed = request.seed
        progress(Progress("erase", 1, 1))
        return ImageResult(
            images=[OutputImage(pixels=filled, seed=seed)], provider=NAME, model=method
        )

    def _outpaint(self, request: OutpaintRequest, progress: ProgressCallback) -> ImageResult:
        options = parse_options(OutpaintOptions, request.options, provider=NAME)
        rgb = request.image.rgb8()
        left, right, top, bottom = request.left, request.right, request.top, request.bottom
        progress(Progress("outpaint", 0, 1))
        seed = draw_seed(request.seed)
        if options.method == "band":
            height, width = rgb.shape[:2]
            # the band the Toolkit cross-fades, clamped as compose.outpaint_canvas clamps it
            seam = max(0, min(request.feather, width // 4, height // 4))
            filled = fill.extend(
                rgb,
                left=left,
                right=right,
                top=top,
                bottom=bottom,
                seed=seed,
                seam=seam,
                on_round=lambda side, done, planned: progress(
                    Progress(f"outpaint {side}", done, planned)
                ),
            )
        else:
            canvas, to_fill, _ = compose.outpaint_canvas(
                rgb, left=left, right=right, top=top, bottom=bottom, feather=request.feather
            )
            filled = patchmatch_fill(canvas, to_fill, patch_size=options.patch_size, seed=seed)
        progress(Progress("outpaint", 1, 1))
        return ImageResult(
            images=[OutputImage(pixels=filled, seed=seed)], provider=NAME, model=options.method
        )

    def _resize(
        self, request: UpscaleRequest | ResizeRequest, progress: ProgressCallback
    ) -> ImageResult:
        parse_options(NoOptions, request.options, provider=NAME)
        size = (
            compose.scaled_size(
                request.image.size, scale=request.scale, width=request.width, height=request.height
            )
            if isinstance(request, UpscaleRequest)
            else compose.fitted_size(
                request.image.size,
                max_size=request.max_size,
                width=request.width,
                height=request.height,
                max_width=request.max_width,
                max_height=request.max_height,
            )
        )
        if isinstance(request, UpscaleRequest) and request.model not in (None, "lanczos"):
            raise InvalidRequest(f"{NAME} upscales with 'lanczos' only, not {request.model!r}")
        progress(Progress(request.operation, 0, 1))
        out = compose.resize_pixels(request.image.pixels, size)
        progress(Progress(request.operation, 1, 1))
        return ImageResult(images=[OutputImage(pixels=out)], provider=NAME, model="lanczos")
