"""The one mask convention and every mask operation.

Inside retouch a mask is an HxW uint8 array the size of its image: 255 = edit, 0 = keep
exactly, grey = partial. Inputs in other conventions are converted here, explicitly:

- ``mask_from="alpha"``: transparent = edit (OpenAI, ComfyUI style),
- ``mask_from="luminance"``: white = edit (A1111, IOPaint, diffusers style),
- ``mask_from="auto"`` (default): luminance, unless the mask has a non-constant alpha
  channel, which is then read as alpha and a warning says so,
- ``invert=True`` flips the result.

A mask of another size is an error naming both sizes, unless ``resize=True``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal

import numpy as np
from PIL import Image, ImageDraw

from retouch import imageio
from retouch.errors import MaskError
from retouch.types import Mask, Picture, to_uint8

if TYPE_CHECKING:
    from retouch.imageio import ImageSource

MaskFrom = Literal["auto", "luminance", "alpha"]
Box = tuple[int, int, int, int]
"""(left, top, right, bottom), right/bottom exclusive, PIL's order."""


def load_mask(
    source: ImageSource,
    *,
    size: tuple[int, int],
    mask_from: MaskFrom = "auto",
    invert: bool = False,
    resize: bool = False,
    name: str | None = None,
    warnings: list[str] | None = None,
) -> Mask:
    """Read a mask in any supported form and convert it to retouch's convention.

    ``size`` is the image's (width, height). Conversions that guess (auto alpha) append a
    sentence to ``warnings`` when a list is given.
    """
    if isinstance(source, np.ndarray) and source.ndim == 2:
        label = name or "<mask array>"
        mask = (
            source.astype(np.uint8) * 255
            if source.dtype == np.bool_
            else to_uint8(source[:, :, None])[:, :, 0]
        )
    else:
        picture = imageio.load_image(source, name=name)
        label = picture.name
        mask = mask_from_picture(picture, mask_from=mask_from, warnings=warnings)
    if invert:
        mask = 255 - mask
    return fit_mask(mask, size, resize=resize, name=label)


def mask_from_picture(
    picture: Picture, *, mask_from: MaskFrom = "auto", warnings: list[str] | None = None
) -> Mask:
    alpha = picture.alpha
    if mask_from not in ("auto", "luminance", "alpha"):
        raise MaskError(f"mask_from must be auto, luminance or alpha, not {mask_from!r}")
    if mask_from == "alpha":
        if alpha is None:
            raise MaskError(
                f"{picture.name} has no alpha channel, so it cannot be read with mask_from='alpha'"
            )
        return from_alpha(to_uint8(alpha[:, :, None])[:, :, 0])
    if mask_from == "auto" and alpha is not None and alpha.min() != alpha.max():
        if warnings is not None:
            warnings.append(
                f"{picture.name} has transparency, so it was read as transparent = edit "
                "(OpenAI/ComfyUI style); pass mask_from='luminance' (--mask-from luminance) "
                "to use its brightness instead"
            )
        return from_alpha(to_uint8(alpha[:, :, None])[:, :, 0])
    return luminance(picture.rgb8())


def parse_mask_word(source: object) -> tuple[str, dict[str, object]] | None:
    """The mask request a mask source names, as (kind, fields), or None for a file.

    ``subject``, ``background`` and ``faces`` are kinds of their own; ``click:X,Y;X,Y``
    names points on the object (``-X,Y`` a point not on it, ``box=L,T,R,B`` a box around
    it) and ``text:the red car`` a phrase."""
    from retouch.types import MASK_WORDS, mask_word

    if mask_word(source) is None:
        return None
    assert isinstance(source, str)
    if source.strip() in MASK_WORDS:
        return source.strip(), {}
    if source.startswith("text:"):
        phrase = source[len("text:") :].strip()
        if not phrase:
            raise MaskError("a text: mask needs a phrase, e.g. --mask 'text:the red car'")
        return "text", {"text": phrase}
    if not source.startswith("click:"):
        return None
    points: list[tuple[int, int]] = []
    negative: list[tuple[int, int]] = []
    box: tuple[int, int, int, int] | None = None
    for part in source[len("click:") :].replace(" ", "").split(";"):
        if not part:
            continue
        try:
            if part.startswith("box="):
                left, top, right, bottom = (int(float(v)) for v in part[4:].split(","))
                box = (left, top, right, bottom)
                continue
            target = negative if part.startswith("-") else points
            x, y = (int(float(v)) for v in part.lstrip("-").split(","))
        except ValueError:
            raise MaskError(
                f"click mask part {part!r} is not X,Y, -X,Y (not the object) or box=L,T,R,B; "
                "e.g. --mask 'click:120,80;-40,60'"
            ) from None
        target.append((x, y))
    if not points and box is None:
        raise MaskError("a click: mask needs a point on the object (X,Y) or box=L,T,R,B")
    fields: dict[str, object] = {"points": tuple(points), "negative_points": tuple(negative)}
    if box is not None:
        fields["box"] = box
    return "click", fields


