"""The band fill on small pictures: what it keeps, what continues, what the options pick.

The measured quality on real photos (no clone of the subject, seams, the erase demo) is in
tests/test_fill_quality.py.
"""

from __future__ import annotations

import numpy as np
import pytest

import retouch
from retouch import fill
from retouch.errors import InvalidRequest

RED = np.array([220, 30, 30], np.float32)


def sky_and_grass(seed: int = 0, size: tuple[int, int] = (64, 96), disc_x: int = 48) -> np.ndarray:
    """Blue sky over green grass (noise) and a red disc on the horizon at ``disc_x``: a
    subject that touches no border."""
    rng = np.random.default_rng(seed)
    h, w = size
    out = np.empty((h, w, 3), np.float32)
    out[: h // 2] = [90, 140, 220]
    out[: h // 2] += rng.normal(0, 4, (h // 2, w, 3))
    out[h // 2 :] = [60, 150, 50]
    out[h // 2 :] += rng.normal(0, 18, (h - h // 2, w, 3))
    ys, xs = np.mgrid[0:h, 0:w]
    out[(ys - h / 2) ** 2 + (xs - disc_x) ** 2 < (h / 5) ** 2] = RED
    return np.clip(out, 0, 255).astype(np.uint8)


def reddish(rgb: np.ndarray) -> float:
    """Share of pixels closer to the disc's red than 60 levels."""
    return float((np.linalg.norm(rgb.astype(np.float32) - RED, axis=-1) < 60).mean())


def test_blurred_extension_keeps_the_known_pixels_and_continues_the_border() -> None:
    picture = sky_and_grass()[:, :48].astype(np.float32)
    known = np.zeros(picture.shape[:2], bool)
    known[:, :24] = True
    out = fill.blurred_extension(picture, known)
    assert np.array_equal(out[known], picture[known])
    sky, grass = picture[:24, 20:24].mean(axis=(0, 1)), picture[40:, 20:24].mean(axis=(0, 1))
    # rows continue their own border colour: sky beside sky, grass beside grass
    assert np.abs(out[:16, 24:].mean(axis=(0, 1)) - sky).max() < 15
    assert np.abs(out[48:, 24:].mean(axis=(0, 1)) - grass).max() < 15
    # and blur as they leave it: the grass noise is gone far from the border
    assert out[40:, 44:, 1].std() < picture[40:, :24, 1].std() / 3


def test_extend_continues_sky_and_grass_and_leaves_the_subject() -> None:
    picture = sky_and_grass(disc_x=70)
    out = fill.extend(picture, left=0, right=48, top=0, bottom=0, seed=3)
    assert out.shape == (64, 144, 3)
    assert np.array_equal(out[:, :96], picture)
    strip = out[:, 96:].astype(np.float32)
    sky, grass = picture[:32, 80:].mean(axis=(0, 1)), picture[32:, 80:].mean(axis=(0, 1))
    assert np.abs(strip[:28].mean(axis=(0, 1)) - sky).max() < 15
    assert np.abs(strip[36:].mean(axis=(0, 1)) - grass).max() < 15
    # the red disc reaches into the 24 px band (to 13 px from the border): not continued;
    # PatchMatch over the whole canvas puts it into 18-24% of the strip (seeds 0-3)
    assert reddish(picture[:, 72:]) > 0.05
    assert reddish(out[:, 96:]) == 0.0
    cloned = retouch.outpaint(picture, right=48, seed=3, options={"method": "patchmatch"})
    assert reddish(cloned.image.pixels[:, 96:]) > 0.1


@pytest.mark.slow
def test_extend_on_every_side_with_a_seam_and_a_fade() -> None:
    picture = sky_and_grass()
    out = fill.extend(picture, left=16, right=20, top=12, bottom=8, seed=1, seam=4)
    assert out.shape == (64 + 20, 96 + 36, 3)
    # beyond the seam the picture is untouched (the seam is for the caller to cross-fade)
    assert np.array_equal(out[12 + 4 : 12 + 60, 16 + 4 : 16 + 92], picture[4:60, 4:92])
    # the top strip continues the sky, the bottom one the grass, the corners too
    assert out[:12, :, 2].mean() > 180 and out[-8:, :, 1].mean() > out[-8:, :, 2].mean()
    same = fill.extend(picture, left=16, right=20, top=12, bottom=8, seed=1, seam=4)
    other = fill.extend(picture, left=16, right=20, top=12, bottom=8, seed=2, seam=4)
    assert np.array_equal(out, same) and not np.array_equal(out, other)


def test_detail_fades_into_the_blurred_extension_beyond_the_reach() -> None:
    grass = np.clip(np.random.default_rng(5).normal(128, 30, (48, 48, 3)), 0, 255)
    picture = grass.astype(np.uint8)
    out = fill.extend(picture, left=0, right=64, top=0, bottom=0, seed=0)
    # the band is 32 px: detail reaches 32 px in, fades by 48 and is a blur beyond
    near, far = out[:, 48:72].astype(float), out[:, 48 + 52 :].astype(float)
    assert near.std() > 20 and far.std() < near.std() / 3


def test_fill_hole_changes_only_the_hole() -> None:
    picture = sky_and_grass(1)
    hole = np.zeros(picture.shape[:2], bool)
    hole[36:64, 0:40] = True  # in the grass, on the bottom and left borders
    out = fill.fill_hole(picture, hole, seed=0)
    assert np.array_equal(out[~hole], picture[~hole])
    assert np.abs(out[hole].mean(axis=0) - picture[48:, 40:].mean(axis=(0, 1))).max() < 20
    assert fill.hole_depth(hole) == pytest.approx(28, abs=1.5)
    assert np.array_equal(fill.fill_hole(picture, np.zeros_like(hole), seed=0), picture)


def test_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="patch_radius"):
        fill.FillSettings(patch_radius=0)
    with pytest.raises(ValueError, match="components"):
        fill.FillSettings(components=0)


def test_outpaint_method_is_recorded_and_checked() -> None:
    picture = sky_and_grass()
    band = retouch.outpaint(picture, right=32, seed=1)
    patchmatch = retouch.outpaint(picture, right=32, seed=1, options={"method": "patchmatch"})
    assert band.model == "band" and patchmatch.model == "patchmatch"
    assert band.image.pixels.shape == patchmatch.image.pixels.shape == (64, 128, 3)
    with pytest.raises(InvalidRequest, match="method must be one of"):
        retouch.outpaint(picture, right=32, options={"method": "magic"})


@pytest.mark.parametrize(
    ("box", "model"),
    [
        ((slice(30, 64), slice(0, 40)), "band"),  # 34 px deep, on two borders
        ((slice(20, 44), slice(30, 60)), "patchmatch"),  # inside the picture
        ((slice(0, 10), slice(30, 60)), "patchmatch"),  # on the border but 5 px deep
    ],
)
def test_erase_auto_fills_big_border_holes_from_the_band(
    box: tuple[slice, slice], model: str, small_photo: np.ndarray
) -> None:
    mask = np.zeros(small_photo.shape[:2], np.uint8)
    mask[box] = 255
    result = retouch.erase(small_photo, mask, seed=2)
    assert result.model == model
    assert np.array_equal(result.image.pixels[mask == 0], small_photo[mask == 0])
    forced = retouch.erase(small_photo, mask, seed=2, options={"method": "band"})
    assert forced.model == "band"


def test_band_fills_report_each_round_and_stop_when_cancelled(small_photo: np.ndarray) -> None:
    """The band fill reports every round of search and vote (an outpaint per new strip), so
    a long fill shows progress and a cancel stops it within a round, not at the end."""
    from retouch.errors import Cancelled
    from retouch.types import Progress

    seen: list[Progress] = []
    retouch.outpaint(sky_and_grass(), left=40, top=24, seed=1, progress=seen.append)
    for side in ("left", "top"):
        rounds = [p for p in seen if p.stage == f"outpaint {side}"]
        assert len(rounds) >= 4, [p.stage for p in seen]
        assert [p.step for p in rounds] == list(range(1, len(rounds) + 1))
        assert rounds[-1].step == rounds[-1].total  # planned as run

    def cancel_after_two(p: Progress) -> None:
        if p.stage.startswith("outpaint ") and p.step >= 2:
            raise Cancelled("the work was cancelled")

    with pytest.raises(Cancelled):
        retouch.outpaint(sky_and_grass(), left=40, seed=1, progress=cancel_after_two)
    mask = np.zeros(small_photo.shape[:2], np.uint8)
    mask[30:64, 0:40] = 255  # a deep border hole: the band fill
    erased: list[Progress] = []
    retouch.erase(small_photo, mask, seed=2, options={"method": "band"}, progress=erased.append)
    assert max(p.total for p in erased if p.stage == "erase") >= 4
