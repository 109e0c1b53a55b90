"""The example provider, installed, through Python, the command line and HTTP.

The networks are built here with the zoo's layout (``input1`` / ``output1``, 1 x 3 x 224 x
224, RGB float in 0..255): a 1x1 convolution that swaps red and blue, so what a correct
pipeline must give is known. Run after installing the package:
``pip install -e examples/retouch-fast-style && pytest examples/retouch-fast-style``."""

from __future__ import annotations

import importlib.metadata
import io
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from skimage import data

import retouch
from retouch.api import Toolkit
from retouch.errors import UnsupportedOperation

SWAP = np.array([[0, 0, 1], [0, 1, 0], [1, 0, 0]], np.float32)


def zoo_like(path: Path, side: int | None = 224) -> Path:
    """A network with the zoo's names, shapes and range that swaps red and blue."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    dims: list[int | str] = [1, 3, side, side] if side else [1, 3, "height", "width"]
    weight = numpy_helper.from_array(SWAP.reshape(3, 3, 1, 1), "swap")
    graph = helper.make_graph(
        [helper.make_node("Conv", ["input1", "swap"], ["output1"])],
        "fast_neural_style_like",
        [helper.make_tensor_value_info("input1", TensorProto.FLOAT, dims)],
        [helper.make_tensor_value_info("output1", TensorProto.FLOAT, dims)],
        [weight],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 9)])
    model.ir_version = 7
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    error = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return 99.0 if error == 0 else 10 * np.log10(255**2 / error)


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("RETOUCH_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    return np.ascontiguousarray(data.astronaut()[::2, ::2])  # 256 x 256


def test_installed_and_found_through_its_entry_point(photo: np.ndarray, tmp_path: Path) -> None:
    points = importlib.metadata.entry_points(group="retouch.providers")
    assert "fast-style" in {p.name for p in points}, "pip install examples/retouch-fast-style"
    status = {r.name: r for r in Toolkit().providers()}["fast-style"]
    assert not status.ready
    assert "--model" in status.detail

    fixed = zoo_like(tmp_path / "mosaic-like.onnx")
    out = retouch.stylize(photo, provider="fast-style", model=str(fixed))
    assert out.provider == "fast-style"
    assert out.image.pixels.shape == photo.shape
    # Stretched to 224 and back: the swap, less what two resizes cost (measured 33.8 dB).
    assert psnr(out.image.pixels, photo @ SWAP.T) > 30
    free = zoo_like(tmp_path / "free.onnx", side=None)
    exact = retouch.stylize(photo, provider="fast-style", model=str(free)).image.pixels
    assert np.array_equal(exact, photo[..., ::-1])  # free sides: full resolution, exact
    kept = retouch.stylize(photo, provider="fast-style", model=str(free), strength=0)
    assert np.array_equal(kept.image.pixels, photo)
    half = retouch.stylize(photo, provider="fast-style", model=str(free), strength=0.5)
    middle = (photo.astype(np.float32) + photo[..., ::-1]) / 2
    assert np.abs(half.image.pixels - middle).max() <= 0.5 + 1e-6
    with pytest.raises(UnsupportedOperation, match="style is not supported by fast-style"):
        retouch.stylize(photo, style="3", provider="fast-style", model=str(free))


def test_command_line(photo: np.ndarray, tmp_path: Path) -> None:
    Image.fromarray(photo).save(tmp_path / "in.png")
    model = zoo_like(tmp_path / "free.onnx", side=None)

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "retouch", *args]
        return subprocess.run(command, capture_output=True, text=True, timeout=120)

    assert "fast-style" in cli("providers").stdout
    made = cli(
        "stylize",
        str(tmp_path / "in.png"),
        "--provider",
        "fast-style",
        "--model",
        str(model),
        "-o",
        str(tmp_path / "out.png"),
    )
    assert made.returncode == 0, made.stderr
    assert np.array_equal(np.asarray(Image.open(tmp_path / "out.png")), photo[..., ::-1])
    refused = cli(
        "stylize",
        str(tmp_path / "in.png"),
        "--provider",
        "fast-style",
        "--model",
        str(model),
        "--option",
        "threads=0",
        "-o",
        str(tmp_path / "no.png"),
    )
    assert refused.returncode == 2
    assert "threads" in refused.stderr
    assert not (tmp_path / "no.png").exists()


def test_http(photo: np.ndarray, tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from retouch.models.store import ModelStore
    from retouch.server import ServerSettings, create_app

    ModelStore().add("swap", zoo_like(tmp_path / "free.onnx", side=None), task="stylize")
    client = TestClient(create_app(Toolkit(), ServerSettings()))
    listed = client.get("/v1/operations").json()
    stylize = next(op for op in listed["data"] if op["name"] == "stylize")
    assert "fast-style" in stylize["ready"]  # a network in the store: ready
    buffer = io.BytesIO()
    Image.fromarray(photo).save(buffer, format="PNG")
    files = {"image": ("in.png", buffer.getvalue(), "image/png")}
    answer = client.post("/v1/stylize", files=files, data={"provider": "fast-style"})
    assert answer.status_code == 200, answer.text
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(answer.content))), photo[..., ::-1])
    bad = client.post(
        "/v1/stylize", files=files, data={"provider": "fast-style", "options": '{"threads": 0}'}
    )
    assert bad.status_code == 400
    assert "threads" in bad.text
