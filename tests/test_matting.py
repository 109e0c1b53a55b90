"""Edge decontamination computed on the partly transparent band equals the whole-frame
blur fusion it replaces, within a measured tolerance, and leaves other pixels alone."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from skimage import data

import retouch
from retouch import matting

from .test_u2net import composite


def whole_frame(rgb: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """The reference: two passes of blur fusion (radii 90 and 6) over the whole frame in
    float32, as retouch did before the band-only version."""

    def box(image: np.ndarray, radius: int) -> np.ndarray:
        return cv2.blur(image, (2 * radius + 1,) * 2, borderType=cv2.BORDER_REFLECT)

    image = rgb.astype(np.float32) / 255
    a = alpha.astype(np.float32) / 255
    fg, bg = image, image
    for radius in (90, 6):
        a3 = a[:, :, None]
        blurred_a = box(a, radius)[:, :, None]
        blurred_f = box(fg * a3, radius) / (blurred_a + 1e-5)
        blurred_b = box(bg * (1 - a3), radius) / ((1 - blurred_a) + 1e-5)
        fg = np.clip(blurred_f + a3 * (image - a3 * blurred_f - (1 - a3) * blurred_b), 0, 1)
        bg = blurred_b
    return np.clip(np.rint(fg * 255), 0, 255).astype(np.uint8)


def compare(rgb: np.ndarray, alpha: np.ndarray) -> dict[str, float]:
    band = matting.estimate_foreground(rgb, alpha)
    partial = (alpha > 0) & (alpha < 255)
    assert np.array_equal(band[~partial], rgb[~partial])  # opaque and transparent: untouched
    error = np.abs(band.astype(int) - whole_frame(rgb, alpha).astype(int))[partial]
    seen = error * alpha[partial][:, None] / 255  # what shows once composited
    return {
        "mean": float(error.mean()),
        "p999": float(np.percentile(error, 99.9)),
        "seen": float(seen.max()),
    }


def cutout_alpha(rgb: np.ndarray) -> np.ndarray:
    result = retouch.remove_background(rgb, options={"decontaminate": False})
    return np.ascontiguousarray(result.image.pixels[:, :, 3])


@pytest.mark.parametrize(("height", "width"), [(512, 512), (350, 333), (301, 517)])
def test_band_only_equals_the_whole_frame_within_a_grey_level_as_seen(
    height: int, width: int
) -> None:
    rgb = cv2.resize(data.astronaut(), (width, height), interpolation=cv2.INTER_AREA)
    figures = compare(rgb, cutout_alpha(rgb))
    # measured: mean 0.05-0.14, 99.9th percentile 1-2 levels, alpha-weighted max 1.0-1.6
    assert figures["mean"] < 0.3 and figures["p999"] <= 4 and figures["seen"] <= 2, figures


@pytest.mark.parametrize("background", ["green", "blue"])
def test_band_only_equals_the_whole_frame_on_soft_hair_like_edges(background: str) -> None:
    image, true_alpha, _ = composite(background)
    figures = compare(image, np.clip(np.rint(true_alpha * 255), 0, 255).astype(np.uint8))
    # measured: mean 0.03, 99.9th percentile 1 level, alpha-weighted max 1.0
    assert figures["mean"] < 0.3 and figures["p999"] <= 4 and figures["seen"] <= 2, figures


@pytest.mark.slow
def test_band_only_equals_the_whole_frame_at_2048_px() -> None:
    rgb = cv2.resize(data.astronaut(), (2048, 2048), interpolation=cv2.INTER_CUBIC)
    figures = compare(rgb, cutout_alpha(rgb))
    # measured: mean 0.09, 99.9th percentile 3 levels, alpha-weighted max 1.0
    assert figures["mean"] < 0.3 and figures["p999"] <= 5 and figures["seen"] <= 2, figures


def test_edges_touching_the_frame_and_nothing_to_refine() -> None:
    rgb = np.ascontiguousarray(data.coffee()[:97, :131])
    alpha = np.zeros((97, 131), np.uint8)
    cv2.circle(alpha, (0, 0), 70, 255, -1)
    alpha = cv2.GaussianBlur(alpha, (0, 0), 3)  # a soft edge that runs into two borders
    figures = compare(rgb, alpha)
    assert figures["seen"] <= 2, figures
    solid = np.full((40, 50), 255, np.uint8)
    assert np.array_equal(matting.estimate_foreground(rgb[:40, :50], solid), rgb[:40, :50])
