"""Keep what the user did not ask to change, exactly.

- ``paste_back``: result over original through the mask; where the mask is 0 the output is
  the original, bit for bit. An optional inward feather softens the edge without leaking
  outside the mask.
- ``match_colour``: shift a regenerated fill so that, on a ring around the mask, it matches
  the original (cures VAE drift and cloud colour shifts).
- ``CropPlan``: work on a crop around the mask (with margin), scaled to the provider's
  working size, and stitch the result back at full resolution.
- ``outpaint_canvas``: the extended canvas, the area to fill, and the blend for the seam.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from retouch import masks as mask_ops
from retouch.errors import InvalidRequest
from retouch.types import Mask, Pixels, to_uint8, to_uint16


def resize_pixels(pixels: Pixels, size: tuple[int, int], *, smooth: bool = False) -> Pixels:
    """Resize to ``size`` (width, height): area when shrinking, Lanczos when enlarging.

    Works on uint8 and uint16, any channel count. ``smooth`` uses bilinear (for masks).
    """
    import cv2

    width, height = size
    if (pixels.shape[1], pixels.shape[0]) == (width, height):
        return pixels.copy()
    if smooth:
        method = cv2.INTER_LINEAR
    elif width < pixels.shape[1] and height < pixels.shape[0]:
        method = cv2.INTER_AREA
    else:
        method = cv2.INTER_LANCZOS4
    out = cv2.resize(pixels, (width, height), interpolation=method)
    if pixels.ndim == 3 and out.ndim == 2:
        out = out[:, :, None]
    resized: Pixels = out
    return resized


MAX_SCALE = 16.0


def _check_side(value: int | None, what: str) -> None:
    if value is not None and not 1 <= value <= 65535:
        raise InvalidRequest(f"{what} must be 1..65535 pixels, got {value}")


def scaled_size(
    size: tuple[int, int],
    *,
    scale: float | None,
    width: int | None = None,
    height: int | None = None,
) -> tuple[int, int]:
    """Target (width, height) for an enlargement by ``scale``, or to ``width``/``height``.

    One of width/height alone keeps the aspect ratio.
    """
    _check_side(width, "width")
    _check_side(height, "height")
    w, h = size
    if width and height:
        return width, height
    if width:
        return width, max(1, round(h * width / w))
    if height:
        return max(1, round(w * height / h)), height
    if scale is None or not 0 < scale <= MAX_SCALE:
        raise InvalidRequest(f"scale must be above 0 and at most {MAX_SCALE:g}, got {scale}")
    return max(1, round(w * scale)), max(1, round(h * scale))


def result_size(request: object) -> tuple[int, int]:
    """The (width, height) a request's result will have, known before any work (an
    outpaint's sides as given: resolve a target width/height/aspect first)."""
    from retouch.types import (
        EditRequest,
        OutpaintRequest,
        ResizeRequest,
        RestoreFacesRequest,
        UpscaleRequest,
        VariationsRequest,
    )

    size: tuple[int, int] = request.image.size  # type: ignore[attr-defined]
    if isinstance(request, UpscaleRequest):
        return scaled_size(size, scale=request.scale, width=request.width, height=request.height)
    if isinstance(request, ResizeRequest):
        return fitted_size(
            size,
            max_size=request.max_size,
            width=request.width,
            height=request.height,
            max_width=request.max_width,
            max_height=request.max_height,
        )
    if isinstance(request, OutpaintRequest):
        return size[0] + request.left + request.right, size[1] + request.top + request.bottom
    if isinstance(request, (EditRequest, VariationsRequest)):
        return output_size(request)
    if isinstance(request, RestoreFacesRequest) and request.upscale != 1:
        return scaled_size(size, scale=request.upscale, width=None, height=None)
    return size


def output_size(request: object) -> tuple[int, int]:
    """The (width, height) of an edit or variations result: the input's, or the request's
    ``width``/``height`` (one alone keeps the aspect ratio)."""
    width = getattr(request, "width", None)
    height = getattr(request, "height", None)
    size: tuple[int, int] = request.image.size  # type: ignore[attr-defined]
    if width is None and height is None:
        return size
    return scaled_size(size, scale=None, width=width, height=height)


