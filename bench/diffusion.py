"""Diffusion figures: seconds per step at the working resolution, retouch's end-to-end time
over a bare diffusers pipeline call on the same inputs (goal <= 1.05), and peak memory.

    .venv/bin/python bench/diffusion.py [--steps 20]

Runs the tiny randomly initialised pipeline from the tests (its figures are the plumbing's:
the network is small) and, when present in your model store, a real SD 1.5 inpainting model
(`retouch models add sd15-inpainting FOLDER --task inpaint`). On a GPU machine the same
script records real figures.
"""

from __future__ import annotations

import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from retouch.models.store import ModelStore, default_home


def best(call, repeat: int = 3) -> float:  # type: ignore[no-untyped-def]
    call()
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return min(times)


def measure(label: str, folder: Path, steps: int) -> None:
    import torch
    from diffusers import AutoPipelineForInpainting
    from PIL import Image
    from skimage import data

    from retouch.api import Toolkit

    toolkit = Toolkit()
    provider = toolkit.registry.get("diffusers")
    loaded = provider.load(provider_options(folder))  # type: ignore[attr-defined]
    side = loaded.resolution
    photo = np.asarray(Image.fromarray(data.astronaut()).resize((side, side)))
    mask = np.zeros((side, side), np.uint8)
    mask[side // 4 : side // 2, side // 4 : side // 2] = 255

    def ours() -> None:
        toolkit.inpaint(
            photo,
            mask,
            "a red hat",
            provider="diffusers",
            steps=steps,
            seed=1,
            crop_margin=None,
            options={"model": str(folder)},
        )

    bare_pipe = AutoPipelineForInpainting.from_pretrained(
        str(folder), safety_checker=None, requires_safety_checker=False
    )
    bare_pipe.set_progress_bar_config(disable=True)
    image, mask_image = Image.fromarray(photo), Image.fromarray(mask)

    def bare() -> None:
        with torch.inference_mode():
            bare_pipe(
                prompt="a red hat",
                image=image,
                mask_image=mask_image,
                num_inference_steps=steps,
                width=side,
                height=side,
                generator=torch.Generator("cpu").manual_seed(1),
                output_type="np",
            )

    ours_s, bare_s = best(ours), best(bare)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"{label:<18} {side:>5} px {ours_s / steps:>9.4f} {ours_s:>8.3f} {bare_s:>8.3f} {ours_s / bare_s:>10.3f} {peak:>8.0f}"
    )


def provider_options(folder: Path) -> object:
    from retouch.providers.diffusion import DiffusersOptions

    return DiffusersOptions(model=str(folder))


def main() -> None:
    steps = int(sys.argv[sys.argv.index("--steps") + 1]) if "--steps" in sys.argv else 20
    real = ModelStore(default_home()).find("sd15-inpainting")
    print(
        f"{'model':<18} {'size':>8} {'s/step':>9} {'ours s':>8} {'bare s':>8} {'ours/bare':>10} {'peak MB':>8}"
    )
    with tempfile.TemporaryDirectory() as home:
        from tests.tiny_sd import build

        os.environ["RETOUCH_HOME"] = home
        measure("tiny (random)", build(Path(home) / "tiny"), steps)
        if real is not None:
            measure("sd15-inpainting", real, steps)
        else:
            print(
                "sd15-inpainting: not in your store (retouch models add sd15-inpainting FOLDER --task inpaint)"
            )
    print("goal: ours/bare <= 1.05")


if __name__ == "__main__":
    main()
