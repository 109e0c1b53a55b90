"""Pixels outside the mask never change; crops stitch back exactly; colour matching helps."""

from __future__ import annotations

import numpy as np
import pytest

from retouch import compose, masks
from retouch.errors import InvalidRequest

from .conftest import box_mask


def test_paste_back_is_exact_outside_and_blends_partial(small_photo: np.ndarray) -> None:
    result = np.zeros_like(small_photo)
    mask = box_mask(small_photo.shape[:2], (20, 10, 50, 40))
    mask[10:40, 20:30] = 128  # partial
    out = compose.paste_back(small_photo, result, mask)
    assert np.array_equal(out[mask == 0], small_photo[mask == 0])
    assert np.array_equal(out[mask == 255], result[mask == 255])
    half = out[mask == 128].astype(int)
    expected = np.rint(small_photo[mask == 128] * (127 / 255)).astype(int)
    assert np.abs(half - expected).max() <= 1


def test_feather_stays_inside_the_mask(small_photo: np.ndarray) -> None:
    mask = box_mask(small_photo.shape[:2], (20, 10, 70, 50))
    out = compose.paste_back(small_photo, np.zeros_like(small_photo), mask, feather=6)
    assert np.array_equal(out[mask == 0], small_photo[mask == 0])
    centre, edge = out[30, 45].astype(int), out[30, 20].astype(int)
    assert centre.max() == 0  # fully replaced in the middle
    assert edge.sum() > 0  # the edge keeps some of the original


def test_paste_back_keeps_16bit_and_alpha() -> None:
    original = np.full((8, 8, 4), 40000, np.uint16)
    result = np.full((8, 8, 3), 255, np.uint8)
    mask = box_mask((8, 8), (0, 0, 4, 8))
    out = compose.paste_back(original, result, mask)
    assert out.dtype == np.uint16
    assert (out[:, :4, :3] == 65535).all() and (out[:, 4:] == 40000).all()
    assert (out[:, :, 3] == 40000).all()


def test_paste_back_refuses_mismatched_sizes() -> None:
    with pytest.raises(InvalidRequest, match="equal sizes"):
        compose.paste_back(
            np.zeros((4, 4, 3), np.uint8), np.zeros((5, 4, 3), np.uint8), np.zeros((4, 4), np.uint8)
        )


def test_match_colour_cures_a_colour_shift(small_photo: np.ndarray) -> None:
    mask = box_mask(small_photo.shape[:2], (30, 15, 60, 45))
    shifted = np.clip(small_photo.astype(int) + np.array([25, -15, 10]), 0, 255).astype(np.uint8)
    fixed = compose.match_colour(shifted, small_photo, mask)
    before = np.abs(shifted.astype(int) - small_photo.astype(int))[mask > 0].mean()
    after = np.abs(fixed.astype(int) - small_photo.astype(int))[mask > 0].mean()
    assert after < before / 3


def test_crop_plan_stitches_back_exactly(astronaut: np.ndarray) -> None:
    mask = box_mask(astronaut.shape[:2], (300, 40, 340, 90))
    plan = compose.plan_box(masks.crop_to_mask(mask, 32), working_size=None)
    assert plan.box == (268, 8, 372, 122) and not plan.scaled
    work = plan.crop(astronaut)
    assert work.shape == (114, 104, 3)
    filled = np.zeros_like(work)
    out = plan.stitch(astronaut, filled, mask)
    assert np.array_equal(out[mask == 0], astronaut[mask == 0])
    assert (out[mask > 0] == 0).all()


def test_scaled_crop_plan_fits_the_working_size_and_keeps_thin_strokes(
    astronaut: np.ndarray,
) -> None:
    mask = np.zeros(astronaut.shape[:2], np.uint8)
    mask[100:400, 250] = 255  # a one-pixel line
    plan = compose.plan_box(masks.crop_to_mask(mask, 16), working_size=128)
    assert plan.scaled and max(plan.work_size) == 128
    small_mask = plan.crop_mask(mask)
    assert small_mask.shape == (plan.work_size[1], plan.work_size[0])
    assert (small_mask > 0).sum() >= 100  # the line survived the shrink
    out = plan.stitch(astronaut, np.zeros((*small_mask.shape, 3), np.uint8), mask)
    assert np.array_equal(out[mask == 0], astronaut[mask == 0])


def test_pad_to_multiple() -> None:
    padded, (h, w) = compose.pad_to_multiple(np.ones((30, 17, 3), np.uint8), 8)
    assert padded.shape == (32, 24, 3) and (h, w) == (30, 17)
    same, _ = compose.pad_to_multiple(np.ones((32, 16, 3), np.uint8), 8)
    assert same.shape == (32, 16, 3)


def test_outpaint_canvas_masks(small_photo: np.ndarray) -> None:
    canvas, fill, blend = compose.outpaint_canvas(
        small_photo, left=10, right=0, top=5, bottom=0, feather=4
    )
    assert canvas.shape == (69, 106, 3)
    assert np.array_equal(canvas[5:, 10:], small_photo)
    assert (blend[:5] == 255).all() and (blend[:, :10] == 255).all()
    assert (blend[20:, 30:] == 0).all()  # the original's interior is kept exactly
    assert 0 < blend[30, 11] < 255  # the seam band ramps
    assert ((fill > 0) == (blend > 0)).all()
    with pytest.raises(InvalidRequest, match="at least one"):
        compose.outpaint_canvas(small_photo, left=0, right=0, top=0, bottom=0, feather=0)


def test_target_sizes() -> None:
    assert compose.scaled_size((100, 50), scale=2.5) == (250, 125)
    assert compose.scaled_size((100, 50), scale=None, width=300) == (300, 150)
    assert compose.fitted_size((4000, 3000), max_size=1000) == (1000, 750)
    assert compose.fitted_size((400, 300), max_size=1000) == (400, 300)
    # ImageMagick's 1920x> / x1080> / 1920x1080>: shrink only, aspect kept
    assert compose.fitted_size((4000, 3000), max_size=None, max_width=1920) == (1920, 1440)
    assert compose.fitted_size((1000, 3000), max_size=None, max_width=1920) == (1000, 3000)
    assert compose.fitted_size((4000, 3000), max_size=None, max_height=1080) == (1440, 1080)
    assert compose.fitted_size((4000, 3000), max_size=None, max_width=1920, max_height=1080) == (
        1440,
        1080,
    )
    assert compose.fitted_size((4000, 1000), max_size=2000, max_height=1080) == (2000, 500)
    with pytest.raises(InvalidRequest, match="not both"):
        compose.fitted_size((400, 300), max_size=None, width=100, max_width=50)
    with pytest.raises(InvalidRequest, match="max_width"):
        compose.fitted_size((400, 300), max_size=None)
    for bad in (0, -1, 17):
        with pytest.raises(InvalidRequest, match="scale"):
            compose.scaled_size((10, 10), scale=bad)