def fitted_size(
    size: tuple[int, int],
    *,
    max_size: int | None,
    width: int | None = None,
    height: int | None = None,
    max_width: int | None = None,
    max_height: int | None = None,
) -> tuple[int, int]:
    """Target (width, height) of a resize.

    ``width``/``height``: that exact size (one alone keeps the aspect ratio). Otherwise the
    shrink-only bounds, any combination: the long side at most ``max_size``, the width at most
    ``max_width``, the height at most ``max_height`` (ImageMagick's ``1920x1080>``); the
    aspect ratio is kept and the image is never enlarged."""
    bounds = {"max_size": max_size, "max_width": max_width, "max_height": max_height}
    if width or height:
        given = [name for name, value in bounds.items() if value is not None]
        if given:
            raise InvalidRequest(
                f"give an exact width/height or shrink-only bounds ({', '.join(given)}), not both",
                param=given[0],
            )
        return scaled_size(size, scale=None, width=width, height=height)
    if all(value is None for value in bounds.values()):
        raise InvalidRequest(
            "resize needs max_size, max_width or max_height (shrink only), or width and/or height"
        )
    factor = 1.0
    for name, value, side in (
        ("max_size", max_size, max(size)),
        ("max_width", max_width, size[0]),
        ("max_height", max_height, size[1]),
    ):
        if value is not None:
            _check_side(value, name)
            factor = min(factor, value / side)
    return max(1, round(size[0] * factor)), max(1, round(size[1] * factor))


def match_depth(pixels: Pixels, like: Pixels) -> Pixels:
    """``pixels`` at the bit depth of ``like``."""
    return to_uint16(pixels) if like.dtype == np.uint16 else to_uint8(pixels)


def inward_feather(mask: Mask, px: int) -> NDArray[np.float32]:
    """Blend weights in 0..1: the mask's edge softened over ``px`` pixels *inside* the mask.

    Zero wherever the mask is zero, so pixels outside it never change.
    """
    weights = mask.astype(np.float32) / 255.0
    if px <= 0:
        return weights
    soft = mask_ops.feather(mask_ops.shrink(mask, px), px).astype(np.float32) / 255.0
    return np.where(mask > 0, np.minimum(weights, soft), 0.0).astype(np.float32)


def paste_back(original: Pixels, result: Pixels, mask: Mask, *, feather: int = 0) -> Pixels:
    """Blend ``result`` over ``original`` by ``mask``; pixels where mask == 0 are untouched.

    Channel counts may differ only in alpha: a 3-channel result over an RGBA original keeps
    the original alpha.
    """
    if original.shape[:2] != result.shape[:2] or original.shape[:2] != mask.shape:
        raise InvalidRequest(
            f"paste_back needs equal sizes: original {original.shape[:2]}, result "
            f"{result.shape[:2]}, mask {mask.shape}"
        )
    result = match_depth(result, original)
    channels = min(original.shape[2], result.shape[2])
    weights = inward_feather(mask, feather)[:, :, None]
    out = original.copy()
    region = mask > 0
    full = 65535.0 if original.dtype == np.uint16 else 255.0
    blended = (
        original[:, :, :channels].astype(np.float32) * (1.0 - weights)
        + result[:, :, :channels].astype(np.float32) * weights
    )
    out[:, :, :channels][region] = np.clip(np.rint(blended[region]), 0, full).astype(original.dtype)
    return out


def match_colour(fill: Pixels, original: Pixels, mask: Mask, *, ring: int = 16) -> Pixels:
    """Shift ``fill`` so its colour on a ring around the mask matches ``original`` there.

    Per-channel mean and spread on the ring, measured in both images, map fill -> original.
    Returns ``fill`` unchanged when the ring is empty (mask covers the image).
    """
    band = (mask_ops.grow(mask, ring) > 0) & (mask == 0)
    if band.sum() < 16:
        return fill
    fill_f = fill.astype(np.float32)
    orig_f = match_depth(original, fill).astype(np.float32)
    out = fill_f.copy()
    for c in range(min(3, fill.shape[2])):
        f_ring, o_ring = fill_f[:, :, c][band], orig_f[:, :, c][band]
        f_sd, o_sd = float(f_ring.std()), float(o_ring.std())
        gain = float(np.clip(o_sd / f_sd, 0.5, 2.0)) if f_sd > 1e-3 else 1.0
        out[:, :, c] = (fill_f[:, :, c] - float(f_ring.mean())) * gain + float(o_ring.mean())
    full = 65535 if fill.dtype == np.uint16 else 255
    return np.clip(np.rint(out), 0, full).astype(fill.dtype)


