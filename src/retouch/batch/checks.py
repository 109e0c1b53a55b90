"""Quality checks of one step's output, measured against its input (and mask).

- ``max_change_outside_mask``: the largest change, in 8-bit levels, where the mask is 0. It
  must be 0 for masked steps (retouch composites every result onto the original), so masked
  steps check it even when the recipe does not ask.
- ``min_change_inside_mask``: the mean change inside the mask: did the erase do anything?
- ``seam``: the mean gradient on a thin band across the mask's border, over the mean
  gradient on the rings just inside and just outside it. A fill that blends in scores
  about 1; a visible edge where the fill meets the photo scores well above (a flat patch
  in a textured photo scores 3 or more).
- ``size``: the output's size, given, or ``expected`` from the step's own fields.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from retouch import compose
from retouch.batch.recipe import Checks
from retouch.picture import Mask, Pixels
from retouch.types import OutpaintRequest, Request

SEAM_BAND = 1
"""Half-width in pixels of the band across the border where a seam would show."""
SEAM_RING = 6
"""Width in pixels of the reference rings on each side of the band."""


@dataclass(frozen=True)
class Measured:
    name: str
    value: float | list[int]
    limit: float | list[int]
    ok: bool

    def as_dict(self) -> dict[str, Any]:
        return {"value": self.value, "limit": self.limit, "ok": self.ok}

    def describe(self) -> str:
        return f"{self.name} is {self.value}, limit {self.limit}"


def _levels(pixels: Pixels) -> NDArray[np.float32]:
    """Pixels as float 8-bit levels (16-bit divided by 257)."""
    values = pixels.astype(np.float32)
    return values / np.float32(257.0) if pixels.dtype == np.uint16 else values


def change_outside_mask(before: Pixels, after: Pixels, mask: Mask) -> float:
    if before.shape != after.shape:
        return float("inf")
    outside = mask == 0
    if not outside.any():
        return 0.0
    diff = np.abs(_levels(after) - _levels(before))[outside]
    return float(round(float(diff.max()), 3))


def change_inside_mask(before: Pixels, after: Pixels, mask: Mask) -> float:
    inside = mask > 127
    if before.shape != after.shape or not inside.any():
        return 0.0
    diff = np.abs(_levels(after)[..., :3] - _levels(before)[..., :3])[inside]
    return float(round(float(diff.mean()), 3))


def seam_score(pixels: Pixels, mask: Mask) -> float:
    """Gradient on the mask's border over the gradient beside it (about 1: no seam)."""
    import cv2

    hard = (mask > 127).astype(np.uint8)
    if not hard.any() or hard.all():
        return 1.0
    grey = _levels(pixels)[..., :3] @ np.array([0.299, 0.587, 0.114], np.float32)
    gx = cv2.Sobel(grey, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(grey, cv2.CV_32F, 0, 1, ksize=3)
    gradient = np.hypot(gx, gy)

    def grow(m: NDArray[np.uint8], px: int) -> NDArray[np.bool_]:
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * px + 1, 2 * px + 1))
        return cv2.dilate(m, kernel).astype(bool)

    def shrink(m: NDArray[np.uint8], px: int) -> NDArray[np.bool_]:
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * px + 1, 2 * px + 1))
        return cv2.erode(m, kernel).astype(bool)

    band = grow(hard, SEAM_BAND) & ~shrink(hard, SEAM_BAND)
    outer = grow(hard, SEAM_BAND + SEAM_RING) & ~grow(hard, SEAM_BAND)
    inner = shrink(hard, SEAM_BAND) & ~shrink(hard, SEAM_BAND + SEAM_RING)
    beside = outer | inner
    if not band.any() or not beside.any():
        return 1.0
    reference = float(gradient[beside].mean())
    on_border = float(gradient[band].mean())
    if reference < 1e-3:
        return 1.0 if on_border < 1e-3 else float("inf")
    return round(on_border / reference, 3)


def expected_size(request: Request, result_parameters: dict[str, Any]) -> tuple[int, int]:
    """The (width, height) the step's fields ask for (an outpaint's sides as it resolved
    them, from the result's parameters)."""
    if isinstance(request, OutpaintRequest):
        side = {k: int(result_parameters.get(k) or 0) for k in ("left", "right", "top", "bottom")}
        request = dataclasses.replace(
            request,
            left=side["left"],
            right=side["right"],
            top=side["top"],
            bottom=side["bottom"],
            width=None,
            height=None,
            aspect=None,
        )
    return compose.result_size(request)


def measure(
    checks: Checks,
    request: Request,
    before: Pixels,
    after: Pixels,
    mask: Mask | None,
    result_parameters: dict[str, Any],
) -> list[Measured]:
    """Every check the step asks for (and the outside-the-mask check of a masked step)."""
    found: list[Measured] = []
    if mask is not None:
        limit = checks.max_change_outside_mask or 0.0
        value = change_outside_mask(before, after, mask)
        found.append(Measured("max_change_outside_mask", value, limit, value <= limit))
        if checks.min_change_inside_mask is not None:
            value = change_inside_mask(before, after, mask)
            found.append(
                Measured(
                    "min_change_inside_mask",
                    value,
                    checks.min_change_inside_mask,
                    value >= checks.min_change_inside_mask,
                )
            )
        if checks.seam is not None:
            value = seam_score(after, mask)
            found.append(Measured("seam", value, checks.seam, value <= checks.seam))
    if checks.size is not None:
        want = (
            expected_size(request, result_parameters) if checks.size == "expected" else checks.size
        )
        got = [int(after.shape[1]), int(after.shape[0])]
        found.append(Measured("size", got, list(want), got == list(want)))
    return found
