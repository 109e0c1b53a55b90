"""Soft edges for cut-outs: trimaps, alpha matting, and foreground colour estimation.

- ``trimap``: certain foreground / background from a rough alpha, an unknown band between.
- ``refine_alpha``: closed-form alpha matting over the unknown band (pymatting, extra
  ``retouch[matting]``), run at a bounded working size so big photos stay fast.
- ``estimate_foreground``: the colour of the subject alone at each edge pixel, without the
  old background mixed in (Forte & Pitie, "Approximate fast foreground colour estimation",
  ICIP 2021: two passes of blur fusion), computed only on the partly transparent band;
  opaque and fully transparent pixels keep their colours. Compositing these colours over a
  new background leaves no halo of the old one. Needs only OpenCV.
"""

from __future__ import annotations

import contextlib
import io
import threading
from typing import Any

import numpy as np
from numpy.typing import NDArray

from retouch import masks as mask_ops
from retouch.errors import DependencyMissing

DEFAULT_MATTING_SIZE = 1024
# Trimap defaults measured on the synthetic composites in tests/test_matting.py: a narrower
# band than rembg's (240 / 10 / 10) lowered the alpha error on both backgrounds.
DEFAULT_FOREGROUND = 200
DEFAULT_BACKGROUND = 20
DEFAULT_ERODE = 6


def trimap(
    alpha: NDArray[np.uint8],
    *,
    foreground: int = DEFAULT_FOREGROUND,
    background: int = DEFAULT_BACKGROUND,
    erode: int = DEFAULT_ERODE,
) -> NDArray[np.uint8]:
    """255 = surely subject, 0 = surely background, 128 = unknown (a band ``erode`` px wide)."""
    sure_fg = mask_ops.shrink(np.where(alpha > foreground, 255, 0).astype(np.uint8), erode)
    sure_bg = mask_ops.shrink(np.where(alpha < background, 255, 0).astype(np.uint8), erode)
    out = np.full(alpha.shape, 128, np.uint8)
    out[sure_fg > 0] = 255
    out[sure_bg > 0] = 0
    return out


def refine_alpha(
    rgb: NDArray[np.uint8],
    alpha: NDArray[np.uint8],
    *,
    foreground: int = DEFAULT_FOREGROUND,
    background: int = DEFAULT_BACKGROUND,
    erode: int = DEFAULT_ERODE,
    max_side: int = DEFAULT_MATTING_SIZE,
) -> NDArray[np.uint8]:
    """Closed-form matting of the unknown band of ``trimap(alpha)``; sure pixels are kept."""
    try:
        from pymatting.alpha.estimate_alpha_cf import estimate_alpha_cf
    except ImportError as exc:
        raise DependencyMissing("pymatting", "matting", "alpha matting") from exc
    from retouch.compose import resize_pixels

    tri = trimap(alpha, foreground=foreground, background=background, erode=erode)
    unknown = tri == 128
    if not unknown.any() or (tri == 255).sum() == 0 or (tri == 0).sum() == 0:
        return alpha.copy()  # nothing to refine, or no sure pixels to refine from
    height, width = alpha.shape
    scale = min(1.0, max_side / max(height, width))
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    small_rgb = resize_pixels(rgb, size) if scale < 1 else rgb
    small_tri = resize_pixels(tri[:, :, None], size, smooth=True)[:, :, 0] if scale < 1 else tri
    small_tri = np.where(small_tri > 250, 1.0, np.where(small_tri < 5, 0.0, 0.5))
    # pymatting prints a "PERFORMANCE WARNING" when its preconditioner needs a retry; that is
    # not the user's business, so its stdout is kept out of theirs.
    with contextlib.redirect_stdout(io.StringIO()):
        matte = estimate_alpha_cf(small_rgb.astype(np.float64) / 255.0, small_tri)
    matte_u8 = np.clip(np.rint(matte * 255), 0, 255).astype(np.uint8)
    if scale < 1:
        matte_u8 = resize_pixels(matte_u8[:, :, None], (width, height), smooth=True)[:, :, 0]
    return np.where(unknown, matte_u8, tri).astype(np.uint8)


FUSION_RADII = (90, 6)
"""Box radii of the two blur-fusion passes (Forte & Pitie's defaults)."""
COARSE_BLOCK = 22
"""The first pass runs on blocks of ``radius // COARSE_BLOCK`` px (4 px for radius 90): its
181 px box is smooth enough that block sums change the result by at most one grey level of
alpha-weighted colour (tests/test_matting.py)."""
STRIP = 32
"""Rows per strip when the band is cut into rectangles (of 16, 24, 32 and 48, 32 gave the
least area on the astronaut's cut-out at 512 and 2048 px: 51% and 28% of the frame, for a
band of 14%)."""


