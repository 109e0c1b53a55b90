"""Blended-overlap tiling for any image -> image model.

Tiles overlap by ``overlap`` input pixels; each tile's output is weighted by a smooth window
that falls towards the tile's inner edges (where the network saw zero padding) and is flat
at the image's own borders; overlapping outputs are averaged by weight, so no seam can be
seen or measured. Work goes stripe by stripe (one row of tiles), finishing output rows as
soon as no later tile touches them, so memory holds one stripe, not a float copy of the
whole output.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from numpy.typing import NDArray

from retouch.errors import InvalidRequest
from retouch.types import Progress, ProgressCallback, no_progress

TileFn = Callable[[NDArray[Any]], NDArray[np.float32]]


def tile_spans(length: int, tile: int, overlap: int) -> list[tuple[int, int]]:
    """(start, end) of the fewest tiles of at most ``tile`` px that cover ``length`` with
    ``overlap`` px shared between neighbours, all the same size (so no tile overlaps more
    than it must)."""
    if length <= tile:
        return [(0, length)]
    count = -(-(length - overlap) // (tile - overlap))
    size = -(-(length + (count - 1) * overlap) // count)
    stride = size - overlap
    spans = [(i * stride, min(i * stride + size, length)) for i in range(count)]
    last_start = length - size
    spans[-1] = (last_start, length)
    return spans


def _window(
    length: int, scale: int, overlap: int, *, ramp_start: bool, ramp_end: bool
) -> NDArray[np.float32]:
    """1-D weights over a tile's output: smoothstep ramps of ``overlap * scale`` px at inner edges."""
    size = length * scale
    weights = np.ones(size, np.float32)
    ramp = min(overlap * scale, size // 2)
    if ramp > 0:
        t = (np.arange(ramp, dtype=np.float32) + 0.5) / ramp
        rise = t * t * (3 - 2 * t)
        if ramp_start:
            weights[:ramp] = np.minimum(weights[:ramp], rise)
        if ramp_end:
            weights[size - ramp :] = np.minimum(weights[size - ramp :], rise[::-1])
    return weights


def count_tiles(height: int, width: int, tile: int, overlap: int) -> int:
    return len(tile_spans(height, tile, overlap)) * len(tile_spans(width, tile, overlap))


def run_tiled(
    image: NDArray[Any],
    run_tile: TileFn,
    *,
    scale: int,
    tile: int,
    overlap: int,
    out_dtype: type[np.uint8] | type[np.uint16] = np.uint8,
    progress: ProgressCallback = no_progress,
    stage: str = "tiles",
) -> NDArray[Any]:
    """Apply ``run_tile`` (input tile -> output tile ``scale`` times larger, floats 0..1) to
    ``image`` in overlapping tiles and return the blended output as ``out_dtype``."""
    if tile < 8 or overlap < 0 or overlap * 2 >= tile:
        raise InvalidRequest(
            f"tile must be >= 8 px and more than twice the overlap; got tile {tile}, overlap {overlap}"
        )
    height, width, channels = image.shape
    rows, cols = tile_spans(height, tile, overlap), tile_spans(width, tile, overlap)
    full = 65535.0 if out_dtype == np.uint16 else 255.0
    out = np.empty((height * scale, width * scale, channels), out_dtype)
    total, done = len(rows) * len(cols), 0
    progress(Progress(stage, 0, total))
    if total == 1:  # one tile: no blending to do
        result = run_tile(image)
        if result.shape[:2] != out.shape[:2]:
            raise InvalidRequest(
                f"the model returned {result.shape[1]} x {result.shape[0]} for a "
                f"{width} x {height} image; expected x{scale}"
            )
        _finish_rows(result, np.ones((1, 1, 1), np.float32), out.shape[0], out, full)
        progress(Progress(stage, 1, 1))
        return out
    carry: tuple[NDArray[np.float32], NDArray[np.float32]] | None = None
    for row, (y0, y1) in enumerate(rows):
        acc = np.zeros(((y1 - y0) * scale, width * scale, channels), np.float32)
        weight = np.zeros(((y1 - y0) * scale, width * scale, 1), np.float32)
        if carry is not None:
            carried = carry[0].shape[0]
            acc[:carried] += carry[0]
            weight[:carried] += carry[1]
            carry = None
        wy = _window(y1 - y0, scale, overlap, ramp_start=y0 > 0, ramp_end=y1 < height)
        for x0, x1 in cols:
            result = run_tile(image[y0:y1, x0:x1])
            expected = ((y1 - y0) * scale, (x1 - x0) * scale)
            if result.shape[:2] != expected:
                raise InvalidRequest(
                    f"the model returned {result.shape[1]} x {result.shape[0]} for a "
                    f"{x1 - x0} x {y1 - y0} tile; expected x{scale}"
                )
            wx = _window(x1 - x0, scale, overlap, ramp_start=x0 > 0, ramp_end=x1 < width)
            w = (wy[:, None] * wx[None, :])[:, :, None]
            np.multiply(result, w, out=result)  # in place: no second tile-sized buffer
            acc[:, x0 * scale : x1 * scale] += result
            weight[:, x0 * scale : x1 * scale] += w
            del result
            done += 1
            progress(Progress(stage, done, total))
        next_y0 = rows[row + 1][0] if row + 1 < len(rows) else height
        final = (next_y0 - y0) * scale
        _finish_rows(acc, weight, final, out[y0 * scale : next_y0 * scale], full)
        if final < acc.shape[0]:
            carry = (acc[final:].copy(), weight[final:].copy())
        del acc, weight
    return out


def _finish_rows(
    acc: NDArray[np.float32], weight: NDArray[np.float32], rows: int, out: NDArray[Any], full: float
) -> None:
    """Normalise finished rows into ``out`` a band at a time, so temporaries stay small."""
    band = 64
    for start in range(0, rows, band):
        stop = min(start + band, rows)
        values = acc[start:stop] / np.maximum(
            weight[start:stop] if weight.shape[0] > 1 else weight, 1e-8
        )
        values *= full
        np.rint(values, out=values)
        np.clip(values, 0, full, out=values)
        out[start:stop] = values.astype(out.dtype)


def stripe_bytes(width: int, tile: int, scale: int, channels: int = 3) -> int:
    """Float buffers held while a stripe of tiles is worked on: the stripe's accumulator and
    weights, the carried overlap, and one tile's float output."""
    stripe = tile * scale * width * scale * (channels + 1) * 4
    tile_out = (tile * scale) ** 2 * channels * 4
    return stripe + stripe // 4 + tile_out


def choose_tile(
    *,
    height: int,
    width: int,
    scale: int,
    bytes_per_pixel: int,
    budget: int,
    fixed: int,
    largest: int = 1024,
    smallest: int = 32,
) -> int:
    """The largest square tile whose engine memory plus stripe buffers fit ``budget`` - ``fixed``."""
    tile = min(largest, max(height, width))
    while True:
        need = fixed + bytes_per_pixel * tile * tile + stripe_bytes(width, min(tile, height), scale)
        if need <= budget:
            return tile
        if tile <= smallest:
            break
        tile = max(smallest, int(tile * 0.85))
    need_mb = (
        fixed + bytes_per_pixel * smallest * smallest + stripe_bytes(width, smallest, scale)
    ) / 2**20
    raise InvalidRequest(
        f"a {width} x {height} image x{scale} needs about {need_mb:.0f} MB even in the smallest tiles, "
        f"over the memory budget of {budget / 2**20:.0f} MB; raise --max-memory or shrink the image"
    )
