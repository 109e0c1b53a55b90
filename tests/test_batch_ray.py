"""The Ray engine makes the same outputs and audit lines as the local one.

Ray binds to the machine's primary interface and probes an outside address to find its IP,
so these tests run it inside a network namespace of their own (``unshare --net``, loopback
up): nothing can leave the machine. Slow: starting Ray takes seconds.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import require
from .test_batch import EXAMPLES, make_photos

require("ray")
pytestmark = pytest.mark.slow
SRC = Path(__file__).parents[1] / "src"
IGNORED = ("time", "run", "engine", "timings")
"""What differs between two runs by design."""


def _isolated(command: list[str]) -> list[str]:
    """``command`` inside a new network namespace with only loopback up."""
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        pytest.skip("needs unshare and ip (util-linux, iproute2) to isolate Ray's network")
    user = [] if os.geteuid() == 0 else ["--user", "--map-root-user"]
    probe = subprocess.run(["unshare", *user, "--net", "true"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"cannot make a network namespace here: {probe.stderr.decode().strip()}")
    script = "ip link set lo up && exec " + " ".join(f"'{part}'" for part in command)
    return ["unshare", *user, "--net", "sh", "-c", script]


def _batch(recipe: Path, inputs: Path, out: Path, *extra: str) -> dict[str, object]:
    command = [sys.executable, "-m", "retouch", "batch", str(recipe), str(inputs), "-o", str(out), "-q", "--json", *extra]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(SRC), "RAY_USAGE_STATS_ENABLED": "0"}
    done = subprocess.run(_isolated(command), env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode in (0, 1), done.stderr[-3000:]
    summary: dict[str, object] = json.loads(done.stdout)
    return summary


def _lines(out: Path) -> dict[tuple[str, object], dict[str, object]]:
    found = {}
    for text in (out / "audit.jsonl").read_text().splitlines():
        line = json.loads(text)
        for key in IGNORED:
            line.pop(key)
        for output in line["outputs"]:
            output["path"] = str(Path(output["path"]).relative_to(out))
        found[(line["input"], line["step"])] = line
    return found


def _files(out: Path) -> dict[str, str]:
    return {
        str(p.relative_to(out)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in out.rglob("*")
        if p.is_file() and p.name != "audit.jsonl"
    }


def test_ray_engine_makes_the_local_engines_outputs_and_audit_lines(tmp_path: Path) -> None:
    shots = tmp_path / "shots"
    make_photos(shots, 4, (64, 48), "jpg")
    make_photos(shots / "sub", 2, (48, 48), "png")
    (shots / "notes.txt").write_text("not a picture")
    recipe = EXAMPLES / "product-photo.yaml"
    local = _batch(recipe, shots, tmp_path / "local")
    ray = _batch(recipe, shots, tmp_path / "ray", "--engine", "ray")
    assert (local["done"], local["failed"]) == (6, 1)
    assert (ray["done"], ray["failed"], ray["engine"]) == (6, 1, "ray")
    assert ray["errors"] == local["errors"]
    local_files, ray_files = _files(tmp_path / "local"), _files(tmp_path / "ray")
    assert len(local_files) == 6
    assert ray_files == local_files  # byte for byte, the same names
    local_lines, ray_lines = _lines(tmp_path / "local"), _lines(tmp_path / "ray")
    assert len(local_lines) == 31  # 6 items x 5 steps, and the file that is not an image
    assert ray_lines == local_lines
    # and a second run with Ray skips everything, as the local engine would
    again = _batch(recipe, shots, tmp_path / "ray", "--engine", "ray")
    assert (again["done"], again["skipped"], again["failed"]) == (0, 6, 1)
