"""Gaussian blur whose cost does not grow with its radius.

A blur wider than a few pixels is run on a shrunken copy and enlarged again: the result is
smooth at that scale, so little is lost, and a request for a huge radius (a feather as wide
as the image) costs about as much as a small one instead of minutes.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

DIRECT_SIGMA = 8.0
"""Up to this sigma the blur runs at full size (exact); above it, on a shrunken copy."""


def gaussian(array: NDArray[Any], sigma: float, *, reflect: bool = False) -> NDArray[Any]:
    """``array`` (HxW or HxWxC) blurred with ``sigma``, its dtype kept."""
    import cv2

    border = cv2.BORDER_REFLECT if reflect else cv2.BORDER_REPLICATE
    if sigma <= 0:
        return array.copy()
    if sigma <= DIRECT_SIGMA:
        out: NDArray[Any] = cv2.GaussianBlur(
            array, (0, 0), sigmaX=sigma, sigmaY=sigma, borderType=border
        )
        return out
    height, width = array.shape[:2]
    factor = sigma / (DIRECT_SIGMA / 2)
    small_size = (max(1, round(width / factor)), max(1, round(height / factor)))
    small = cv2.resize(array.astype(np.float32), small_size, interpolation=cv2.INTER_AREA)
    small = cv2.GaussianBlur(
        small, (0, 0), sigmaX=DIRECT_SIGMA / 2, sigmaY=DIRECT_SIGMA / 2, borderType=border
    )
    big = cv2.resize(small, (width, height), interpolation=cv2.INTER_LINEAR)
    if np.issubdtype(array.dtype, np.integer):
        info = np.iinfo(array.dtype)
        big = np.clip(np.rint(big), info.min, info.max)
    return big.astype(array.dtype).reshape(array.shape)
