"""Outpaint and erase with no model, measured on scikit-image's astronaut.

Issue 19: PatchMatch over the whole picture filled a new left strip with a second orange
suit and badge and the right one with a second shuttle. The classic provider now fills
each strip from a band next to its side (``retouch.fill``). The measures:

- duplication: 32 x 32 blocks of the new area against blocks of the subject (the region
  ``retouch.subject_mask`` finds with the shipped u2netp), normalised cross-correlation of
  the detail layer (the picture minus its Gaussian blur at sigma 4, three channels): a copy
  correlates at 1.0, shading and colour alone do not count. Blocks with less than 5 grey
  levels of detail (flat wall, table, the blurred far end of a strip) are skipped: noise
  against noise correlates at random;
- faces: OpenCV's Haar cascade for frontal faces (it finds the astronaut's);
- seams: across the border between picture and strip, the colour step between adjacent
  columns, the jump between the 4 px either side, and the gradient energy of the 8 px band
  over that of the 8 px bands beside it (a spike is a hard edge, a dip a blurred line), all
  within the range the same figures take across the picture's own columns;
- the suit's saturated orange in the left strip (the CLI run a new user makes);
- erase: the shuttle (the demo's mask) leaves wall, not hair; texture holes at the border.

Figures are for fixed seeds; nine seeds measured while building it gave the same verdicts
(most similar block 0.79-0.88 against 0.9, orange 0.5-1.1%).
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

import cv2
import numpy as np
import pytest
from skimage import data

import retouch
from retouch import imageio
from retouch.cli import main

pytestmark = pytest.mark.slow

SIDE = 200
BLOCK = 32
ORANGE_LOW = np.array([5, 150, 190], np.uint8)
ORANGE_HIGH = np.array([10, 255, 255], np.uint8)
"""The suit's saturated orange in OpenCV's HSV (hue 0..180): hue 5-10 (10-20 degrees),
saturation >= 150, value >= 190. Measured on the suit (hue 6-9, saturation 152-238 in its
lit folds); the flag's red (hue 176-179 and 0-2) and the hair (hue 12-22) fall outside.
It covers 2.8% of the photo's outer 30 px column, 27% of its left 100 px."""


@cache
def astronaut() -> np.ndarray:
    picture: np.ndarray = data.astronaut()
    return picture


@cache
def subject() -> np.ndarray:
    return retouch.subject_mask(astronaut())


@cache
def outpainted(method: str | None = None) -> np.ndarray:
    """The astronaut with 200 px added left and right: the default fill, or ``method``."""
    options = None if method is None else {"method": method}
    result = retouch.outpaint(astronaut(), left=SIDE, right=SIDE, seed=1, options=options)
    pixels: np.ndarray = result.image.pixels
    return pixels


def strips(canvas: np.ndarray) -> dict[str, np.ndarray]:
    return {"left": canvas[:, :SIDE], "right": canvas[:, -SIDE:]}


def detail(rgb: np.ndarray) -> np.ndarray:
    pixels = np.ascontiguousarray(rgb).astype(np.float32)
    out: np.ndarray = pixels - cv2.GaussianBlur(pixels, (0, 0), 4.0)
    return out


def most_similar_subject_blocks(strip: np.ndarray) -> list[tuple[float, tuple[int, int]]]:
    """For every structured block of ``strip`` (stride 16): its highest correlation with a
    block of the picture that lies at least 3/4 inside the subject. Highest first."""
    picture = detail(astronaut())
    inside = (subject() > 127).astype(np.float32)
    share = cv2.boxFilter(inside, -1, (BLOCK, BLOCK), anchor=(0, 0))
    h, w = inside.shape
    of_subject = share[: h - BLOCK + 1, : w - BLOCK + 1] >= 0.75
    new = detail(strip)
    found = []
    for y in range(0, new.shape[0] - BLOCK + 1, 16):
        for x in range(0, new.shape[1] - BLOCK + 1, 16):
            block = np.ascontiguousarray(new[y : y + BLOCK, x : x + BLOCK])
            if block.std() < 5.0:
                continue
            score = cv2.matchTemplate(picture, block, cv2.TM_CCOEFF_NORMED)
            found.append((float(score[of_subject].max()), (y, x)))
    return sorted(found, reverse=True)


