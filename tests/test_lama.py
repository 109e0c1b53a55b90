"""LaMa / MI-GAN erase plumbing with tiny ONNX models in each export's conventions.

The real weights are tested when they are in the store (see the skip reason for how).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

import retouch
from retouch import masks
from retouch.api import Toolkit
from retouch.errors import ModelNotAvailable
from retouch.models.store import ModelStore
from retouch.providers.lama import LamaProvider

from .conftest import REAL_HOME, box_mask


def _save(graph: onnx.GraphProto, path: Path) -> Path:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def lama_like(path: Path, *, echo_mask: bool = False) -> Path:
    """Carve LaMa's layout: float image 0..1 and float mask (1 = hole), fixed 512, output 0..255."""
    shape_img, shape_mask = [1, 3, 512, 512], [1, 1, 512, 512]
    rng = np.random.default_rng(0)
    nodes = [
        helper.make_node("Sub", ["one", "mask"], ["keep"]),
        helper.make_node("Mul", ["image", "keep"], ["masked"]),
        helper.make_node("Concat", ["masked", "mask"], ["both"], axis=1),
        helper.make_node("Conv", ["both", "w"], ["conv"], pads=[1, 1, 1, 1]),
        helper.make_node("Sigmoid", ["conv"], ["unit"]),
        helper.make_node("Mul", ["unit", "k255"], ["out"]),
    ]
    if echo_mask:  # output = 255 * mask on every channel: shows which value means "hole"
        nodes = [
            helper.make_node("Concat", ["mask", "mask", "mask"], ["m3"], axis=1),
            helper.make_node("Mul", ["m3", "k255"], ["out"]),
        ]
    graph = helper.make_graph(
        nodes,
        "lama_like",
        [
            helper.make_tensor_value_info("image", TensorProto.FLOAT, shape_img),
            helper.make_tensor_value_info("mask", TensorProto.FLOAT, shape_mask),
        ],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, shape_img)],
        initializer=[
            numpy_helper.from_array(np.array(1.0, np.float32), "one"),
            numpy_helper.from_array(np.array(255.0, np.float32), "k255"),
            numpy_helper.from_array(
                (rng.standard_normal((3, 4, 3, 3)) * 0.3).astype(np.float32), "w"
            ),
        ],
    )
    return _save(graph, path)