def luminance(rgb: np.ndarray) -> Mask:
    """Grey level of an RGB mask (ITU-R 601 weights, as PIL's convert('L'))."""
    if rgb.ndim == 2:
        return rgb.astype(np.uint8)
    weights = np.array([299, 587, 114], dtype=np.uint32)
    grey = (rgb[:, :, :3].astype(np.uint32) @ weights + 500) // 1000
    return grey.astype(np.uint8)


def from_alpha(alpha: np.ndarray) -> Mask:
    """Transparent = edit: alpha 0 becomes 255."""
    return (255 - alpha.astype(np.uint8)).astype(np.uint8)


def fit_mask(
    mask: Mask, size: tuple[int, int], *, resize: bool = False, name: str = "mask"
) -> Mask:
    """Check the mask is ``size`` (width, height); resize it only when asked."""
    height, width = mask.shape[:2]
    if (width, height) == tuple(size):
        return np.ascontiguousarray(mask, dtype=np.uint8)
    if not resize:
        raise MaskError(
            f"{name} is {width} x {height} but the image is {size[0]} x {size[1]}; "
            "make them the same size or ask for the mask to be resized "
            "(--resize-mask; resize_mask=True in Python, resize_mask in HTTP forms and recipes)"
        )
    return np.asarray(Image.fromarray(mask, "L").resize(size, Image.Resampling.BILINEAR))


def check_selects(mask: Mask, *, name: str = "mask", allow_full: bool = False) -> None:
    """Refuse a mask that selects nothing (or everything, where nothing is left to fill from)."""
    if not mask.any():
        raise MaskError(
            f"{name} selects nothing (every pixel is 0); paint the area to change white (255)"
        )
    if not allow_full and bool((mask > 0).all()):
        raise MaskError(
            f"{name} covers the whole image, so nothing is left to fill from; "
            "leave part of the image black (0) or use an operation that regenerates everything"
        )


# --- operations ---------------------------------------------------------------------------


def _kernel(radius: int) -> np.ndarray:
    import cv2

    kernel: np.ndarray = cv2.getStructuringElement(
        cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1)
    )
    return kernel


def _check_radius(px: int, what: str) -> None:
    if px < 0:
        raise MaskError(f"{what} takes a radius >= 0 pixels, got {px}")


KERNEL_LIMIT = 16
"""Grow/shrink radii up to this use a round kernel (exact for grey edges); larger ones a
distance transform, whose cost does not grow with the radius (the new edge is hard)."""


