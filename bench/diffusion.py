"""Diffusion figures: seconds per step at the working resolution, retouch's end-to-end time
over a bare diffusers pipeline call on the same inputs (goal <= 1.05), and peak memory.

    .venv/bin/python bench/diffusion.py [--steps 20]

    .venv/bin/python bench/diffusion.py --shaped [--side 256]

    .venv/bin/python bench/diffusion.py --sdxl-shaped --flux-shaped [--side 256]

Runs the tiny randomly initialised pipeline from the tests (its figures are the plumbing's:
the network is small) and, when present in your model store, a real SD 1.5 inpainting model
(`retouch models pull sd15-inpainting --trust`). With --shaped it also builds a randomly
initialised pipeline with SD 1.5's real architecture (UNet 860M, VAE, CLIP ViT-L text
encoder; no download): its seconds per step are what real weights cost on this machine, and
it compares the CPU settings: float32 vs bfloat16 (CPUs with bf16 instructions) and the fast
path (LCM-LoRA-shaped LoRA, 4 LCM steps at guidance 1, TAESD-shaped tiny VAE) against 20
steps. --sdxl-shaped builds SDXL's published UNet (2.6B) and VAE (text encoders at their
widths, 2 layers: they run once per image); --flux-shaped FLUX.1 Fill's published widths
with 1 of its 19 double and 2 of its 38 single transformer blocks and 1 of T5-XXL's 24
layers (the whole model is 12B + 4.7B parameters, more than a CPU box holds in float32): its
seconds per step are per-block costs, scale them by the block count. Both are compared with
the bare diffusers pipeline built on the same loaded parts (one copy in memory), at the same
size, steps, guidance and seed. On a GPU machine the same script records real figures.
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


def best_pair(ours, bare, repeat: int = 3) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    """The best of ``repeat`` runs each, taken in turn after one warm run each, so that both
    see the same load on a shared machine; which goes first alternates, since the first of a
    pair can pay for weights the system paged out (big models share their loaded parts)."""
    ours()
    bare()
    times: tuple[list[float], list[float]] = ([], [])
    for round_ in range(repeat):
        pair = [(ours, times[0]), (bare, times[1])]
        for call, kept in pair if round_ % 2 == 0 else pair[::-1]:
            started = time.perf_counter()
            call()
            kept.append(time.perf_counter() - started)
    return min(times[0]), min(times[1])


def race(
    label: str,
    toolkit: object,
    options: dict[str, object],
    bare_pipe: object,
    side: int,
    steps: int,
    repeat: int,
    **bare_arguments: object,
) -> float:
    """One inpaint of the astronaut through retouch (``options``) and through ``bare_pipe``
    with the same prompt, steps, size and seed, timed alternately; prints the row."""
    import torch
    from PIL import Image
    from skimage import data

    photo = np.asarray(Image.fromarray(data.astronaut()).resize((side, side)))
    mask = np.zeros((side, side), np.uint8)
    mask[side // 4 : side // 2, side // 4 : side // 2] = 255
    image, mask_image = Image.fromarray(photo), Image.fromarray(mask)
    bare_pipe.set_progress_bar_config(disable=True)  # type: ignore[attr-defined]

    def ours() -> None:
        toolkit.inpaint(  # type: ignore[attr-defined]
            photo,
            mask,
            "a red hat",
            provider="diffusers",
            steps=steps,
            seed=1,
            crop_margin=None,
            options=options,
        )

    def bare() -> None:
        with torch.inference_mode():
            bare_pipe(  # type: ignore[operator]
                prompt="a red hat",
                image=image,
                mask_image=mask_image,
                num_inference_steps=steps,
                strength=1.0,  # as retouch asks (SDXL's own default, 0.9999, runs a step less)
                width=side,
                height=side,
                generator=torch.Generator("cpu").manual_seed(1),
                output_type="np",
                **bare_arguments,
            )

    ours_s, bare_s = best_pair(ours, bare, repeat)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"{label:<18} {side:>5} px {ours_s / steps:>9.4f} {ours_s:>8.3f} {bare_s:>8.3f} {ours_s / bare_s:>10.3f} {peak:>8.0f}",
        flush=True,
    )
    return ours_s


def measure(
    label: str, folder: Path, steps: int, side: int | None = None, repeat: int = 3
) -> float:
    """ours / bare diffusers, each with its own copy of the model from ``folder``."""
    from diffusers import AutoPipelineForInpainting

    from retouch.api import Toolkit

    toolkit = Toolkit()
    provider = toolkit.registry.get("diffusers")
    loaded = provider.load(provider_options(folder))  # type: ignore[attr-defined]
    chosen = {"resolution": side} if side else {}
    bare_pipe = AutoPipelineForInpainting.from_pretrained(
        str(folder), safety_checker=None, requires_safety_checker=False
    )
    options = {"model": str(folder), **chosen}
    return race(label, toolkit, options, bare_pipe, side or loaded.resolution, steps, repeat)


def measure_shared(
    label: str, folder: Path, steps: int, side: int, repeat: int, extra: dict[str, object]
) -> float:
    """ours / bare where the bare pipeline is diffusers' own class built on the very parts
    retouch loaded (SDXL and FLUX-shaped models are too big for two copies)."""
    from retouch.api import Toolkit
    from retouch.providers.diffusion import DiffusersOptions

    toolkit = Toolkit()
    provider = toolkit.registry.get("diffusers")
    options = {"model": str(folder), "resolution": side, **extra}
    loaded = provider.load(DiffusersOptions(**options))  # type: ignore[attr-defined, arg-type]
    bare_pipe = type(loaded.inpaint)(**loaded.inpaint.components)
    arguments: dict[str, object] = {"guidance_scale": loaded.defaults[1]}
    if loaded.family == "flux":
        arguments["max_sequence_length"] = loaded.sequence
    return race(label, toolkit, options, bare_pipe, side, steps, repeat, **arguments)


def settings(folder: Path, side: int, lora: Path, taesd: Path) -> None:
    """One inpaint per setting on the same input; times against float32 at 20 steps."""
    from PIL import Image
    from skimage import data

    from retouch.api import Toolkit
    from retouch.providers.diffusion import cpu_has_bf16

    toolkit = Toolkit()
    photo = np.asarray(Image.fromarray(data.astronaut()).resize((side, side)))
    mask = np.zeros((side, side), np.uint8)
    mask[side // 4 : side // 2, side // 4 : side // 2] = 255
    base = {"model": str(folder), "resolution": side}
    runs: list[tuple[str, dict[str, object], int | None]] = [
        ("float32, 20 steps", {}, 20),
        ("fast: LCM 4 + TAESD", {"fast": True, "lora": str(lora), "tiny_vae": str(taesd)}, None),
    ]
    if cpu_has_bf16():
        runs.insert(1, ("bfloat16, 20 steps", {"dtype": "bfloat16"}, 20))
    else:
        print("bfloat16: this CPU has no bf16 instructions; retouch refuses it here")
    print(f"{'setting':<22} {'seconds':>8} {'vs float32':>11}")
    reference = None
    for label, extra, steps in runs:

        def call(extra: dict[str, object] = extra, steps: int | None = steps) -> None:
            toolkit.inpaint(
                photo,
                mask,
                "a red hat",
                provider="diffusers",
                steps=steps,
                seed=1,
                crop_margin=None,
                options={**base, **extra},
            )

        seconds = best(call, 1)
        reference = reference or seconds
        print(f"{label:<22} {seconds:>8.2f} {reference / seconds:>10.2f}x", flush=True)


def build_shaped(folder: Path) -> Path:
    """SD 1.5's architecture with random weights (the tests' builder at SD 1.5's shapes; its
    tokenizer is the tests' small one, which only changes token ids)."""
    from tests.tiny_sd import SD15, build

    return build(folder, shape=SD15)