@dataclass(frozen=True)
class CropPlan:
    """Where to cut the work area from the full image and at what size the provider sees it."""

    box: tuple[int, int, int, int]
    """(left, top, right, bottom) in the full image."""
    work_size: tuple[int, int]
    """(width, height) handed to the provider."""

    @property
    def box_size(self) -> tuple[int, int]:
        return self.box[2] - self.box[0], self.box[3] - self.box[1]

    @property
    def scaled(self) -> bool:
        return self.work_size != self.box_size

    def crop(self, pixels: Pixels) -> Pixels:
        left, top, right, bottom = self.box
        part = np.ascontiguousarray(pixels[top:bottom, left:right])
        return resize_pixels(part, self.work_size) if self.scaled else part

    def crop_mask(self, mask: Mask) -> Mask:
        left, top, right, bottom = self.box
        part = np.ascontiguousarray(mask[top:bottom, left:right])
        if not self.scaled:
            return part
        # Grow after scaling so a thin stroke does not vanish when the crop shrinks.
        scaled = resize_pixels(part[:, :, None], self.work_size, smooth=True)[:, :, 0]
        return np.where(scaled > 0, np.maximum(scaled, 1), 0).astype(np.uint8)

    def stitch(
        self, original: Pixels, work_result: Pixels, mask: Mask, *, feather: int = 0
    ) -> Pixels:
        """Scale the provider's result back and paste it into a copy of ``original`` through ``mask``."""
        out = original.copy()
        self.stitch_into(out, work_result, mask, feather=feather)
        return out

    def stitch_into(
        self, target: Pixels, work_result: Pixels, mask: Mask, *, feather: int = 0
    ) -> None:
        """``stitch`` in place: only the plan's box of ``target`` is written."""
        left, top, right, bottom = self.box
        result = resize_pixels(work_result, self.box_size) if self.scaled else work_result
        target[top:bottom, left:right] = paste_back(
            target[top:bottom, left:right], result, mask[top:bottom, left:right], feather=feather
        )


def plan_box(box: tuple[int, int, int, int], *, working_size: int | None) -> CropPlan:
    """Work on ``box``, scaled down so its long side fits ``working_size``."""
    width, height = box[2] - box[0], box[3] - box[1]
    long_side = max(width, height)
    if working_size is None or long_side <= working_size:
        return CropPlan(box=box, work_size=(width, height))
    scale = working_size / long_side
    work = (max(1, round(width * scale)), max(1, round(height * scale)))
    return CropPlan(box=box, work_size=work)


def whole_image(size: tuple[int, int]) -> CropPlan:
    return CropPlan(box=(0, 0, size[0], size[1]), work_size=size)


def pad_to_multiple(pixels: Pixels, multiple: int) -> tuple[Pixels, tuple[int, int]]:
    """Reflect-pad bottom/right to a multiple of ``multiple``; returns the original (h, w)."""
    height, width = pixels.shape[:2]
    pad_h, pad_w = (-height) % multiple, (-width) % multiple
    if not pad_h and not pad_w:
        return pixels, (height, width)
    widths = [(0, pad_h), (0, pad_w)] + [(0, 0)] * (pixels.ndim - 2)
    if height > pad_h and width > pad_w:
        return np.pad(pixels, widths, mode="reflect"), (height, width)
    return np.pad(pixels, widths, mode="edge"), (height, width)