def grow(mask: Mask, px: int) -> Mask:
    """Dilate by ``px`` pixels (a disc)."""
    _check_radius(px, "grow")
    if px == 0:
        return mask.copy()
    import cv2

    if px <= KERNEL_LIMIT:
        return cv2.dilate(mask, _kernel(px)).astype(np.uint8, copy=False)
    outside = (mask == 0).astype(np.uint8)
    distance = cv2.distanceTransform(outside, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    return np.where(distance <= px, np.maximum(mask, 255 * (distance > 0)), mask).astype(np.uint8)


def shrink(mask: Mask, px: int) -> Mask:
    """Erode by ``px`` pixels (a disc); the image's border does not count as outside."""
    _check_radius(px, "shrink")
    if px == 0:
        return mask.copy()
    import cv2

    if px <= KERNEL_LIMIT:
        return cv2.erode(mask, _kernel(px), borderType=cv2.BORDER_REPLICATE).astype(
            np.uint8, copy=False
        )
    inside = np.pad((mask > 0).astype(np.uint8), 1, mode="edge")  # the border is no edge
    distance = cv2.distanceTransform(inside, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)[1:-1, 1:-1]
    return np.where(distance > px, mask, 0).astype(np.uint8)


def feather(mask: Mask, px: float) -> Mask:
    """Soften the edge with a Gaussian (sigma = px / 2); the edge spreads both ways."""
    if px < 0:
        raise MaskError(f"feather takes a radius >= 0 pixels, got {px}")
    if px == 0:
        return mask.copy()
    from retouch.blur import gaussian

    return gaussian(mask, px / 2.0).astype(np.uint8, copy=False)


def invert(mask: Mask) -> Mask:
    return (255 - mask).astype(np.uint8)


def union(*masks: Mask) -> Mask:
    _same_shapes(masks)
    combined: Mask = np.stack(masks).max(axis=0).astype(np.uint8)
    return combined


def intersection(*masks: Mask) -> Mask:
    _same_shapes(masks)
    combined: Mask = np.stack(masks).min(axis=0).astype(np.uint8)
    return combined


def _same_shapes(masks: Sequence[Mask]) -> None:
    if not masks:
        raise MaskError("give at least one mask")
    shapes = {m.shape for m in masks}
    if len(shapes) > 1:
        sizes = ", ".join(f"{s[1]} x {s[0]}" for s in sorted(shapes))
        raise MaskError(f"masks must be the same size to combine; got {sizes}")


def threshold(mask: Mask, level: int = 127) -> Mask:
    """Binary mask: 255 where mask > level."""
    return np.where(mask > level, 255, 0).astype(np.uint8)


def bounding_box(mask: Mask) -> Box | None:
    """(left, top, right, bottom) of the selected pixels, or None when nothing is selected."""
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(mask.any(axis=0))
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def expand_box(box: Box, margin: int, size: tuple[int, int]) -> Box:
    """``box`` grown by ``margin`` on every side, clipped to ``size`` (width, height)."""
    left, top, right, bottom = box
    return (
        max(0, left - margin),
        max(0, top - margin),
        min(size[0], right + margin),
        min(size[1], bottom + margin),
    )


def crop_to_mask(mask: Mask, margin: int = 0) -> Box:
    """The box around the mask with ``margin`` pixels of context, clipped to the image."""
    box = bounding_box(mask)
    if box is None:
        raise MaskError("the mask selects nothing, so there is nothing to crop to")
    return expand_box(box, margin, (mask.shape[1], mask.shape[0]))


def _canvas(size: tuple[int, int]) -> tuple[Image.Image, ImageDraw.ImageDraw]:
    width, height = size
    if width <= 0 or height <= 0:
        raise MaskError(f"mask size must be positive, got {width} x {height}")
    im = Image.new("L", (width, height), 0)
    return im, ImageDraw.Draw(im)


def _check_box(box: Box) -> None:
    left, top, right, bottom = box
    if right <= left or bottom <= top:
        raise MaskError(
            f"box {box} is empty: give left, top, right, bottom with right > left and bottom > top"
        )


def rectangle(size: tuple[int, int], box: Box) -> Mask:
    """255 inside ``box`` (right/bottom exclusive) on a ``size`` (width, height) canvas."""
    _check_box(box)
    mask = np.zeros((size[1], size[0]), np.uint8)
    left, top, right, bottom = expand_box(box, 0, size)
    mask[top:bottom, left:right] = 255
    return mask


def ellipse(size: tuple[int, int], box: Box) -> Mask:
    """255 inside the ellipse inscribed in ``box``."""
    _check_box(box)
    im, draw = _canvas(size)
    draw.ellipse((box[0], box[1], box[2] - 1, box[3] - 1), fill=255)
    drawn: Mask = np.array(im, dtype=np.uint8)
    return drawn


def polygon(size: tuple[int, int], points: Sequence[tuple[float, float]]) -> Mask:
    """255 inside the polygon through ``points`` (x, y)."""
    if len(points) < 3:
        raise MaskError(f"a polygon needs at least 3 points, got {len(points)}")
    im, draw = _canvas(size)
    draw.polygon([(float(x), float(y)) for x, y in points], fill=255, outline=255)
    drawn: Mask = np.array(im, dtype=np.uint8)
    return drawn


def largest_object(mask: Mask, level: int = 127) -> Mask:
    """Keep only the largest connected region (above ``level``), soft edges included."""
    import cv2

    binary = (mask > level).astype(np.uint8)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(binary, connectivity=8)
    if count <= 2:
        return mask.copy()
    biggest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    # Grow the kept region a little so its soft rim (below ``level``) survives.
    keep = grow((labels == biggest).astype(np.uint8) * 255, 3) > 0
    return np.where(keep, mask, 0).astype(np.uint8)


def fill_holes(mask: Mask, level: int = 127) -> Mask:
    """Fill regions not selected but enclosed by selected ones (a hole in a cut-out)."""
    import cv2

    binary = (mask > level).astype(np.uint8) * 255
    padded = np.pad(binary, 1)
    flood = padded.copy()
    cv2.floodFill(flood, None, (0, 0), 255)
    holes = (flood[1:-1, 1:-1] == 0) & (binary == 0)
    out = mask.copy()
    out[holes] = 255
    return out


def regions(mask: Mask, margin: int) -> list[Box]:
    """Boxes around the mask's separate regions, each with ``margin`` px of context; regions
    whose boxes overlap are merged, so no pixel is worked on twice."""
    import cv2

    outer = bounding_box(mask)
    if outer is None:
        return []
    left, top, right, bottom = outer
    # Label only inside the mask's box: a small mark on a big photo stays cheap.
    selected = (mask[top:bottom, left:right] > 0).astype(np.uint8)
    count, _, stats, _ = cv2.connectedComponentsWithStats(selected, connectivity=8)
    size = (mask.shape[1], mask.shape[0])
    boxes = [
        expand_box((left + int(x), top + int(y), left + int(x + w), top + int(y + h)), margin, size)
        for x, y, w, h in stats[1:count, :4]
    ]
    merged = True
    while merged and len(boxes) > 1:
        merged = False
        for i in range(len(boxes)):
            for j in range(i + 1, len(boxes)):
                a, b = boxes[i], boxes[j]
                if a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]:
                    boxes[i] = (min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3]))
                    del boxes[j]
                    merged = True
                    break
            if merged:
                break
    return sorted(boxes, key=lambda box: (box[1], box[0]))
