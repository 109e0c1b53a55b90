"""Upscaling figures: speed per model, peak memory, tiling overhead, and our overhead over ncnn.

    .venv/bin/python bench/upscale.py             # everything (about four minutes on 2 cores)
    .venv/bin/python bench/upscale.py --quick     # skip the x4plus models and the 2000 px run
    .venv/bin/python bench/upscale.py --overhead  # only retouch against bare ncnn

Overhead: ``retouch.upscale`` x4 (animevideov3-x4, default options: tiles from the memory
budget) against a bare ncnn run of the same network on the whole image, both in one process,
in alternating rounds (the order flips each round), each the best of its rounds in wall time
(perf_counter) and in CPU time (process_time, all threads), at 1 and 2 threads. Other cases
run in their own processes so their peak resident memory is their own. Ratios compare cases
measured in the same run on the same machine.
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


def bare_ncnn(model: str, threads: int):  # type: ignore[no-untyped-def]
    """An upscale with ncnn alone: pixels in with ncnn's helper, one extractor, numpy out."""
    import ncnn

    from retouch.providers.realesrgan import SHIPPED, weights_dir

    folder, stem = weights_dir(), SHIPPED[model].stem
    assert folder is not None
    net = ncnn.Net()
    net.opt.use_vulkan_compute = False
    net.opt.num_threads = threads
    net.load_param(str(folder / f"{stem}.param"))
    net.load_model(str(folder / f"{stem}.bin"))

    def run(image: np.ndarray) -> np.ndarray:
        height, width = image.shape[:2]
        mat = ncnn.Mat.from_pixels(image, ncnn.Mat.PixelType.PIXEL_RGB, width, height)
        mat.substract_mean_normalize([], [1 / 255.0] * 3)
        extractor = net.create_extractor()
        extractor.input("data", mat)
        _, out = extractor.extract("output")
        return np.clip(np.array(out).transpose(1, 2, 0) * 255 + 0.5, 0, 255).astype(np.uint8)

    return run


def case_overhead(sides: str, rounds: str) -> dict[str, float]:
    """retouch x4 (default tiles, and one tile) against bare ncnn, in this process, in
    rounds whose order rotates; the best wall and CPU time of each."""
    from skimage.metrics import peak_signal_noise_ratio

    import retouch

    model = "animevideov3-x4"
    figures: dict[str, float] = {}
    for threads in (1, 2):
        bare = bare_ncnn(model, threads)

        def ours(image: np.ndarray, tile: int | None = None, threads: int = threads) -> np.ndarray:
            options = {"threads": threads} | ({"tile": tile} if tile else {})
            result = retouch.upscale(image, scale=4, model=model, options=options)
            if tile is None:
                figures[f"tiles{image.shape[0]}"] = result.usage["tiles"]
            return result.image.pixels

        for side in (int(s) for s in sides.split(",")):
            image = photo(side)
            calls = {
                "ours": ours,
                "one": lambda image, side=side: ours(image, tile=side),
                "bare": bare,
            }
            for call in calls.values():
                call(image[:32, :32])
            best = {name: [float("inf")] * 2 for name in calls}
            outputs = {}
            names = list(calls)
            for turn in range(int(rounds)):
                for name in names[turn % 3 :] + names[: turn % 3]:
                    wall, cpu = time.perf_counter(), time.process_time()
                    outputs[name] = calls[name](image)
                    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
                    best[name] = [min(best[name][0], wall), min(best[name][1], cpu)]
            figures[f"psnr{side}"] = peak_signal_noise_ratio(outputs["bare"], outputs["ours"])
            for name in best:
                figures[f"{name}{side}t{threads}wall"] = best[name][0]
                figures[f"{name}{side}t{threads}cpu"] = best[name][1]
    return figures


CASES = {
    "model": case_model,
    "tiling": case_tiling,
    "raw": case_raw_ncnn,
    "overhead": case_overhead,
}


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
    overhead()
    if "--overhead" in sys.argv:
        return
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


def overhead() -> None:
    sides = (256, 1024)
    f = run_case("overhead", ",".join(map(str, sides)), "5")
    print("retouch upscale x4 (animevideov3-x4) / bare ncnn on the whole image: one process,")
    print("rotating order, best of 5; 'tiles' = retouch's default (tiles from the 2 GiB budget),")
    print("'one tile' = retouch forced to run the whole image at once")
    print(
        " side threads  bare wall s  bare cpu s   ours wall s  ours cpu s  wall x  cpu x"
        "  tiles  one tile: wall x  cpu x"
    )
    for side in sides:
        for threads in (1, 2):
            bw, bc = f[f"bare{side}t{threads}wall"], f[f"bare{side}t{threads}cpu"]
            ow, oc = f[f"ours{side}t{threads}wall"], f[f"ours{side}t{threads}cpu"]
            one_w, one_c = f[f"one{side}t{threads}wall"], f[f"one{side}t{threads}cpu"]
            print(
                f"{side:>5} {threads:>7} {bw:>12.3f} {bc:>11.3f} {ow:>13.3f} {oc:>11.3f} "
                f"{ow / bw:>7.3f} {oc / bc:>6.3f} {f[f'tiles{side}']:>6.0f} "
                f"{one_w / bw:>16.3f} {one_c / bc:>6.3f}"
            )
        print(
            f"      PSNR of retouch's output against bare ncnn's at {side} px: {f[f'psnr{side}']:.1f} dB"
        )
    for side in sides:
        one, two = f[f"bare{side}t1wall"], f[f"bare{side}t2wall"]
        print(
            f"bare ncnn at {side} px: 2 threads take {two / one:.2f}x the wall time of 1 thread "
            f"and {f[f'bare{side}t2cpu'] / f[f'bare{side}t1cpu']:.2f}x its CPU time"
        )


if __name__ == "__main__":
    main()