def outpaint_canvas(
    pixels: Pixels, *, left: int, right: int, top: int, bottom: int, feather: int
) -> tuple[Pixels, Mask, Mask]:
    """The extended canvas, the mask to fill, and the seam blend mask.

    The fill mask covers the new area plus a band of ``feather`` pixels inside the original
    (so the filler sees a soft seam to cross); the blend mask is 255 in the new area and
    ramps to 0 across that band, and 0 everywhere else in the original.
    """
    for side, value in (("left", left), ("right", right), ("top", top), ("bottom", bottom)):
        if value < 0:
            raise InvalidRequest(f"outpaint {side} must be >= 0 pixels, got {value}")
    if not (left or right or top or bottom):
        raise InvalidRequest("outpaint needs at least one of left, right, top, bottom > 0")
    height, width = pixels.shape[:2]
    feather = max(0, min(feather, width // 4, height // 4))
    new_h, new_w = height + top + bottom, width + left + right
    channels = pixels.shape[2]
    canvas = np.zeros((new_h, new_w, channels), pixels.dtype)
    if channels == 4:
        canvas[:, :, 3] = 65535 if pixels.dtype == np.uint16 else 255
    canvas[top : top + height, left : left + width] = pixels
    new_area = np.full((new_h, new_w), 255, np.uint8)
    new_area[top : top + height, left : left + width] = 0
    if feather == 0:
        return canvas, new_area, new_area.copy()
    # Distance into the original from each extended side, for a linear ramp across the band.
    ys = np.arange(height, dtype=np.float32)[:, None]
    xs = np.arange(width, dtype=np.float32)[None, :]
    inf = np.float32(np.inf)
    dist = np.full((height, width), inf, np.float32)
    if left:
        dist = np.minimum(dist, xs + 0.5)
    if right:
        dist = np.minimum(dist, width - xs - 0.5)
    if top:
        dist = np.minimum(dist, ys + 0.5)
    if bottom:
        dist = np.minimum(dist, height - ys - 0.5)
    ramp = np.clip(1.0 - dist / feather, 0.0, 1.0)
    blend = new_area.copy()
    blend[top : top + height, left : left + width] = np.rint(ramp * 255).astype(np.uint8)
    fill = np.where(blend > 0, 255, 0).astype(np.uint8)
    return canvas, fill, blend


# --- backgrounds ----------------------------------------------------------------------------


def parse_colour(text: str) -> tuple[int, int, int, int]:
    """A colour as "#rrggbb", "#rrggbbaa", a CSS name, or "r,g,b[,a]" -> RGBA."""
    from PIL import ImageColor

    value = text.strip()
    try:
        if "," in value:
            parts = [int(p) for p in value.split(",")]
            if len(parts) not in (3, 4) or not all(0 <= p <= 255 for p in parts):
                raise ValueError
            r, g, b, *rest = parts
            return r, g, b, rest[0] if rest else 255
        rgb = ImageColor.getrgb(value)
    except ValueError:
        raise InvalidRequest(
            f"not a colour: {text!r}; use #rrggbb, a name like white, or r,g,b[,a]"
        ) from None
    return (rgb[0], rgb[1], rgb[2], rgb[3] if len(rgb) == 4 else 255)


def cover(pixels: Pixels, size: tuple[int, int]) -> Pixels:
    """Scale ``pixels`` to cover ``size`` (width, height) and crop the centre."""
    width, height = size
    src_h, src_w = pixels.shape[:2]
    scale = max(width / src_w, height / src_h)
    scaled = resize_pixels(
        pixels, (max(width, round(src_w * scale)), max(height, round(src_h * scale)))
    )
    top = (scaled.shape[0] - height) // 2
    left = (scaled.shape[1] - width) // 2
    return np.ascontiguousarray(scaled[top : top + height, left : left + width])


def blurred(pixels: Pixels, radius: float) -> Pixels:
    """Gaussian blur with sigma = radius / 2 (a portrait-style background)."""
    from retouch.blur import gaussian

    return gaussian(pixels, radius / 2.0, reflect=True)


def composite_over(cutout: NDArray[np.uint8], background: NDArray[np.uint8]) -> NDArray[np.uint8]:
    """An RGBA cut-out over an RGB or RGBA background of the same size (straight alpha)."""
    alpha = cutout[:, :, 3:4].astype(np.float32) / 255.0
    fg = cutout[:, :, :3].astype(np.float32)
    bg = background[:, :, :3].astype(np.float32)
    rgb = fg * alpha + bg * (1.0 - alpha)
    if background.shape[2] == 3:
        flat: NDArray[np.uint8] = np.clip(np.rint(rgb), 0, 255).astype(np.uint8)
        return flat
    bg_alpha = background[:, :, 3:4].astype(np.float32) / 255.0
    out_alpha = alpha + bg_alpha * (1.0 - alpha)
    # Un-premultiply against the combined alpha so the colours stay straight.
    colour = (fg * alpha + bg * bg_alpha * (1.0 - alpha)) / np.maximum(out_alpha, 1e-6)
    merged = np.concatenate([colour, out_alpha * 255.0], axis=2)
    layered: NDArray[np.uint8] = np.clip(np.rint(merged), 0, 255).astype(np.uint8)
    return layered
