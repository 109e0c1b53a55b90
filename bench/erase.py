"""Seconds per erase: classic (PatchMatch, Telea) and lama, at 512 and 2048 px, small mask.

    .venv/bin/python bench/erase.py

A 64 x 64 mask on the astronaut at 512 px and upscaled to 2048 px. For each method: the time
with crop-and-stitch (the default, 128 px of context) and on the whole image; the 2048 / 512
ratio shows whether a small mask on a big photo costs what it costs on a small photo. lama
runs a tiny randomly initialised model with LaMa's exact inputs and outputs (so its figures
are the plumbing's, not the network's), and the real weights when they are in your store
(`retouch models pull lama --trust`). Peak resident memory is printed at the end.
"""

from __future__ import annotations

import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from skimage import data

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from retouch import compose
from retouch.api import Toolkit
from retouch.models.store import ModelStore, default_home


def seconds(
    toolkit: Toolkit,
    image: np.ndarray,
    mask: np.ndarray,
    provider: str,
    options: dict[str, str] | None,
    crop_margin: int | None,
    repeat: int,
) -> float:
    toolkit.erase(
        image, mask, provider=provider, options=options, crop_margin=crop_margin
    )  # warm-up
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        toolkit.erase(image, mask, provider=provider, options=options, crop_margin=crop_margin)
        best = min(best, time.perf_counter() - started)
    return best


def main() -> None:
    real_lama = ModelStore(default_home()).find("lama")
    photo = data.astronaut()
    sizes = {512: photo, 2048: compose.resize_pixels(photo, (2048, 2048))}
    with tempfile.TemporaryDirectory() as home:
        from tests.test_lama import lama_like

        os.environ["RETOUCH_HOME"] = home
        ModelStore().add("lama-tiny", lama_like(Path(home) / "lama_tiny.onnx"), task="erase")
        if real_lama is not None:
            ModelStore().add("lama", real_lama, task="erase")
        toolkit = Toolkit()
        cases = [
            ("patchmatch", "classic", {"method": "patchmatch"}),
            ("telea", "classic", {"method": "telea"}),
            ("lama (tiny)", "lama", {"model": "lama-tiny"}),
        ]
        if real_lama is not None:
            cases.append(("lama (real)", "lama", {"model": "lama"}))
        print(f"{'method':<12} {'size':>5} {'crop s':>8} {'whole s':>8} {'whole/crop':>10}")
        crop_times: dict[tuple[str, int], float] = {}
        for label, provider, options in cases:
            for side, image in sizes.items():
                mask = np.zeros(image.shape[:2], np.uint8)
                c = side // 2
                mask[c - 32 : c + 32, c - 32 : c + 32] = 255
                cropped = seconds(toolkit, image, mask, provider, options, 128, 3)
                crop_times[(label, side)] = cropped
                if (
                    provider == "lama"
                ):  # the model works at 512 px: whole = everything scaled to 512
                    whole_text, ratio_text = "-", "-"
                else:
                    whole = seconds(
                        toolkit, image, mask, provider, options, None, 1 if side > 1000 else 3
                    )
                    whole_text, ratio_text = f"{whole:.3f}", f"{whole / cropped:.1f}"
                print(f"{label:<12} {side:>5} {cropped:>8.3f} {whole_text:>8} {ratio_text:>10}")
        for label, _, _ in cases:
            ratio = crop_times[(label, 2048)] / crop_times[(label, 512)]
            print(
                f"{label}: small mask on 2048 px costs {ratio:.2f}x the 512 px cost (goal: near 1)"
            )
        if real_lama is None:
            print(
                "lama (real): weights not in your store; `retouch models pull lama --trust` to measure them"
            )
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak resident memory: {peak_mb:.0f} MB")


if __name__ == "__main__":
    main()
