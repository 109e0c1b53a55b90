"""Batch figures: images/s of the product-photo recipe with the local engine and with Ray on
this machine (and their ratio), peak memory of each, and how long a resume that skips every
image takes.

    .venv/bin/python bench/batch.py [--count 20] [--size 160x120] [--no-ray]

Each run is ``retouch batch examples/recipes/product-photo.yaml`` in a fresh process; the
photos are crops of scikit-image's sample photos. Memory is the peak of the summed resident
set of the whole process tree (Ray's raylet, object store and actors included), sampled
every 0.1 s. Ray runs inside a network namespace of its own when ``unshare`` allows one
(Ray probes an outside address to find its IP); the local engine runs as it is.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RECIPE = ROOT / "examples" / "recipes" / "product-photo.yaml"


def make_photos(folder: Path, count: int, size: tuple[int, int]) -> None:
    import numpy as np
    from PIL import Image
    from skimage import data

    sources = [data.astronaut(), data.coffee(), data.chelsea(), data.rocket()]
    folder.mkdir(parents=True)
    width, height = size
    for index in range(count):
        source = sources[index % len(sources)]
        top = (index * 17) % max(1, source.shape[0] - 2 * height)
        left = (index * 23) % max(1, source.shape[1] - 2 * width)
        crop = np.ascontiguousarray(source[top : top + 2 * height, left : left + 2 * width])
        Image.fromarray(crop).resize((width, height), Image.Resampling.LANCZOS).save(
            folder / f"shot{index:03d}.jpg", quality=92
        )


def isolated(command: list[str]) -> list[str]:
    """The command in a network namespace with loopback only, where this machine allows it."""
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        return command
    user = [] if os.geteuid() == 0 else ["--user", "--map-root-user"]
    if subprocess.run(["unshare", *user, "--net", "true"], capture_output=True).returncode:
        return command
    script = "ip link set lo up && exec " + " ".join(f"'{part}'" for part in command)
    return ["unshare", *user, "--net", "sh", "-c", script]


def tree_rss(pid: int) -> int:
    import psutil

    try:
        root = psutil.Process(pid)
        processes = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0
    total = 0
    for process in processes:
        try:
            total += process.memory_info().rss
        except psutil.NoSuchProcess:
            continue
    return total


def run_batch(inputs: Path, out: Path, *extra: str, isolate: bool = False) -> dict[str, object]:
    command = [sys.executable, "-m", "retouch", "batch", str(RECIPE), str(inputs), "-o", str(out), "-q", "--json", *extra]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "RAY_USAGE_STATS_ENABLED": "0"}
    started = time.perf_counter()
    process = subprocess.Popen(
        isolated(command) if isolate else command,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    peak = 0
    finished = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not finished.wait(0.1):
            peak = max(peak, tree_rss(process.pid))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    stdout, stderr = process.communicate()
    finished.set()
    sampler.join()
    wall = time.perf_counter() - started
    if process.returncode not in (0, 1):
        raise SystemExit(f"batch failed ({process.returncode}):\n{stderr[-3000:]}")
    summary: dict[str, object] = json.loads(stdout)
    summary["wall"] = wall
    summary["peak_mb"] = peak / 2**20
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=20)
    parser.add_argument("--size", default="160x120", help="WIDTHxHEIGHT of the photos")
    parser.add_argument("--no-ray", action="store_true")
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.split("x"))
    work = Path(tempfile.mkdtemp(prefix="retouch-bench-batch-"))
    try:
        make_photos(work / "shots", args.count, (width, height))
        rows = []
        local = run_batch(work / "shots", work / "local")
        rows.append(("local", local))
        resume = run_batch(work / "shots", work / "local")
        if not args.no_ray:
            try:
                import ray  # noqa: F401
            except ImportError:
                print("ray is not installed (pip install 'retouch[ray]'): local engine only")
            else:
                rows.append(("ray", run_batch(work / "shots", work / "ray", "--engine", "ray", isolate=True)))  # fmt: skip
        print(f"product-photo recipe (5 steps) on {args.count} photos of {width} x {height}, "
              f"{os.cpu_count()} CPUs")  # fmt: skip
        print(f"{'engine':<8} {'done':>5} {'batch s':>8} {'images/s':>9} {'process s':>10} {'peak MB':>8}")  # fmt: skip
        rates = {}
        for name, summary in rows:
            seconds = float(summary["seconds"])  # type: ignore[arg-type]
            done = int(summary["done"])  # type: ignore[call-overload]
            rates[name] = done / seconds
            print(f"{name:<8} {done:>5} {seconds:>8.1f} {rates[name]:>9.2f} "
                  f"{float(summary['wall']):>10.1f} {float(summary['peak_mb']):>8.0f}")  # type: ignore[arg-type]  # fmt: skip
        if "ray" in rates:
            print(f"ray / local images/s: {rates['ray'] / rates['local']:.2f}")
        print(f"resume (all {resume['skipped']} skipped): batch {float(resume['seconds']):.2f} s, "  # type: ignore[arg-type]
              f"process {float(resume['wall']):.2f} s")  # type: ignore[arg-type]  # fmt: skip
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
