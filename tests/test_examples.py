"""The example packages in ``examples/`` install as a user would install them (pip, from
the folder, through their own build backend) and pass their own tests with retouch."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


@pytest.mark.slow
def test_the_onnx_example_provider_installs_and_passes_its_own_tests(tmp_path: Path) -> None:
    """examples/retouch-fast-style: a local ONNX provider in three files (the provider, its
    entry point in pyproject.toml, its test), run through Python, the CLI and HTTP."""
    example = EXAMPLES / "retouch-fast-style"
    site = tmp_path / "site"
    install = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps"]
    install += ["--no-build-isolation", "--no-index", "--target", str(site), str(example)]
    subprocess.run(install, check=True, capture_output=True, timeout=300)
    assert (site / "retouch_fast_style").is_dir()
    env = {**os.environ, "PYTHONPATH": str(site)}
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(example)]
    run = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    assert "3 passed" in run.stdout