def faces(rgb: np.ndarray) -> int:
    cascade = cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_frontalface_default.xml")
    grey = cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2GRAY)
    return len(cascade.detectMultiScale(grey, scaleFactor=1.1, minNeighbors=5, minSize=(24, 24)))


def orange(rgb: np.ndarray) -> float:
    hsv = cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2HSV)
    return float((cv2.inRange(hsv, ORANGE_LOW, ORANGE_HIGH) > 0).mean())


def seam(picture: np.ndarray, x: int) -> tuple[float, float, float]:
    """(step, jump, energy ratio) across the line between columns x - 1 and x."""
    f = picture.astype(np.float32)
    step = float(np.abs(f[:, x] - f[:, x - 1]).mean())
    jump = float(np.abs(f[:, x : x + 4].mean(axis=1) - f[:, x - 4 : x].mean(axis=1)).mean())
    grey = cv2.cvtColor(np.ascontiguousarray(picture), cv2.COLOR_RGB2GRAY).astype(np.float32)
    gy, gx = np.gradient(grey)
    energy = np.hypot(gx, gy).mean(axis=0)
    beside = (energy[x - 12 : x - 4].mean() + energy[x + 4 : x + 12].mean()) / 2
    return step, jump, float(energy[x - 4 : x + 4].mean() / beside)


# --- outpaint -------------------------------------------------------------------------


def test_new_strips_copy_no_block_of_the_subject_where_patchmatch_copies_hundreds() -> None:
    for side, strip in strips(outpainted()).items():
        best = most_similar_subject_blocks(strip)
        # measured (seed 1): left 0.88, right 0.79 at most
        assert best[0][0] < 0.9, f"{side} strip: block at {best[0][1]} correlates {best[0][0]:.3f}"
    # Today's fill, for the record that the measure sees it: 200 of 335 structured blocks
    # of the left strip and 28 of 215 of the right are copies of the subject (NCC > 0.9).
    copies = {
        side: sum(score > 0.9 for score, _ in most_similar_subject_blocks(strip))
        for side, strip in strips(outpainted("patchmatch")).items()
    }
    assert copies["left"] > 100 and copies["right"] > 10, copies


def test_no_face_in_the_new_strips() -> None:
    assert faces(astronaut()) == 1  # the detector does find hers
    for side, strip in strips(outpainted()).items():
        assert faces(strip) == 0, side


def test_seams_are_no_stronger_or_blurrier_than_the_pictures_own_columns() -> None:
    picture = astronaut()
    own = np.array([seam(picture, x) for x in range(12, picture.shape[1] - 12)])
    low, high = np.percentile(own, 5, axis=0), np.percentile(own, 95, axis=0)
    # measured on the photo: step 3.0-14.4, jump 6.4-29.0, energy ratio 0.73-1.36
    canvas = outpainted()
    for side, x in (("left", SIDE), ("right", canvas.shape[1] - SIDE)):
        step, jump, ratio = seam(canvas, x)
        # measured: left 4.5 / 13.6 / 1.02, right 2.5 / 5.2 / 0.80 (PatchMatch: left
        # 12.4 / 21.1 / 1.33, near the top of the photo's range; 150 px wide its left seam
        # reached 1.40, an edge the photo has in fewer than 5% of its columns)
        assert step <= high[0] and jump <= high[1], (side, step, jump)
        assert low[2] <= ratio <= high[2], (side, ratio)


