"""Masks drawn or changed with no model: shapes the size of an image, and a mask grown,
shrunk, feathered, inverted, thresholded or read from transparency.

The ``mask`` operation's other kinds (subject, background, later clicks and phrases) come
from providers with models; this one makes the kinds that need none.
"""

from __future__ import annotations

import numpy as np

from retouch import masks as mask_ops
from retouch._modules import module_available
from retouch.errors import DependencyMissing, MaskError, UnsupportedOperation
from retouch.results import ImageResult, OutputImage
from retouch.types import (
    Mask,
    MaskRequest,
    OperationSpec,
    Progress,
    ProgressCallback,
    ProviderInfo,
    ProviderStatus,
    Request,
)

NAME = "masks"
SHAPES = frozenset({"rect", "ellipse", "polygon"})
CHANGES = frozenset({"grow", "shrink", "feather", "invert", "threshold", "from-alpha"})


class MasksProvider:
    info = ProviderInfo(
        name=NAME,
        kind="local",
        description="mask shapes (rectangle, ellipse, polygon) and mask changes (grow, shrink, "
        "feather, invert, threshold, from transparency); no weights",
        operations={"mask": OperationSpec(accepts_alpha=True, choices={"kind": SHAPES | CHANGES})},
        priority=20,
    )

    def status(self) -> ProviderStatus:
        if not module_available("cv2"):
            error = DependencyMissing("opencv-python-headless")
            return ProviderStatus(False, str(error), error)
        return ProviderStatus(True, "shapes and mask changes")

    def run(self, request: Request, progress: ProgressCallback) -> ImageResult:
        if not isinstance(request, MaskRequest):
            raise UnsupportedOperation(f"{NAME} does not do {request.operation}")
        progress(Progress("mask", 0, 1))
        mask = make(request)
        progress(Progress("mask", 1, 1))
        return ImageResult(
            images=[OutputImage(pixels=np.dstack([mask] * 3), source_mode="L")],
            provider=NAME,
            model=request.kind,
        )


def make(request: MaskRequest) -> Mask:
    picture, kind, size = request.image, request.kind, request.image.size
    if kind in ("rect", "ellipse", "polygon"):
        if kind == "polygon":
            shape, where = mask_ops.polygon(size, request.points), "points"
        else:
            assert request.box is not None  # the declaration requires it for these kinds
            draw = mask_ops.rectangle if kind == "rect" else mask_ops.ellipse
            shape, where = draw(size, request.box), "box"
        if not shape.any():  # a shape wholly off the picture: an empty mask is never meant
            raise MaskError(
                f"the {kind} lies outside the {size[0]} x {size[1]} image: it selects nothing; "
                f"give a {where} inside it (x 0..{size[0]}, y 0..{size[1]})",
                param=where,
            )
        return shape
    if kind == "from-alpha":
        return mask_ops.mask_from_picture(picture, mask_from="alpha")
    mask = mask_ops.mask_from_picture(picture, mask_from="luminance")
    px = request.px or 0
    if kind == "grow":
        return mask_ops.grow(mask, px)
    if kind == "shrink":
        return mask_ops.shrink(mask, px)
    if kind == "feather":
        return mask_ops.feather(mask, px)
    if kind == "invert":
        return mask_ops.invert(mask)
    if kind == "threshold":
        return mask_ops.threshold(mask, request.level)
    raise UnsupportedOperation(f"{NAME} does not make {kind!r} masks", param="kind")
