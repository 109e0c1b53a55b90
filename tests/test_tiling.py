"""Tiles cover the image evenly and blend back to exactly what one big tile gives."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from retouch import tiling
from retouch.errors import InvalidRequest
from retouch.types import Progress


@pytest.mark.parametrize(
    ("length", "tile", "overlap"), [(100, 100, 8), (101, 40, 8), (1000, 256, 16), (37, 20, 4)]
)
def test_spans_cover_with_the_asked_overlap(length: int, tile: int, overlap: int) -> None:
    spans = tiling.tile_spans(length, tile, overlap)
    assert spans[0][0] == 0 and spans[-1][1] == length
    sizes = {end - start for start, end in spans}
    assert max(sizes) <= tile and len(sizes) == 1
    for (_, end), (start, _) in itertools.pairwise(spans):
        assert end - start >= overlap


def nearest_x2(tile: np.ndarray) -> np.ndarray:
    data = tile.astype(np.float32) / (255.0 if tile.dtype == np.uint8 else 1.0)
    return data.repeat(2, axis=0).repeat(2, axis=1)


def test_blending_is_exact_for_a_position_independent_model() -> None:
    image = np.random.default_rng(0).integers(0, 256, (53, 71, 3), dtype=np.uint8)
    reports: list[Progress] = []
    out = tiling.run_tiled(image, nearest_x2, scale=2, tile=24, overlap=6, progress=reports.append)
    assert np.array_equal(out, image.repeat(2, axis=0).repeat(2, axis=1))
    assert reports[-1].step == reports[-1].total == tiling.count_tiles(53, 71, 24, 6)


def test_16bit_output_and_bad_tile_settings() -> None:
    image = np.random.default_rng(1).random((20, 30, 3)).astype(np.float32)
    out = tiling.run_tiled(image, nearest_x2, scale=2, tile=16, overlap=4, out_dtype=np.uint16)
    assert out.dtype == np.uint16
    assert np.abs(out[::2, ::2].astype(float) / 65535 - image).max() < 1e-4
    with pytest.raises(InvalidRequest):
        tiling.run_tiled(image, nearest_x2, scale=2, tile=8, overlap=4)


def test_tile_size_follows_the_memory_budget() -> None:
    common = {
        "height": 2000,
        "width": 2000,
        "scale": 4,
        "bytes_per_pixel": 3000,
        "fixed": 192 * 2**20,
    }
    big = tiling.choose_tile(budget=2 * 2**30, **common)
    small = tiling.choose_tile(budget=600 * 2**20, **common)
    assert 32 <= small < big <= 1024
    with pytest.raises(InvalidRequest, match="--max-memory"):
        tiling.choose_tile(budget=100 * 2**20, **common)


def test_tiny_images_get_one_tile() -> None:
    assert (
        tiling.choose_tile(
            height=23, width=17, scale=2, bytes_per_pixel=3000, budget=2**30, fixed=0
        )
        == 23
    )


def test_stripes_keep_the_area_and_blend_exactly() -> None:
    assert tiling.stripes(739, 1024, 1024) == (533, 1024)  # one seam direction at 1024 px
    assert tiling.stripes(739, 1024, 2000) == (739, 739)  # too wide: square tiles
    assert tiling.stripes(600, 300, 500) == (600, 600)  # fits in one tile anyway
    image = np.random.default_rng(2).integers(0, 256, (61, 45, 3), dtype=np.uint8)
    rows, columns = tiling.stripes(32, 61, 45)
    assert (rows, columns) == (32, 45) and tiling.count_tiles(61, 45, rows, 6, columns) == 3
    out = tiling.run_tiled(image, nearest_x2, scale=2, tile=rows, overlap=6, tile_width=columns)
    assert np.array_equal(out, image.repeat(2, axis=0).repeat(2, axis=1))
