"""The comfyui provider against a fake ComfyUI server (HTTP + websocket)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from retouch.api import Toolkit
from retouch.errors import Cancelled, InvalidRequest, ServerError
from retouch.providers.comfyui import fill, load_workflow
from retouch.types import Progress

from .conftest import box_mask
from .fakes import live
from .fakes.comfyui_api import PURPLE, FakeComfyUI


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeComfyUI]:
    service = FakeComfyUI()
    with live(service.app) as url:
        monkeypatch.setenv("COMFYUI_BASE_URL", url)
        monkeypatch.setenv("RETOUCH_REMOTE_BACKOFF", "0.01")
        yield service


def test_inpaint_follows_progress_on_the_websocket(
    fake: FakeComfyUI, small_photo: np.ndarray
) -> None:
    mask = box_mask(small_photo.shape[:2], (30, 20, 60, 45))
    reports: list[Progress] = []
    result = Toolkit().inpaint(
        small_photo,
        mask,
        "a vase",
        seed=5,
        steps=10,
        provider="comfyui",
        progress=reports.append,
        feather=0,
    )
    out = result.image.pixels
    assert (
        np.array_equal(out[mask == 0], small_photo[mask == 0]) and (out[mask > 0] == PURPLE).all()
    )
    assert [(r.step, r.total) for r in reports if r.stage == "comfyui"] == [
        (1, 4),
        (2, 4),
        (3, 4),
        (4, 4),
    ]
    sampler = next(n for n in fake.graphs[-1].values() if n["class_type"] == "KSampler")["inputs"]
    assert (sampler["seed"], sampler["steps"]) == (5, 10) and result.image.seed == 5


def test_img2img_outpaint_upscale(fake: FakeComfyUI, small_photo: np.ndarray) -> None:
    toolkit = Toolkit()
    assert np.array_equal(
        toolkit.edit(small_photo, "x", provider="comfyui").image.pixels, 255 - small_photo
    )
    wide = toolkit.outpaint(
        small_photo, left=16, right=16, provider="comfyui", feather=0
    ).image.pixels
    assert wide.shape == (64, 128, 3) and np.array_equal(wide[:, 16:112], small_photo)
    assert toolkit.upscale(small_photo, scale=2, provider="comfyui").image.pixels.shape == (
        128,
        192,
        3,
    )


def test_user_workflows_and_placeholders(
    fake: FakeComfyUI, small_photo: np.ndarray, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    graph = load_workflow("img2img")
    graph["6"]["inputs"]["sampler_name"] = "dpmpp_2m"
    (tmp_path / "img2img.json").write_text(json.dumps(graph))
    monkeypatch.setenv("COMFYUI_WORKFLOWS", str(tmp_path))
    Toolkit().edit(small_photo, "x", provider="comfyui")
    assert fake.graphs[-1]["6"]["inputs"]["sampler_name"] == "dpmpp_2m"  # the user's copy won
    with pytest.raises(InvalidRequest, match="does not fill"):
        fill({"a": {"class_type": "X", "inputs": {"v": "{{mystery}}"}}}, {"prompt": "p"})
    (tmp_path / "broken.json").write_text('{"1": {"class_type": "NoSuchNode", "inputs": {}}}')
    with pytest.raises(InvalidRequest, match="rejected the workflow"):
        Toolkit().edit(
            small_photo,
            "x",
            provider="comfyui",
            options={"workflow": str(tmp_path / "broken.json")},
        )


def test_errors_and_cancel(fake: FakeComfyUI, small_photo: np.ndarray) -> None:
    fake.fail_node = "KSampler"
    with pytest.raises(ServerError, match="CUDA out of memory"):
        Toolkit().edit(small_photo, "x", provider="comfyui")
    fake.fail_node = None
    fake.steps = 50

    def cancel(report: Progress) -> None:
        if report.stage == "comfyui" and report.step >= 2:
            raise Cancelled("stop")

    with pytest.raises(Cancelled):
        Toolkit().edit(small_photo, "x", provider="comfyui", progress=cancel)
    assert fake.interrupted
