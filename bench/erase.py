"""Seconds per erase for the classic methods, and what crop-and-stitch saves on big photos.

    .venv/bin/python bench/erase.py

A 64 x 64 mask on the astronaut at 512 px and upscaled to 2048 px. For each method: the time
with crop-and-stitch (default, 128 px of context) and on the whole image, and their ratio;
the 2048 px / 512 px ratio shows whether a small mask on a big photo costs what it costs on
a small photo. Peak resident memory of the process is printed at the end.
"""

from __future__ import annotations

import resource
import time

import numpy as np
from skimage import data

import retouch
from retouch import compose


def seconds(
    image: np.ndarray, mask: np.ndarray, method: str, crop_margin: int | None, repeat: int = 3
) -> float:
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        retouch.erase(image, mask, seed=1, options={"method": method}, crop_margin=crop_margin)
        best = min(best, time.perf_counter() - started)
    return best


def main() -> None:
    photo = data.astronaut()
    sizes = {512: photo, 2048: compose.resize_pixels(photo, (2048, 2048))}
    print(f"{'method':<11} {'size':>5} {'crop s':>8} {'whole s':>8} {'whole/crop':>10}")
    crop_times: dict[tuple[str, int], float] = {}
    for method in ("patchmatch", "telea"):
        for side, image in sizes.items():
            mask = np.zeros(image.shape[:2], np.uint8)
            c = side // 2
            mask[c - 32 : c + 32, c - 32 : c + 32] = 255
            cropped = seconds(image, mask, method, crop_margin=128)
            whole = seconds(image, mask, method, crop_margin=None, repeat=1 if side > 1000 else 3)
            crop_times[(method, side)] = cropped
            print(f"{method:<11} {side:>5} {cropped:>8.3f} {whole:>8.3f} {whole / cropped:>10.1f}")
    for method in ("patchmatch", "telea"):
        ratio = crop_times[(method, 2048)] / crop_times[(method, 512)]
        print(f"{method}: small mask on 2048 px costs {ratio:.2f}x the 512 px cost (goal: near 1)")
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak resident memory: {peak_mb:.0f} MB")


if __name__ == "__main__":
    main()
