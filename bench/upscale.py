"""Upscaling figures: speed per model, peak memory, tiling overhead, and our overhead over ncnn.

    .venv/bin/python bench/upscale.py            # everything (about two minutes on 2 cores)
    .venv/bin/python bench/upscale.py --quick    # skip the x4plus models and the 2000 px run

Each case runs in its own process so its peak resident memory is its own. Ratios compare
cases measured in the same run on the same machine.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time

import numpy as np
from skimage import data


def photo(side: int) -> np.ndarray:
    import cv2

    return cv2.resize(
        data.astronaut(),
        (side, side),
        interpolation=cv2.INTER_AREA if side < 512 else cv2.INTER_CUBIC,
    )


def case_model(model: str, side: int) -> dict[str, float]:
    import retouch

    image = photo(side)
    retouch.upscale(image[:32, :32], scale=2, model=model)  # load the net once, outside the timing
    base_mb = resident_mb()
    started = time.perf_counter()
    result = retouch.upscale(image, model=model, scale=4 if "x4" in model else 2)
    seconds = time.perf_counter() - started
    return {
        "seconds": seconds,
        "input_mp": side * side / 1e6,
        "output_mp": result.image.width * result.image.height / 1e6,
        "base_mb": base_mb,
        "tile": result.usage["tile"],
    }


def resident_mb() -> float:
    """Current resident memory: the baseline before the measured work."""
    with open("/proc/self/statm") as statm:
        pages = int(statm.read().split()[1])
    return pages * resource.getpagesize() / 2**20


def case_tiling(side: int, tile: int) -> dict[str, float]:
    import retouch

    image = photo(side)
    retouch.upscale(image[:32, :32], scale=2, model="animevideov3-x2")
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        retouch.upscale(image, scale=2, model="animevideov3-x2", options={"tile": tile})
        best = min(best, time.perf_counter() - started)
    return {"seconds": best}


def case_raw_ncnn(side: int) -> dict[str, float]:
    """The same model run directly with ncnn on the whole image: no retouch code at all."""
    import ncnn

    from retouch.providers.realesrgan import SHIPPED, weights_dir

    folder, stem = weights_dir(), SHIPPED["animevideov3-x2"].stem
    assert folder is not None
    net = ncnn.Net()
    net.opt.use_vulkan_compute = False
    net.opt.num_threads = 2
    net.load_param(str(folder / f"{stem}.param"))
    net.load_model(str(folder / f"{stem}.bin"))
    image = photo(side)
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        mat = ncnn.Mat.from_pixels(image, ncnn.Mat.PixelType.PIXEL_RGB, side, side)
        mat.substract_mean_normalize([], [1 / 255.0] * 3)
        extractor = net.create_extractor()
        extractor.input("data", mat)
        _, out = extractor.extract("output")
        pixels = np.clip(np.array(out).transpose(1, 2, 0) * 255 + 0.5, 0, 255).astype(np.uint8)
        best = min(best, time.perf_counter() - started)
    assert pixels.shape == (side * 2, side * 2, 3)
    return {"seconds": best}


CASES = {"model": case_model, "tiling": case_tiling, "raw": case_raw_ncnn}


def run_case(*args: str) -> dict[str, float]:
    done = subprocess.run(
        [sys.executable, __file__, "--case", *args], capture_output=True, text=True, check=True
    )
    return json.loads(done.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def main() -> None:
    if sys.argv[1:2] == ["--case"]:
        name, *rest = sys.argv[2:]
        values = [int(v) if v.isdigit() else v for v in rest]
        figures = CASES[name](*values)
        figures["peak_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(json.dumps(figures))
        return
    quick = "--quick" in sys.argv
    print("model            input      s/input-MP  s/output-MP  peak MB")
    models = [("animevideov3-x2", 512), ("animevideov3-x4", 512)]
    if not quick:
        models += [("x4plus", 128), ("x4plus-anime", 128)]
    for model, side in models:
        f = run_case("model", model, str(side))
        print(
            f"{model:<16} {side:>4} px {f['seconds'] / f['input_mp']:>11.2f} {f['seconds'] / f['output_mp']:>12.3f} {f['peak_mb']:>8.0f}"
        )
    untiled = run_case("tiling", "1024", "1024")
    tiled = run_case("tiling", "1024", "400")
    small_tiles = run_case("tiling", "1024", "200")
    raw = run_case("raw", "1024")
    ratio, small_ratio = (
        tiled["seconds"] / untiled["seconds"],
        small_tiles["seconds"] / untiled["seconds"],
    )
    print(
        f"tiled / untiled time, 1024 px x2: 400 px tiles {ratio:.3f} (goal < 1.10), 200 px tiles {small_ratio:.3f}"
    )
    print(
        f"retouch untiled / bare ncnn on the whole image: {untiled['seconds'] / raw['seconds']:.3f} (our overhead)"
    )
    print(
        f"peak MB: untiled {untiled['peak_mb']:.0f}, 400 px tiles {tiled['peak_mb']:.0f}, "
        f"200 px tiles {small_tiles['peak_mb']:.0f}, bare ncnn {raw['peak_mb']:.0f}"
    )
    if not quick:
        big = run_case("model", "animevideov3-x4", "2000")
        used = big["peak_mb"] - big["base_mb"]
        print(
            f"2000 x 2000 x4 (animevideov3, default 2 GiB budget, {big['tile']} px tiles): "
            f"{big['seconds']:.1f} s, peak {big['peak_mb']:.0f} MB = {big['base_mb']:.0f} MB "
            f"before the call + {used:.0f} MB for the upscale"
        )


if __name__ == "__main__":
    main()