def build_taesd(folder: Path) -> Path:
    import torch
    from diffusers import AutoencoderTiny

    torch.manual_seed(3)
    AutoencoderTiny().save_pretrained(str(folder))  # TAESD's own architecture
    return folder


def provider_options(folder: Path) -> object:
    from retouch.providers.diffusion import DiffusersOptions

    return DiffusersOptions(model=str(folder))


def main() -> None:
    steps = int(sys.argv[sys.argv.index("--steps") + 1]) if "--steps" in sys.argv else 20
    side = int(sys.argv[sys.argv.index("--side") + 1]) if "--side" in sys.argv else 256
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
                "sd15-inpainting: not in your store (retouch models pull sd15-inpainting --trust)"
            )
        if "--shaped" in sys.argv:
            from tests.tiny_sd import build_lora

            shaped = build_shaped(Path(home) / "shaped")
            measure("sd15-shaped", shaped, 4, side=side, repeat=3)
            print()
            lora = build_lora(shaped, Path(home) / "lora" / "lcm-shaped.safetensors")
            settings(shaped, side, lora, build_taesd(Path(home) / "taesd"))
        if "--sdxl-shaped" in sys.argv:
            from tests.tiny_sd import XL_SHAPED, build_xl

            xl = build_xl(Path(home) / "sdxl-shaped", shape=XL_SHAPED)
            measure_shared("sdxl-shaped", xl, 2, side, 2, {})
        if "--flux-shaped" in sys.argv:
            from tests.tiny_sd import FLUX_SHAPED, build_flux_fill

            flux = build_flux_fill(Path(home) / "flux-shaped", shape=FLUX_SHAPED)
            # 128 T5 tokens (of 512) on both sides: a prompt this short needs no more.
            measure_shared("flux-shaped 1+2", flux, 2, side, 2, {"max_sequence_length": 128})
    print("goal: ours/bare <= 1.05")


if __name__ == "__main__":
    main()