def estimate_foreground(rgb: NDArray[np.uint8], alpha: NDArray[np.uint8]) -> NDArray[np.uint8]:
    """The subject's own colours where ``alpha`` is partial (1..254); other pixels unchanged.

    Two passes of blur fusion, as over the whole frame, but computed where they matter: the
    first pass (a 181 px box) on 4 px blocks, the second (13 px) on rectangles around the
    partly transparent band only, strip by strip, packed side by side into a few small
    arrays so each operation runs a few times, on memory that stays in cache."""
    import cv2

    out = rgb.copy()
    partial = np.asarray(cv2.inRange(alpha, 1, 254), np.uint8)
    if not cv2.countNonZero(partial):
        return out
    wide, narrow = FUSION_RADII
    block = max(1, wide // COARSE_BLOCK)
    top = -(-narrow // block) + 2  # blocks mirrored around the image for sampling
    fields = _coarse_pass(rgb, alpha, wide, block)
    padded = (fields.shape[0] + 2 * top + 1, fields.shape[1] + 2 * top + 1, 6)
    coarse = _scratch("coarse_padded", padded, np.float32)
    cv2.copyMakeBorder(fields, top, top + 1, top, top + 1, cv2.BORDER_REFLECT, dst=coarse)
    height, width = alpha.shape
    rows = STRIP + 2 * narrow
    for group in _groups(_band_rects(partial, narrow)):
        total = sum(end - start for _, start, end in group)
        image = _scratch("image", (rows, total, 3), np.uint8)
        a8 = _scratch("alpha", (rows, total), np.uint8)
        fg = _scratch("fg", (rows, total, 3), np.float32)
        bg = _scratch("bg", (rows, total, 3), np.float32)
        x = 0
        for y0, start, end in group:
            span, y, left = end - start, y0 - narrow, start - narrow  # image coordinates
            image[:, x : x + span] = _mirrored_crop(rgb, y, left, rows, span)
            a8[:, x : x + span] = _mirrored_crop(alpha, y, left, rows, span)
            fields = _sample_coarse(coarse, top, block, y, left, rows, span)
            fg[:, x : x + span] = fields[:, :, :3]
            bg[:, x : x + span] = fields[:, :, 3:]
            x += span
        colours = _fine_pass(image, a8, fg, bg, narrow)
        x = 0
        for y0, start, end in group:
            first, last = max(0, start - narrow), min(width, end - narrow)
            y1 = min(height, y0 + STRIP)
            core = colours[: y1 - y0, x + first - start + narrow :][:, : last - first]
            cv2.copyTo(core, partial[y0:y1, first:last], out[y0:y1, first:last])
            x += end - start
    return out


GROUP_COLUMNS = 2048
"""Rectangles are packed into arrays of about this many columns (44 rows: 1 MB of floats
per array), small enough to stay in cache."""

_scratch_arrays = threading.local()


def _scratch(name: str, shape: tuple[int, ...], dtype: type[Any]) -> NDArray[Any]:
    """This thread's reusable array ``name`` in ``shape``: fresh arrays of a megabyte cost
    more in page faults than the arithmetic on them (4x at 512 px, measured), so each
    thread keeps about 15 MB of them for the next cut-out."""
    arrays: dict[str, NDArray[Any]] = _scratch_arrays.__dict__.setdefault("arrays", {})
    size = int(np.prod(shape))
    flat = arrays.get(name)
    if flat is None or flat.size < size or flat.dtype != dtype:
        flat = arrays[name] = np.empty(size, dtype)
    return flat[:size].reshape(shape)


def _groups(rects: list[tuple[int, int, int]]) -> list[list[tuple[int, int, int]]]:
    groups: list[list[tuple[int, int, int]]] = [[]]
    columns = 0
    for rect in rects:
        if groups[-1] and columns + rect[2] - rect[1] > GROUP_COLUMNS:
            groups.append([])
            columns = 0
        groups[-1].append(rect)
        columns += rect[2] - rect[1]
    return groups


def _mirrored_crop(
    pixels: NDArray[np.uint8], y: int, x: int, rows: int, cols: int
) -> NDArray[np.uint8]:
    """pixels[y : y + rows, x : x + cols] with what falls outside mirrored (BORDER_REFLECT,
    as the box filter's border), without padding the whole image."""
    import cv2

    height, width = pixels.shape[:2]
    y0, x0, y1, x1 = max(0, y), max(0, x), min(height, y + rows), min(width, x + cols)
    crop = pixels[y0:y1, x0:x1]
    if (y0, x0, y1, x1) == (y, x, y + rows, x + cols):
        return crop
    padded = cv2.copyMakeBorder(
        crop, y0 - y, y + rows - y1, x0 - x, x + cols - x1, cv2.BORDER_REFLECT
    )
    return np.asarray(padded, np.uint8).reshape((rows, cols, *pixels.shape[2:]))


def _sample_coarse(
    coarse: NDArray[np.float32], top: int, block: int, y: int, x: int, rows: int, cols: int
) -> NDArray[np.float32]:
    """The block fields bilinearly interpolated at image pixels y.. x.. (``top`` blocks of
    mirrored margin around ``coarse``): block j's centre is pixel j*block + (block-1)/2, so
    enlarging a crop that starts on a block boundary ``block`` times lands on pixels; one
    block more on each side keeps the interpolation off the crop's edge."""
    import cv2

    y_first, x_first = y // block, x // block
    n_rows = -(-(y + rows) // block) - y_first + 2
    n_cols = -(-(x + cols) // block) - x_first + 2
    crop = coarse[top + y_first - 1 :][:n_rows, top + x_first - 1 :][:, :n_cols]
    size = (n_cols * block, n_rows * block)
    enlarged = np.asarray(cv2.resize(crop, size, interpolation=cv2.INTER_LINEAR), np.float32)
    dy, dx = block + y - y_first * block, block + x - x_first * block
    return enlarged[dy : dy + rows, dx : dx + cols]


def _coarse_pass(
    rgb: NDArray[np.uint8], alpha: NDArray[np.uint8], radius: int, block: int
) -> NDArray[np.float32]:
    """The first blur-fusion pass on ``block`` px blocks: the box-averaged subject and
    background colours (0..255) around each block, from the whole frame as it is; one
    array, subject in channels 0-2 and background in 3-5."""
    import cv2

    height, width = alpha.shape
    columns = -(-width // block)
    # block sums of a, I and I a (exact products) in bands of rows: small buffers the
    # allocator reuses, instead of full-frame temporaries that cost page faults
    low = (-(-height // block), columns)
    sums = _scratch("coarse_sums", (2, *low, 3), np.float32)
    a1 = _scratch("coarse_a1", low, np.float32)
    band = 64 * block
    for y in range(0, height, band):
        size = (columns, -(-min(band, height - y) // block))
        rows = slice(y // block, y // block + size[1])
        a1[rows] = cv2.resize(alpha[y : y + band], size, interpolation=cv2.INTER_AREA)
        image = rgb[y : y + band]
        a3 = cv2.merge([alpha[y : y + band]] * 3, dst=_scratch("band_a3", image.shape, np.uint8))
        products = cv2.multiply(
            image, a3, dst=_scratch("band_products", image.shape, np.uint16), dtype=cv2.CV_16U
        )
        for k, source in enumerate((image, products)):
            sums[k, rows] = cv2.resize(source, size, interpolation=cv2.INTER_AREA)
    # 3 channels from here on: numpy is several times slower when it broadcasts one
    a1 *= np.float32(1 / 255)
    a = _scratch("coarse_a", (*low, 3), np.float32)
    cv2.merge([a1, a1, a1], dst=a)
    image, fa = sums[0], sums[1]
    fa *= np.float32(1 / 255)
    box = (2 * max(1, round(radius / block)) + 1,) * 2
    spread, fg, bg = (_scratch(f"coarse_mean{i}", (*low, 3), np.float32) for i in range(3))
    for source, mean in ((a, spread), (fa, fg), (image, bg)):  # box means of a, I a and I
        cv2.blur(source, box, dst=mean, borderType=cv2.BORDER_REFLECT)
    bg -= fg  # of I (1 - a)
    spread += np.float32(1e-5)
    fg /= spread  # / (A + eps)
    np.subtract(np.float32(1 + 2e-5), spread, out=spread)
    bg /= spread  # / ((1 - A) + eps)
    fields = _scratch("coarse_fields", (*low, 6), np.float32)
    cv2.merge([fg, bg], dst=fields)
    return fields


def _band_rects(partial: NDArray[np.uint8], radius: int) -> list[tuple[int, int, int]]:
    """Rectangles that hold every partial pixel with the ``radius`` px around it: (first
    row, first column, end column) in coordinates padded by ``radius``; each spans its
    strip's STRIP rows plus ``radius`` above and below."""
    import cv2

    height, width = partial.shape
    strips = -(-height // STRIP)
    reach = np.zeros((strips, width + 2 * radius), np.uint8)
    for s in range(strips):
        np.max(partial[s * STRIP : (s + 1) * STRIP], axis=0, out=reach[s, radius : radius + width])
    reach = cv2.dilate(reach, np.ones((1, 2 * radius + 1), np.uint8))
    edges = np.diff(np.pad(reach > 0, ((0, 0), (1, 1))).astype(np.int8), axis=1)
    rects: list[tuple[int, int, int]] = []
    for s in range(strips):
        starts, ends = np.flatnonzero(edges[s] == 1), np.flatnonzero(edges[s] == -1)
        rects.extend((s * STRIP, int(a), int(b)) for a, b in zip(starts, ends, strict=True))
    return rects


def _alpha_tables() -> NDArray[np.float32]:
    """Per alpha level (0..255): a, 1 - a^2, a (1 - a) and 1 - a, as cv2.LUT tables."""
    a = np.arange(256, dtype=np.float32) / np.float32(255)
    return np.stack([a, 1 - a * a, a * (1 - a), 1 - a])[:, None, :].astype(np.float32)


_TABLES = _alpha_tables()


def _fine_pass(
    image8: NDArray[np.uint8],
    alpha8: NDArray[np.uint8],
    fg: NDArray[np.float32],
    bg: NDArray[np.float32],
    radius: int,
) -> NDArray[np.uint8]:
    """Both passes' per-pixel steps and the second pass's box, on the packed rectangles;
    F = F^ + a (I - a F^ - (1 - a) B^) is computed as (1 - a^2) F^ + a I - a (1 - a) B^.
    Per-pixel factors are made 3-channel first: numpy is several times slower when it
    broadcasts one channel over three. Returns the colours of the middle STRIP rows (in
    a scratch array: copy them out before the next call)."""
    import cv2

    shape, middle_shape = fg.shape, (STRIP, fg.shape[1], 3)
    alpha3 = _scratch("alpha3", shape, np.uint8)
    cv2.merge([alpha8] * 3, dst=alpha3)
    a, keep_fg, keep_bg, inverse = (_scratch(f"factor{i}", shape, np.float32) for i in range(4))
    for table, factor in zip(_TABLES, (a, keep_fg, keep_bg, inverse), strict=True):
        cv2.LUT(alpha3, table, dst=factor)
    lit = np.multiply(image8, a, dtype=np.float32, out=_scratch("lit", shape, np.float32))
    bg *= inverse  # B^ (1 - a): what the second pass blurs
    spill = np.multiply(bg, a, out=_scratch("spill", shape, np.float32))  # a (1 - a) B^
    fg *= keep_fg
    fg += lit
    fg -= spill
    np.clip(fg, 0, 255, out=fg)  # the first pass's F
    fg *= a
    box, border = (2 * radius + 1,) * 2, cv2.BORDER_REFLECT
    middle = slice(radius, radius + STRIP)
    blurred_a = _scratch("blurred_a", shape[:2], np.float32)
    cv2.blur(a[:, :, 0], box, dst=blurred_a, borderType=border)
    spread = _scratch("spread", middle_shape, np.float32)
    cv2.merge([blurred_a[middle]] * 3, dst=spread)
    fg_sum, bg_sum = (_scratch(name, shape, np.float32) for name in ("fg_sum", "bg_sum"))
    cv2.blur(fg, box, dst=fg_sum, borderType=border)
    cv2.blur(bg, box, dst=bg_sum, borderType=border)
    fg_mean, bg_mean = fg_sum[middle], bg_sum[middle]
    fg_mean *= keep_fg[middle]
    spread += np.float32(1e-5)
    fg_mean /= spread  # / (A + eps)
    bg_mean *= keep_bg[middle]
    np.subtract(np.float32(1 + 2e-5), spread, out=spread)
    bg_mean /= spread  # / ((1 - A) + eps)
    fg_mean += lit[middle]
    fg_mean -= bg_mean
    colours = _scratch("colours", middle_shape, np.uint8)
    cv2.addWeighted(fg_mean, 1.0, fg_mean, 0.0, 0.0, dst=colours, dtype=cv2.CV_8U)
    return colours