def migan_like(path: Path, *, echo_mask: bool = False) -> Path:
    """MI-GAN pipeline's layout: uint8 image and uint8 mask (0 = hole), any size, uint8 out."""
    rng = np.random.default_rng(1)
    dims = [1, 3, "h", "w"]
    if echo_mask:
        nodes = [helper.make_node("Concat", ["mask", "mask", "mask"], ["out"], axis=1)]
    else:
        nodes = [
            helper.make_node("Cast", ["image"], ["fi"], to=TensorProto.FLOAT),
            helper.make_node("Cast", ["mask"], ["fm"], to=TensorProto.FLOAT),
            helper.make_node("Concat", ["fi", "fm"], ["both"], axis=1),
            helper.make_node("Mul", ["both", "inv255"], ["unit_in"]),
            helper.make_node("Conv", ["unit_in", "w"], ["conv"], pads=[1, 1, 1, 1]),
            helper.make_node("Sigmoid", ["conv"], ["unit"]),
            helper.make_node("Mul", ["unit", "k255"], ["scaled"]),
            helper.make_node("Cast", ["scaled"], ["out"], to=TensorProto.UINT8),
        ]
    graph = helper.make_graph(
        nodes,
        "migan_like",
        [
            helper.make_tensor_value_info("image", TensorProto.UINT8, dims),
            helper.make_tensor_value_info("mask", TensorProto.UINT8, [1, 1, "h", "w"]),
        ],
        [helper.make_tensor_value_info("out", TensorProto.UINT8, dims)],
        initializer=[
            numpy_helper.from_array(np.array(1 / 255, np.float32), "inv255"),
            numpy_helper.from_array(np.array(255.0, np.float32), "k255"),
            numpy_helper.from_array(
                (rng.standard_normal((3, 4, 3, 3)) * 0.3).astype(np.float32), "w"
            ),
        ],
    )
    return _save(graph, path)


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ModelStore:
    monkeypatch.setenv("RETOUCH_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("RETOUCH_CATALOG", raising=False)
    return ModelStore()


def test_without_weights_erase_uses_classic_and_lama_says_how_to_get_them(
    home: ModelStore, small_photo: np.ndarray
) -> None:
    toolkit = Toolkit()
    mask = box_mask(small_photo.shape[:2], (30, 20, 50, 40))
    assert toolkit.erase(small_photo, mask, seed=1).provider == "classic"
    with pytest.raises(ModelNotAvailable, match="retouch models pull lama"):
        toolkit.erase(small_photo, mask, provider="lama")


def test_erase_picks_lama_when_its_weights_are_here(
    home: ModelStore, tmp_path: Path, astronaut: np.ndarray, shuttle_mask: np.ndarray
) -> None:
    home.add("lama", lama_like(tmp_path / "lama_fp32.onnx"), task="erase")
    toolkit = Toolkit()
    result = toolkit.erase(astronaut, shuttle_mask)
    assert (result.provider, result.model) == ("lama", "lama")
    out = result.image.pixels
    assert np.array_equal(out[shuttle_mask == 0], astronaut[shuttle_mask == 0])
    assert np.abs(out.astype(int) - astronaut.astype(int))[shuttle_mask > 0].mean() > 5
    assert toolkit.erase(astronaut, shuttle_mask, provider="classic", seed=1).provider == "classic"


@pytest.mark.parametrize(("builder", "name"), [(lama_like, "lama"), (migan_like, "migan")])
def test_each_exports_mask_convention_reaches_the_model(
    home: ModelStore, tmp_path: Path, small_photo: np.ndarray, builder, name: str
) -> None:  # type: ignore[no-untyped-def]
    home.add(name, builder(tmp_path / f"{name}.onnx", echo_mask=True), task="erase")
    mask = box_mask(small_photo.shape[:2], (30, 20, 50, 40))
    out = Toolkit().erase(small_photo, mask, provider="lama", options={"model": name}).image.pixels
    expected_inside = 255 if name == "lama" else 0  # LaMa: 1 = hole; MI-GAN: 0 = hole
    assert (out[mask > 0] == expected_inside).all()
    assert np.array_equal(out[mask == 0], small_photo[mask == 0])


def test_a_model_added_under_its_own_name_is_read_from_its_inputs(
    home: ModelStore, tmp_path: Path, small_photo: np.ndarray
) -> None:
    home.add("house", migan_like(tmp_path / "house.onnx", echo_mask=True), task="erase")
    model = LamaProvider().load("house", threads=1)
    assert (model.io.dtype, model.io.mask_hole, model.io.size) == ("uint8", 0, None)
    mask = box_mask(small_photo.shape[:2], (30, 20, 50, 40))
    out = (
        Toolkit().erase(small_photo, mask, provider="lama", options={"model": "house"}).image.pixels
    )
    assert (out[mask > 0] == 0).all()


def test_big_photo_small_mask_is_worked_on_a_crop(
    home: ModelStore, tmp_path: Path, astronaut: np.ndarray
) -> None:
    home.add("lama", lama_like(tmp_path / "lama.onnx"), task="erase")
    big = np.asarray(Image.fromarray(astronaut).resize((2000, 2000)))
    mask = box_mask((2000, 2000), (1400, 300, 1500, 420))
    result = Toolkit().erase(big, mask)
    work_w, work_h = result.usage["work_size"]
    assert max(work_w, work_h) <= 512 and work_w % 8 == 0 and work_h % 8 == 0
    assert np.array_equal(result.image.pixels[mask == 0], big[mask == 0])
    # a mask wider than the working size is scaled down to fit, then stitched back
    wide = box_mask((2000, 2000), (100, 900, 1900, 1000))
    scaled = Toolkit().erase(big, wide)
    assert max(scaled.usage["work_size"]) <= 512 and any("crop" in w for w in scaled.warnings)
    assert np.array_equal(scaled.image.pixels[wide == 0], big[wide == 0])


def test_cli_erase_uses_lama_once_added(
    home: ModelStore,
    tmp_path: Path,
    astronaut_file: Path,
    shuttle_mask_file: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import json

    from retouch.cli import main

    assert (
        main(["models", "add", "lama", str(lama_like(tmp_path / "l.onnx")), "--task", "erase"]) == 0
    )
    capsys.readouterr()
    out = tmp_path / "clean.png"
    assert (
        main(
            [
                "erase",
                str(astronaut_file),
                "--mask",
                str(shuttle_mask_file),
                "-o",
                str(out),
                "--json",
            ]
        )
        == 0
    )
    assert json.loads(capsys.readouterr().out)["provider"] == "lama"


REAL = ModelStore(REAL_HOME).find("lama")


@pytest.mark.skipif(
    REAL is None,
    reason="real LaMa weights are not in the store; enable with: retouch models pull lama --trust",
)
def test_real_lama_removes_the_shuttle(
    astronaut: np.ndarray, shuttle_mask: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RETOUCH_HOME", str(REAL_HOME))
    result = retouch.erase(astronaut, shuttle_mask, provider="lama")
    out = result.image.pixels
    selected = shuttle_mask > 0
    assert np.array_equal(out[~selected], astronaut[~selected])
    upper = selected.copy()
    upper[250:] = False
    ring = (masks.grow(shuttle_mask, 20) > 0) & ~selected
    ring[250:] = False
    wall = astronaut[ring].mean(axis=0)
    assert (
        np.abs(out[upper].astype(float) - wall).mean()
        < np.abs(astronaut[upper].astype(float) - wall).mean() / 3
    )
