"""Blended-overlap tiling for any image -> image model.

Tiles overlap by ``overlap`` input pixels; each tile's output is weighted by a smooth window
that falls towards the tile's inner edges (where the network saw zero padding) and is flat
at the image's own borders; overlapping outputs are averaged by weight, so no seam can be
seen or measured. The weights are separable, so only the seams are blended in floats: the
rest of each tile is rounded straight into the output, and memory holds one tile's output
and a seam across the width, not a float copy of a stripe or of the whole output.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from retouch.engines import EngineOutOfMemory
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


def count_tiles(
    height: int, width: int, tile: int, overlap: int, tile_width: int | None = None
) -> int:
    return len(tile_spans(height, tile, overlap)) * len(
        tile_spans(width, tile_width or tile, overlap)
    )


def stripes(tile: int, height: int, width: int, *, smallest: int = 32) -> tuple[int, int]:
    """(tile height, tile width) with the area of ``tile`` x ``tile``, as stripes the width
    of the image when it is at most twice ``tile`` wide: seams in one direction instead of
    two, so fewer pixels are computed twice (1.6% instead of 3.2% at 1024 px in 520 px
    tiles), and wider inputs cost ncnn less CPU per pixel at 2 threads (bench/upscale.py)."""
    if width <= tile or width > 2 * tile:
        return tile, tile
    return max(smallest, min(height, tile * tile // width)), width


def quantise(
    values: NDArray[Any],
    dtype: type[np.uint8] | type[np.uint16],
    out: NDArray[Any] | None = None,
) -> NDArray[Any]:
    """Floats in 0..1 -> ``dtype``, rounded half to even (as ``np.rint``) and saturated, in
    one pass; written into ``out`` (a view is fine) when given."""
    import cv2

    full, depth = (65535.0, cv2.CV_16U) if dtype == np.uint16 else (255.0, cv2.CV_8U)
    source = values if values.dtype == np.float32 else values.astype(np.float32)
    if out is None:
        result = cv2.addWeighted(source, full, source, 0.0, 0.0, dtype=depth)
        return result.reshape(values.shape)
    target = out if out.ndim == 2 or out.shape[2] > 1 else out[:, :, 0]
    written = cv2.addWeighted(source, full, source, 0.0, 0.0, dst=target, dtype=depth)
    if not np.shares_memory(written, out):  # OpenCV could not write in place
        out[...] = written.reshape(out.shape)
    return out


@dataclass(frozen=True)
class _Axis:
    """One axis of the tile grid in output pixels: each span's normalised blend weights,
    the part of each span no other span covers, and the seams (runs covered by two or more
    spans) with the spans that touch each."""

    spans: list[tuple[int, int]]
    weights: list[NDArray[np.float32]]
    exclusive: list[tuple[int, int]]
    seams: list[tuple[int, int]]
    seams_of: list[list[int]]
    last_span: list[int]


def _axis(spans: list[tuple[int, int]], length: int, scale: int, overlap: int) -> _Axis:
    out_spans = [(a * scale, b * scale) for a, b in spans]
    raw = [_window(b - a, scale, overlap, ramp_start=a > 0, ramp_end=b < length) for a, b in spans]
    total = np.zeros(length * scale, np.float32)
    cover = np.zeros(length * scale, np.int32)
    for (a, b), w in zip(out_spans, raw, strict=True):
        total[a:b] += w
        cover[a:b] += 1
    weights = [
        (w / np.maximum(total[a:b], np.float32(1e-8))).astype(np.float32)
        for (a, b), w in zip(out_spans, raw, strict=True)
    ]
    shared = np.flatnonzero(np.diff(np.concatenate([[0], (cover > 1).astype(np.int8), [0]])))
    seams = [(int(shared[i]), int(shared[i + 1])) for i in range(0, len(shared), 2)]
    exclusive = []
    for i, (a, b) in enumerate(out_spans):
        low = max([a] + [end for _, end in out_spans[:i]])
        high = min([b] + [start for start, _ in out_spans[i + 1 :]])
        exclusive.append((low, max(low, high)))
    seams_of = [[k for k, (lo, hi) in enumerate(seams) if lo < b and hi > a] for a, b in out_spans]
    last_span = [max(i for i, ks in enumerate(seams_of) if k in ks) for k in range(len(seams))]
    return _Axis(out_spans, weights, exclusive, seams, seams_of, last_span)


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
    tile_width: int | None = None,
) -> NDArray[Any]:
    """Apply ``run_tile`` (input tile -> output tile ``scale`` times larger, floats 0..1) to
    ``image`` in overlapping tiles of ``tile`` rows by ``tile_width`` (default ``tile``)
    columns and return the blended output as ``out_dtype``.

    The blend weights are separable (a row weight times a column weight, each normalised
    to sum to one along its axis), so the part of a tile that no other tile covers is
    rounded straight into the output and only the seams are accumulated in floats: a
    seam across the whole width until the next row of tiles is done, and a seam between
    two tiles of one row until the row is done."""
    tile_width = tile_width or tile
    if min(tile, tile_width) < 8 or overlap < 0 or overlap * 2 >= min(tile, tile_width):
        raise InvalidRequest(
            f"tile must be >= 8 px and more than twice the overlap; got tile {tile}, overlap {overlap}"
        )
    height, width, channels = image.shape
    rows, cols = tile_spans(height, tile, overlap), tile_spans(width, tile_width, overlap)
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
        quantise(result, out_dtype, out=out)
        progress(Progress(stage, 1, 1))
        return out
    ys, xs = _axis(rows, height, scale, overlap), _axis(cols, width, scale, overlap)
    across: dict[int, NDArray[np.float32]] = {}  # seams between rows of tiles, full width
    for r, (y0, y1) in enumerate(rows):
        ya, yb = ys.spans[r]
        low, high = ys.exclusive[r]
        between: dict[int, NDArray[np.float32]] = {}  # seams between tiles of this row
        for c, (x0, x1) in enumerate(cols):
            result = run_tile(image[y0:y1, x0:x1])
            xa, xb = xs.spans[c]
            if result.shape[:2] != (yb - ya, xb - xa):
                raise InvalidRequest(
                    f"the model returned {result.shape[1]} x {result.shape[0]} for a "
                    f"{x1 - x0} x {y1 - y0} tile; expected x{scale}"
                )
            left, right = xs.exclusive[c]
            if high > low and right > left:
                quantise(
                    result[low - ya : high - ya, left - xa : right - xa],
                    out_dtype,
                    out=out[low:high, left:right],
                )
            wx = xs.weights[c]
            for k in xs.seams_of[c] if high > low else []:
                s0, s1 = xs.seams[k]
                a, b = max(xa, s0), min(xb, s1)
                seam = between.get(k)
                if seam is None:
                    seam = between[k] = np.zeros((high - low, s1 - s0, channels), np.float32)
                part = result[low - ya : high - ya, a - xa : b - xa]
                seam[:, a - s0 : b - s0] += part * wx[a - xa : b - xa][None, :, None]
            for k in ys.seams_of[r]:
                s0, s1 = ys.seams[k]
                a, b = max(ya, s0), min(yb, s1)
                seam = across.get(k)
                if seam is None:
                    seam = across[k] = np.zeros((s1 - s0, width * scale, channels), np.float32)
                weight = ys.weights[r][a - ya : b - ya][:, None, None] * wx[None, :, None]
                seam[a - s0 : b - s0, xa:xb] += result[a - ya : b - ya] * weight
            del result
            done += 1
            progress(Progress(stage, done, total))
        for k, seam in between.items():
            s0, s1 = xs.seams[k]
            quantise(seam, out_dtype, out=out[low:high, s0:s1])
        for k in [k for k in across if ys.last_span[k] == r]:
            s0, s1 = ys.seams[k]
            quantise(across.pop(k), out_dtype, out=out[s0:s1])
    return out


def run_tiled_with_retry(
    image: NDArray[Any],
    run_tile: TileFn,
    *,
    scale: int,
    tile: int,
    overlap: int,
    out_dtype: type[np.uint8] | type[np.uint16] = np.uint8,
    progress: ProgressCallback = no_progress,
    stage: str = "tiles",
    smallest: int = 32,
    tile_width: int | None = None,
) -> NDArray[Any]:
    """``run_tiled``, with the tile halved each time the engine runs out of memory; the
    overlap shrinks with it when it must. Raises ``EngineOutOfMemory`` below ``smallest``."""
    tile_width = tile_width or tile
    while True:
        try:
            return run_tiled(
                image,
                run_tile,
                scale=scale,
                tile=tile,
                overlap=min(overlap, min(tile, tile_width) // 2 - 1),
                out_dtype=out_dtype,
                progress=progress,
                stage=stage,
                tile_width=tile_width,
            )
        except (EngineOutOfMemory, MemoryError) as exc:
            if min(tile, tile_width) // 2 < smallest:
                raise EngineOutOfMemory(
                    f"out of memory even with {smallest} px tiles ({exc})"
                ) from exc
            tile, tile_width = tile // 2, tile_width // 2


def blend_bytes(width: int, tile: int, scale: int, channels: int = 3, overlap: int = 16) -> int:
    """Float buffers held while tiles are blended: one tile's output (and the engine's copy
    of it), and a seam across the whole width with its temporary."""
    tile_out = (tile * scale) ** 2 * channels * 4
    seam = 2 * overlap * scale * width * scale * channels * 4
    return 2 * tile_out + 2 * seam


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
    """The largest square tile whose engine memory plus blend buffers fit ``budget`` - ``fixed``."""
    tile = min(largest, max(height, width))
    while True:
        need = fixed + bytes_per_pixel * tile * tile + blend_bytes(width, min(tile, height), scale)
        if need <= budget:
            return tile
        if tile <= smallest:
            break
        tile = max(smallest, int(tile * 0.85))
    need_mb = (
        fixed + bytes_per_pixel * smallest * smallest + blend_bytes(width, smallest, scale)
    ) / 2**20
    raise InvalidRequest(
        f"a {width} x {height} image x{scale} needs about {need_mb:.0f} MB even in the smallest tiles, "
        f"over the memory budget of {budget / 2**20:.0f} MB; raise --max-memory or shrink the image"
    )
