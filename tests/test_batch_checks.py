"""Quality checks, measured: change outside/inside the mask, seam score, expected sizes."""

from __future__ import annotations

import numpy as np
import pytest
from skimage import data

from retouch.api import Toolkit
from retouch.batch.checks import (
    change_inside_mask,
    change_outside_mask,
    expected_size,
    seam_score,
)
from retouch.imageio import picture_from_array
from retouch.types import OutpaintRequest, ResizeRequest, UpscaleRequest

TOOLKIT = Toolkit()


def _scene(name: str) -> tuple[np.ndarray, np.ndarray]:
    photo = np.ascontiguousarray(getattr(data, name)()[::4, ::4])
    height, width = photo.shape[:2]
    mask = np.zeros((height, width), np.uint8)
    mask[height // 3 : height // 3 + height // 4, width // 3 : width // 3 + width // 4] = 255
    return photo, mask


@pytest.mark.parametrize("name", ["coffee", "astronaut", "rocket"])
def test_seam_score_tells_a_blended_fill_from_a_flat_patch(name: str) -> None:
    photo, mask = _scene(name)
    untouched = seam_score(photo, mask)
    filled = seam_score(TOOLKIT.erase(photo, mask, seed=1).image.pixels, mask)
    flat = photo.copy()
    flat[mask > 0] = 128
    patched = seam_score(flat, mask)
    # measured: photos 0.76-1.08, PatchMatch fills 0.86-1.05, flat patches 2.7-13.6
    assert 0.6 < untouched < 1.2
    assert filled < 1.2
    assert patched > 2.5
    assert patched > 2 * filled


def test_change_measures_in_8_bit_levels() -> None:
    photo, mask = _scene("coffee")
    erased = TOOLKIT.erase(photo, mask, seed=1).image.pixels
    assert change_outside_mask(photo, erased, mask) == 0.0
    assert change_inside_mask(photo, erased, mask) > 5.0
    assert change_inside_mask(photo, photo, mask) == 0.0
    nudged = photo.copy()
    nudged[0, 0, 1] += 3
    assert change_outside_mask(photo, nudged, mask) == 3.0
    deep = photo.astype(np.uint16) * 257
    deep_nudged = nudged.astype(np.uint16) * 257
    assert change_outside_mask(deep, deep_nudged, mask) == 3.0  # 16 bit read as 8-bit levels


def test_expected_sizes_follow_the_fields() -> None:
    picture = picture_from_array(np.zeros((300, 400, 3), np.uint8))
    assert expected_size(UpscaleRequest(image=picture, scale=2), {}) == (800, 600)
    assert expected_size(ResizeRequest(image=picture, max_width=100), {}) == (100, 75)
    assert expected_size(OutpaintRequest(image=picture), {"left": 10, "top": 5}) == (410, 305)
