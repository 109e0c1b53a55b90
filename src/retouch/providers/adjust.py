"""Colour and tone, no weights: white balance, auto levels / contrast, colour matching,
brightness, contrast, saturation and gamma.

Everything is worked in float32 on 0..1 at the picture's own depth (8 or 16 bit in, the same
out); alpha is left as it is, and the statistics (means, percentiles) are taken over the
visible pixels only, so a cut-out's transparent background does not tint the result. The
steps run in a fixed order, the order the request documents:

1. white balance: grey-world (each channel's mean becomes the common mean) or white-patch
   (each channel's bright end, at ``clip`` percent, becomes white);
2. auto levels (each channel stretched between its ``clip`` percentiles) or auto contrast
   (one stretch for all channels, between the lowest and highest of those percentiles);
3. colour matching: mean and spread of L, a and b (CIELAB) made those of the reference
   (Reinhard et al. 2001, "Color transfer between images");
4. brightness (added), contrast (around mid-grey), saturation (around Rec. 709 luma), gamma.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from retouch.errors import UnsupportedOperation
from retouch.results import ImageResult, OutputImage
from retouch.types import (
    AdjustRequest,
    OperationSpec,
    Pixels,
    Progress,
    ProgressCallback,
    ProviderInfo,
    ProviderStatus,
    Request,
    parse_options,
)

NAME = "adjust"
STATS_SAMPLES = 1_000_000
"""Statistics are taken over at most this many pixels (an even stride over the image)."""
GREY_WORLD_ROUNDS = 4
"""Gains are re-aimed this many times so that the means are equal after clipping too."""
LUMA = np.array([0.2126, 0.7152, 0.0722], np.float32)

Float = NDArray[np.float32]


@dataclass(frozen=True)
class NoOptions:
    pass


def _full(pixels: Pixels) -> float:
    return 65535.0 if pixels.dtype == np.uint16 else 255.0


def _sample(rgb: Float, visible: NDArray[np.bool_] | None) -> Float:
    """The pixels statistics are taken over: visible ones, at most STATS_SAMPLES of them."""
    flat = rgb.reshape(-1, 3)
    if visible is not None:
        keep = visible.reshape(-1)
        if keep.any():
            flat = flat[keep]
    step = max(1, flat.shape[0] // STATS_SAMPLES)
    sampled: Float = flat[::step]
    return sampled


def _percentiles(sample: Float, clip: float) -> tuple[Float, Float]:
    low = np.percentile(sample, clip, axis=0).astype(np.float32)
    high = np.percentile(sample, 100.0 - clip, axis=0).astype(np.float32)
    return low, high


def _stretch(rgb: Float, low: Float, high: Float) -> Float:
    span = high - low
    ok = span > 1e-6  # a flat channel is left alone rather than blown up
    out = rgb.copy()
    out[..., ok] = (rgb[..., ok] - low[ok]) / span[ok]
    return out


def _lab(rgb: Float) -> Float:
    import cv2

    return np.asarray(cv2.cvtColor(np.clip(rgb, 0.0, 1.0), cv2.COLOR_RGB2Lab), np.float32)


def _rgb(lab: Float) -> Float:
    import cv2

    return np.asarray(cv2.cvtColor(lab.astype(np.float32), cv2.COLOR_Lab2RGB), np.float32)


def _visible(pixels: Pixels) -> NDArray[np.bool_] | None:
    return pixels[:, :, 3] > 0 if pixels.shape[2] == 4 else None


def adjust_pixels(request: AdjustRequest) -> tuple[Pixels, list[str]]:
    """The adjusted pixels (same shape and depth as the request's image) and what was done."""
    pixels = request.image.pixels
    full = _full(pixels)
    rgb: Float = pixels[:, :, :3].astype(np.float32) / np.float32(full)
    visible = _visible(pixels)
    applied: list[str] = []

    if request.white_balance == "grey-world":
        sample = _sample(rgb, visible)
        means = sample.mean(axis=0)
        if (means > 1e-6).all():
            target = means.mean()
            gains = (target / means).astype(np.float32)
            for _ in range(GREY_WORLD_ROUNDS):  # clipped highlights pull a mean down: re-aim
                means = np.clip(sample * gains, 0.0, 1.0).mean(axis=0)
                gains *= (target / np.maximum(means, 1e-6)).astype(np.float32)
            rgb = rgb * gains
        applied.append("grey-world")
    elif request.white_balance == "white-patch":
        _, high = _percentiles(_sample(rgb, visible), request.clip)
        if (high > 1e-6).all():
            rgb = rgb / high
        applied.append("white-patch")
    rgb = np.clip(rgb, 0.0, 1.0)

    if request.auto_levels or request.auto_contrast:
        low, high = _percentiles(_sample(rgb, visible), request.clip)
        if request.auto_contrast:
            low = np.full(3, low.min(), np.float32)
            high = np.full(3, high.max(), np.float32)
        rgb = np.clip(_stretch(rgb, low, high), 0.0, 1.0)
        applied.append("auto-contrast" if request.auto_contrast else "auto-levels")

    if request.match_image is not None:
        reference = request.match_image.pixels
        ref_rgb = reference[:, :, :3].astype(np.float32) / np.float32(_full(reference))
        source_lab = _lab(_sample(rgb, visible)[None])[0]
        target_lab = _lab(_sample(ref_rgb, _visible(reference))[None])[0]
        mean_s, std_s = source_lab.mean(axis=0), source_lab.std(axis=0)
        mean_t, std_t = target_lab.mean(axis=0), target_lab.std(axis=0)
        gain = np.where(std_s > 1e-3, std_t / np.maximum(std_s, 1e-3), 1.0).astype(np.float32)
        lab = (_lab(rgb) - mean_s) * gain + mean_t
        rgb = np.clip(_rgb(lab), 0.0, 1.0)
        applied.append("match")

    if request.brightness != 0.0:
        rgb = rgb + np.float32(request.brightness)
        applied.append("brightness")
    if request.contrast != 1.0:
        rgb = (rgb - 0.5) * np.float32(request.contrast) + 0.5
        applied.append("contrast")
    if request.saturation != 1.0:
        luma: Float = np.einsum("hwc,c->hw", rgb, LUMA)[..., None]
        rgb = luma + (rgb - luma) * np.float32(request.saturation)
        applied.append("saturation")
    rgb = np.clip(rgb, 0.0, 1.0)
    if request.gamma != 1.0:
        rgb = np.power(rgb, np.float32(1.0 / request.gamma)).astype(np.float32, copy=False)
        applied.append("gamma")

    out = np.empty_like(pixels)
    out[:, :, :3] = np.rint(rgb * np.float32(full)).astype(pixels.dtype)
    if pixels.shape[2] == 4:
        out[:, :, 3] = pixels[:, :, 3]
    return out, applied


class AdjustProvider:
    info = ProviderInfo(
        name=NAME,
        kind="local",
        description="colour and tone: white balance, auto levels/contrast, colour matching, "
        "brightness, contrast, saturation, gamma; no weights",
        operations={
            "adjust": OperationSpec(accepts_alpha=True, accepts_16bit=True, options=NoOptions)
        },
    )

    def status(self) -> ProviderStatus:
        return ProviderStatus(ready=True, detail="numpy and OpenCV")

    def run(self, request: Request, progress: ProgressCallback) -> ImageResult:
        if not isinstance(request, AdjustRequest):
            raise UnsupportedOperation(f"{NAME} does not do {request.operation}")
        parse_options(NoOptions, request.options, provider=NAME)
        progress(Progress("adjust", 0, 1))
        out, applied = adjust_pixels(request)
        progress(Progress("adjust", 1, 1))
        return ImageResult(
            images=[OutputImage(pixels=out)],
            provider=NAME,
            model="adjust",
            usage={"applied": applied},
        )
