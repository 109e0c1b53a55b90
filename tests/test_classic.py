"""Fill quality measured on real textures: PatchMatch keeps texture, Telea blurs it.

Plain PSNR is not the measure for textures (a blur scores well on it and looks wrong), so
the texture measure is gradient energy: the fill's mean gradient magnitude against the
original's in the same hole. On regular structure (brick) PatchMatch also wins PSNR/SSIM.
"""

from __future__ import annotations

from functools import cache

import numpy as np
import pytest
from skimage import data
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

import retouch
from retouch.errors import InvalidRequest

HOLES = ((160, 160), (288, 224), (224, 320))  # (top, left) of 64 x 64 holes
SIDE = 64


def gradient_energy(grey: np.ndarray) -> float:
    gy, gx = np.gradient(grey.astype(np.float64))
    return float(np.mean(np.hypot(gx, gy)))


@cache
def fills(texture: str, method: str) -> list[tuple[np.ndarray, np.ndarray]]:
    """(original hole, filled hole) for each hole in the texture."""
    grey = getattr(data, texture)()
    rgb = np.dstack([grey] * 3)
    out = []
    for top, left in HOLES:
        mask = np.zeros(grey.shape, np.uint8)
        mask[top : top + SIDE, left : left + SIDE] = 255
        result = retouch.erase(rgb, mask, seed=1, options={"method": method})
        filled = result.image.pixels[:, :, 0]
        assert np.array_equal(filled[mask == 0], grey[mask == 0])
        out.append(
            (
                grey[top : top + SIDE, left : left + SIDE],
                filled[top : top + SIDE, left : left + SIDE],
            )
        )
    return out


@pytest.mark.parametrize("texture", ["brick", "grass", "gravel"])
@pytest.mark.slow
def test_patchmatch_keeps_texture_energy_and_telea_does_not(texture: str) -> None:
    for original, filled in fills(texture, "patchmatch"):
        ratio = gradient_energy(filled) / gradient_energy(original)
        assert 0.8 <= ratio <= 1.2, f"{texture}: PatchMatch gradient energy ratio {ratio:.2f}"
    for original, filled in fills(texture, "telea"):
        ratio = gradient_energy(filled) / gradient_energy(original)
        assert ratio < 0.5, f"{texture}: Telea gradient energy ratio {ratio:.2f}"


def test_patchmatch_beats_telea_on_brick_psnr_and_ssim() -> None:
    for (original, pm), (_, telea) in zip(
        fills("brick", "patchmatch"), fills("brick", "telea"), strict=True
    ):
        pm_psnr = peak_signal_noise_ratio(original, pm, data_range=255)
        telea_psnr = peak_signal_noise_ratio(original, telea, data_range=255)
        pm_ssim = structural_similarity(original, pm, data_range=255)
        telea_ssim = structural_similarity(original, telea, data_range=255)
        assert pm_psnr > telea_psnr, (pm_psnr, telea_psnr)
        assert pm_ssim > telea_ssim, (pm_ssim, telea_ssim)


@pytest.mark.parametrize("texture", ["brick", "grass", "gravel"])
@pytest.mark.slow
def test_default_erase_inside_the_picture_is_patchmatch(texture: str) -> None:
    """auto fills from a band only holes that reach the border: these holes get PatchMatch,
    pixel for pixel, so the wins above hold for the default."""
    for (_, auto), (_, patchmatch) in zip(
        fills(texture, "auto"), fills(texture, "patchmatch"), strict=True
    ):
        assert np.array_equal(auto, patchmatch)


@pytest.mark.parametrize("method", ["patchmatch", "telea", "ns"])
def test_every_method_fills_and_keeps_the_rest(method: str, small_photo: np.ndarray) -> None:
    mask = np.zeros(small_photo.shape[:2], np.uint8)
    mask[20:40, 30:60] = 255
    result = retouch.erase(small_photo, mask, seed=4, options={"method": method})
    out = result.image.pixels
    assert result.model == method
    assert np.array_equal(out[mask == 0], small_photo[mask == 0])
    # The fill continues its surroundings: close to the ring's colour, unlike black or noise.
    ring = (
        (np.abs(np.arange(64)[:, None] - 30) < 16)
        & (np.abs(np.arange(96)[None, :] - 45) < 21)
        & (mask == 0)
    )
    assert np.abs(out[mask > 0].mean(axis=0) - small_photo[ring].mean(axis=0)).max() < 40


def test_same_seed_same_result_and_bad_options(small_photo: np.ndarray) -> None:
    mask = np.zeros(small_photo.shape[:2], np.uint8)
    mask[20:40, 30:60] = 255
    a = retouch.erase(small_photo, mask, seed=11).image.pixels
    b = retouch.erase(small_photo, mask, seed=11).image.pixels
    assert np.array_equal(a, b)
    with pytest.raises(InvalidRequest, match="unknown option"):
        retouch.erase(small_photo, mask, options={"methd": "telea"})
    with pytest.raises(InvalidRequest, match="method must be one of"):
        retouch.erase(small_photo, mask, options={"method": "magic"})


def test_outpaint_extends_and_keeps_the_interior(small_photo: np.ndarray) -> None:
    result = retouch.outpaint(small_photo, left=24, bottom=16, seed=2, feather=8)
    out = result.image.pixels
    assert out.shape == (80, 120, 3)
    original_area = out[:64, 24:]
    assert np.array_equal(
        original_area[:, 8:][:56], small_photo[:, 8:][:56]
    )  # beyond the seam band
    new_area = out[64:, :]
    # Filled from the photo: its colours, not the black canvas.
    assert abs(float(new_area.mean()) - float(small_photo.mean())) < 40
    assert new_area.std() > 5


def test_outpaint_to_an_aspect_grows_evenly(small_photo: np.ndarray) -> None:
    result = retouch.outpaint(small_photo, aspect=2.0, seed=1)
    assert (result.image.width, result.image.height) == (128, 64)
    assert result.parameters["left"] == 16 and result.parameters["right"] == 16
    with pytest.raises(InvalidRequest, match="smaller than the image"):
        retouch.outpaint(small_photo, width=50)


def test_resize_and_lanczos_upscale_keep_alpha_and_depth() -> None:
    deep = np.random.default_rng(3).integers(0, 65535, (40, 60, 4)).astype(np.uint16)
    small = retouch.resize(deep, max_size=30).image.pixels
    assert small.shape == (20, 30, 4) and small.dtype == np.uint16
    big = retouch.upscale(deep, scale=2.5, provider="classic").image.pixels
    assert big.shape == (100, 150, 4) and big.dtype == np.uint16