def test_cli_outpaint_continues_the_flag_not_the_suit(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`retouch outpaint astronaut.png --left 200 --right 200`, as a new user runs it (no
    seed: the default path, whatever seed it draws; the seed is in the file)."""
    from PIL import Image

    source, wide = tmp_path / "astronaut.png", tmp_path / "wide.png"
    Image.fromarray(astronaut()).save(source)
    assert main(["outpaint", str(source), "--left", "200", "--right", "200", "-o", str(wide)]) == 0
    out = np.asarray(Image.open(wide))[:, :, :3]
    seed = (imageio.read_parameters(wide) or {}).get("seed")
    assert out.shape == (512, 912, 3)
    # the photo's own outer 30 px column holds 2.8% of this orange, its left 100 px 27%;
    # the band fill measured 0.5-1.1% over nine seeds, PatchMatch 58-61%
    assert orange(astronaut()[:, :30]) < 0.04 < 0.2 < orange(astronaut()[:, :100])
    assert orange(out[:, :SIDE]) <= 0.10, f"seed {seed}: {orange(out[:, :SIDE]):.3f}"
    assert orange(outpainted("patchmatch")[:, :SIDE]) > 0.4
    assert faces(out[:, :SIDE]) == 0 and faces(out[:, -SIDE:]) == 0, f"seed {seed}"


# --- erase ----------------------------------------------------------------------------

TABLE = 262
"""The table's top edge under the shuttle is at rows 265-280: above this is wall."""


def test_shuttle_erase_fills_wall_no_worse_than_patchmatch_did(shuttle_mask: np.ndarray) -> None:
    """The demo: erase the shuttle model. Its mask reaches the top border, so the default
    (auto) fills it from the band around it; PatchMatch left a hair-textured smear at the
    table edge."""
    picture = astronaut()
    hole = shuttle_mask > 0
    result = retouch.erase(picture, shuttle_mask, seed=7)  # the demo's seed
    assert result.model == "band"
    out = result.image.pixels
    assert np.array_equal(out[~hole], picture[~hole])
    rows = np.arange(512)[:, None]
    around = cv2.distanceTransform((~hole).astype(np.uint8), cv2.DIST_L2, 5)
    wall = np.median(picture[(~hole) & (around <= 24) & (rows < TABLE)].astype(float), axis=0)
    filled = out[hole & (rows < TABLE)].astype(float)
    distance = float(np.linalg.norm(filled - wall, axis=1).mean())
    # Mean RGB distance of the fill above the table from the wall's colour (the median of
    # the 24 px around the hole). PatchMatch, measured on the code before the band fill
    # (seed 7): 23.6 (seeds 1-3: 21.8-23.3); Telea 25.4; the shuttle itself 106.8. Band:
    # 19.2 (seeds 1-3: 18.9-19.1).
    assert distance <= 23.6, distance


def gradient_energy(grey: np.ndarray) -> float:
    gy, gx = np.gradient(grey.astype(np.float64))
    return float(np.mean(np.hypot(gx, gy)))


@pytest.mark.parametrize("texture", ["brick", "grass", "gravel"])
def test_texture_holes_at_the_border_keep_texture_where_telea_blurs(texture: str) -> None:
    """64 x 64 holes on the left, top and bottom-right borders: auto fills them from the
    band, which keeps at least 0.4 of the texture's gradient energy (measured 0.45-1.03;
    PatchMatch 0.76-1.31) and twice what Telea keeps (0.09-0.29)."""
    grey = getattr(data, texture)()
    rgb = np.dstack([grey] * 3)
    for top, left in ((224, 0), (0, 224), (448, 448)):
        mask = np.zeros(grey.shape, np.uint8)
        mask[top : top + 64, left : left + 64] = 255
        original = grey[top : top + 64, left : left + 64]
        ratios = {}
        for method in ("auto", "telea"):
            result = retouch.erase(rgb, mask, seed=1, options={"method": method})
            filled = result.image.pixels[top : top + 64, left : left + 64, 0]
            ratios[result.model] = gradient_energy(filled) / gradient_energy(original)
        assert ratios["band"] >= 0.4 and ratios["band"] >= 2 * ratios["telea"], (top, left, ratios)
