"""The adjust provider: measured colour and tone changes, alpha and 16 bit kept."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from skimage import data

import retouch
from retouch.api import Toolkit
from retouch.cli import main
from retouch.errors import InvalidRequest
from retouch.imageio import load_image
from retouch.providers.adjust import _lab

TOOLKIT = Toolkit()


@pytest.fixture(scope="module")
def coffee() -> np.ndarray:
    return np.ascontiguousarray(data.coffee()[::4, ::4])  # 150 x 100


def _cast(rgb: np.ndarray, gains: tuple[float, float, float]) -> np.ndarray:
    return np.clip(rgb.astype(np.float32) * np.array(gains), 0, 255).astype(np.uint8)


def test_grey_world_removes_a_cast(coffee: np.ndarray) -> None:
    warm = _cast(coffee, (1.25, 1.0, 0.7))
    before = warm.reshape(-1, 3).mean(axis=0)
    assert before.max() - before.min() > 40  # a strong cast to start with
    out = TOOLKIT.adjust(warm, white_balance="grey-world").image.pixels
    after = out.reshape(-1, 3).mean(axis=0)
    assert after.max() - after.min() < 3.0  # channel means within 3 levels
    assert abs(after.mean() - before.mean()) < 3.0  # overall brightness kept


def test_white_patch_makes_the_bright_end_white(coffee: np.ndarray) -> None:
    dim = _cast(coffee, (0.8, 0.7, 0.6))
    out = TOOLKIT.adjust(dim, white_balance="white-patch", clip=0.5).image.pixels
    high = np.percentile(out.reshape(-1, 3), 99.5, axis=0)
    assert (high >= 253).all()


def test_auto_levels_stretch_each_channel_and_auto_contrast_keeps_hue(
    coffee: np.ndarray,
) -> None:
    flat = (64 + coffee.astype(np.float32) * 0.4).astype(np.uint8)  # 64..166
    levels = TOOLKIT.adjust(flat, auto_levels=True, clip=0.5).image.pixels.reshape(-1, 3)
    assert (np.percentile(levels, 0.5, axis=0) <= 1).all()
    assert (np.percentile(levels, 99.5, axis=0) >= 254).all()
    joint = TOOLKIT.adjust(flat, auto_contrast=True, clip=0.5).image.pixels.reshape(-1, 3)
    # one linear map for all channels: the channel differences scale by one factor
    src = flat.reshape(-1, 3).astype(np.float32)
    out = joint.astype(np.float32)
    unclipped = (out > 2).all(axis=1) & (out < 253).all(axis=1)
    ratio = (out[unclipped, 0] - out[unclipped, 2]) / np.where(
        src[unclipped, 0] == src[unclipped, 2], np.nan, src[unclipped, 0] - src[unclipped, 2]
    )
    assert np.nanstd(ratio) < 0.15 * np.nanmean(ratio)
    assert joint.min() <= 2 and joint.max() >= 253


def test_brightness_contrast_saturation_measured(coffee: np.ndarray) -> None:
    grey = np.full((20, 30, 3), 100, np.uint8)
    assert TOOLKIT.adjust(grey, brightness=0.1).image.pixels.mean() == pytest.approx(125.5, abs=0.6)
    ramp = np.repeat(np.linspace(80, 176, 30, dtype=np.float32)[None, :, None], 3, axis=2)
    ramp8 = np.repeat(ramp, 20, axis=0).astype(np.uint8)
    doubled = TOOLKIT.adjust(ramp8, contrast=2.0).image.pixels.astype(np.float32)
    assert doubled.std() == pytest.approx(2 * ramp8.astype(np.float32).std(), rel=0.03)
    out = TOOLKIT.adjust(coffee, saturation=0.0).image.pixels.astype(int)
    assert np.abs(out[:, :, 0] - out[:, :, 1]).max() <= 1
    assert np.abs(out[:, :, 1] - out[:, :, 2]).max() <= 1
    vivid = TOOLKIT.adjust(coffee, saturation=1.5).image.pixels.astype(np.float32)
    spread_in = (coffee.max(axis=2).astype(np.float32) - coffee.min(axis=2)).mean()
    spread_out = (vivid.max(axis=2) - vivid.min(axis=2)).mean()
    assert spread_out > 1.3 * spread_in


def test_gamma_round_trip_8_and_16_bit(coffee: np.ndarray) -> None:
    there = TOOLKIT.adjust(coffee, gamma=2.0).image.pixels
    assert there.mean() > coffee.mean() + 20  # gamma above 1 brightens the mid-tones
    back = TOOLKIT.adjust(there, gamma=0.5).image.pixels
    error = np.abs(back.astype(int) - coffee.astype(int))
    assert error.max() <= 1 and error.mean() < 0.3
    deep = coffee.astype(np.uint16) * 257
    back16 = TOOLKIT.adjust(
        TOOLKIT.adjust(deep, gamma=2.2).image.pixels, gamma=1 / 2.2
    ).image.pixels
    assert back16.dtype == np.uint16  # 16 bit stays 16 bit
    assert np.abs(back16.astype(int) - deep.astype(int)).max() <= 3  # of 65535


def test_16_bit_file_stays_16_bit_and_alpha_is_kept(tmp_path: Path, coffee: np.ndarray) -> None:
    alpha = np.zeros(coffee.shape[:2], np.uint16)
    alpha[20:80, 30:120] = 65535
    rgba16 = np.dstack([coffee.astype(np.uint16) * 257, alpha])
    source = tmp_path / "deep.png"
    import cv2

    cv2.imwrite(str(source), cv2.cvtColor(rgba16, cv2.COLOR_RGBA2BGRA))
    target = tmp_path / "out.png"
    assert main(["adjust", str(source), "--white-balance", "grey-world", "-o", str(target)]) == 0
    written = load_image(target)
    assert written.pixels.dtype == np.uint16 and written.pixels.shape[2] == 4
    assert np.array_equal(written.pixels[:, :, 3], alpha)
    # statistics over the visible pixels only: the visible part is neutral on average
    visible = written.pixels[alpha > 0][:, :3].astype(np.float64)
    means = visible.mean(axis=0) / 257
    assert means.max() - means.min() < 3.0


def test_match_colours_to_a_reference(coffee: np.ndarray) -> None:
    reference = np.ascontiguousarray(data.astronaut()[::4, ::4])
    out = TOOLKIT.adjust(coffee, match_image=reference).image.pixels
    lab_out = _lab(out.reshape(1, -1, 3).astype(np.float32) / 255)[0]
    lab_ref = _lab(reference.reshape(1, -1, 3).astype(np.float32) / 255)[0]
    lab_in = _lab(coffee.reshape(1, -1, 3).astype(np.float32) / 255)[0]
    gap_before = np.abs(lab_in.mean(axis=0) - lab_ref.mean(axis=0)).max()
    gap_after = np.abs(lab_out.mean(axis=0) - lab_ref.mean(axis=0)).max()
    assert gap_before > 8
    assert gap_after < 2.5  # L, a, b means within 2.5 units of the reference's
    assert np.abs(lab_out.std(axis=0) - lab_ref.std(axis=0)).max() < 3


def test_nothing_to_do_and_both_stretches_are_refused(coffee: np.ndarray) -> None:
    with pytest.raises(InvalidRequest, match="nothing to do"):
        TOOLKIT.adjust(coffee)
    with pytest.raises(InvalidRequest, match="not both"):
        TOOLKIT.adjust(coffee, auto_levels=True, auto_contrast=True)
    with pytest.raises(InvalidRequest, match=r"gamma must be 0\.1\.\.10"):
        TOOLKIT.adjust(coffee, gamma=0.0)


def test_module_helper_and_cli_from_the_declaration(tmp_path: Path, coffee: np.ndarray) -> None:
    source = tmp_path / "c.jpg"
    Image.fromarray(_cast(coffee, (1.2, 1.0, 0.8))).save(source, quality=95)
    assert main(["adjust", str(source), "--white-balance", "grey-world", "-q"]) == 0
    out = np.asarray(Image.open(tmp_path / "c.adjust.jpg")).reshape(-1, 3).mean(axis=0)
    assert out.max() - out.min() < 4
    result = retouch.adjust(source, saturation=0)
    assert result.provider == "adjust" and result.parameters["saturation"] == 0
