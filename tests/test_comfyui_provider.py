"""The comfyui provider against a fake ComfyUI server (HTTP + websocket, tests/fakes/
comfyui_api.py), served live: the websocket protocol needs a socket."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from retouch import remote
from retouch.errors import Cancelled, InvalidRequest, ProviderTimeout, ServerError
from retouch.providers.automatic1111 import Automatic1111Provider
from retouch.providers.comfyui import ComfyUIProvider, fill, load_workflow
from retouch.remote import png_bytes
from retouch.types import Progress

from .conftest import box_mask
from .fakes import live, toolkit_with
from .fakes.comfyui_api import PURPLE, FakeComfyUI


@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[FakeComfyUI, str]]:
    service = FakeComfyUI()
    with live(service.app) as url:
        monkeypatch.setenv("COMFYUI_BASE_URL", url)
        monkeypatch.setenv("RETOUCH_REMOTE_BACKOFF", "0.001")
        yield service, url


@pytest.fixture
def fake(served: tuple[FakeComfyUI, str]) -> FakeComfyUI:
    return served[0]


@pytest.fixture
def toolkit(fake: FakeComfyUI) -> Any:
    return toolkit_with(comfyui=ComfyUIProvider())


@pytest.fixture
def mask(small_photo: np.ndarray) -> np.ndarray:
    return box_mask(small_photo.shape[:2], (30, 20, 60, 45))


def graph_of(fake: FakeComfyUI) -> dict[str, Any]:
    return list(fake.graphs.values())[-1]


def node(graph: dict[str, Any], kind: str) -> dict[str, Any]:
    return next(n for n in graph.values() if n["class_type"] == kind)["inputs"]


def test_inpaint_uses_inpaint_model_conditioning_and_waits_for_the_history(
    toolkit: Any, fake: FakeComfyUI, small_photo: np.ndarray, mask: np.ndarray
) -> None:
    reports: list[Progress] = []
    result = toolkit.inpaint(
        small_photo,
        mask,
        "a vase",
        seed=5,
        steps=10,
        strength=0.5,
        provider="comfyui",
        progress=reports.append,
        feather=0,
    )
    graph = graph_of(fake)
    assert "VAEEncodeForInpaint" not in {n["class_type"] for n in graph.values()}
    conditioning = node(graph, "InpaintModelConditioning")
    assert conditioning["noise_mask"] is True and conditioning["mask"] == ["2", 1]
    sampler = node(graph, "KSampler")
    assert (sampler["seed"], sampler["steps"], sampler["denoise"]) == (5, 10, 0.5)
    ic = next(k for k, n in graph.items() if n["class_type"] == "InpaintModelConditioning")
    assert (sampler["positive"], sampler["negative"], sampler["latent_image"]) == (
        [ic, 0],
        [ic, 1],
        [ic, 2],
    )
    assert [(r.step, r.total) for r in reports if r.total == 4] == [(1, 4), (2, 4), (3, 4), (4, 4)]
    # execution_success came while the history was still empty: the provider waited.
    [pid] = fake.history_at_success
    assert fake.history_at_success[pid] is False and result.image.seed == 5
    out = result.image.pixels
    assert np.array_equal(out[mask == 0], small_photo[mask == 0])
    halfway = (small_photo[mask > 0].astype(float) + np.array(PURPLE)) / 2  # denoise 0.5: no grey
    assert np.abs(out[mask > 0].astype(float) - halfway).max() <= 1.0


def test_an_inpainting_checkpoint_by_name(
    toolkit: Any, fake: FakeComfyUI, small_photo: np.ndarray, mask: np.ndarray
) -> None:
    toolkit.inpaint(
        small_photo,
        mask,
        "x",
        provider="comfyui",
        options={"inpaint_checkpoint": "sd-v1-5-inpainting.ckpt"},
    )
    assert node(graph_of(fake), "CheckpointLoaderSimple")["ckpt_name"] == "sd-v1-5-inpainting.ckpt"


@pytest.mark.slow
def test_img2img_outpaint_upscale(toolkit: Any, fake: FakeComfyUI, small_photo: np.ndarray) -> None:
    assert np.array_equal(
        toolkit.edit(small_photo, "x", provider="comfyui").image.pixels, 255 - small_photo
    )
    wide = toolkit.outpaint(
        small_photo, left=16, right=16, provider="comfyui", feather=0
    ).image.pixels
    assert "InpaintModelConditioning" in {n["class_type"] for n in graph_of(fake).values()}
    assert wide.shape == (64, 128, 3) and np.array_equal(wide[:, 16:112], small_photo)
    assert np.abs(wide[:, :16].astype(int) - np.array(PURPLE)).mean() < 2
    assert toolkit.upscale(small_photo, scale=2, provider="comfyui").image.pixels.shape == (
        128,
        192,
        3,
    )


def test_node_errors_are_shown(
    toolkit: Any,
    fake: FakeComfyUI,
    small_photo: np.ndarray,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    graph = load_workflow("img2img")
    graph["6"]["inputs"]["sampler_name"] = "dpmpp_2m"
    (tmp_path / "img2img.json").write_text(json.dumps(graph))
    monkeypatch.setenv("COMFYUI_WORKFLOWS", str(tmp_path))
    toolkit.edit(small_photo, "x", provider="comfyui")
    assert graph_of(fake)["6"]["inputs"]["sampler_name"] == "dpmpp_2m"  # the user's copy won
    with pytest.raises(InvalidRequest, match="does not fill"):
        fill({"a": {"class_type": "X", "inputs": {"v": "{{mystery}}"}}}, {"prompt": "p"})
    (tmp_path / "broken.json").write_text(
        '{"1": {"class_type": "NoSuchNode", "inputs": {}},'
        ' "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0]}}}'
    )
    with pytest.raises(InvalidRequest) as refused:
        toolkit.edit(
            small_photo,
            "x",
            provider="comfyui",
            options={"workflow": str(tmp_path / "broken.json")},
        )
    message = str(refused.value)
    assert "node 1 (NoSuchNode): Cannot execute because node NoSuchNode does not exist" in message
    assert "node 2 (SaveImage): Required input is missing (filename_prefix)" in message


def _other_clients_prompt(url: str, steps_s: float) -> str:
    """Queue a prompt of another user straight on the server; returns its id."""
    with httpx.Client(base_url=url) as client:
        name = f"other-{uuid.uuid4().hex}.png"
        rgba = np.dstack([np.zeros((64, 64, 3), np.uint8), np.full((64, 64), 255, np.uint8)])
        client.post("/upload/image", files={"image": (name, png_bytes(rgba), "image/png")})
        graph = fill(
            load_workflow("img2img"),
            {
                "checkpoint": "c",
                "image": name,
                "prompt": "",
                "negative_prompt": "",
                "seed": 1,
                "steps": 20,
                "cfg": 7.0,
                "denoise": 1.0,
            },
        )
        return str(
            client.post("/prompt", json={"prompt": graph, "client_id": "someone"}).json()[
                "prompt_id"
            ]
        )


@pytest.mark.slow
def test_cancel_stops_only_our_prompt(
    served: tuple[FakeComfyUI, str], toolkit: Any, small_photo: np.ndarray
) -> None:
    fake, url = served
    fake.steps, fake.step_s = 20, 0.05
    theirs = _other_clients_prompt(url, 1.0)

    def cancel_at_once(report: Progress) -> None:
        raise Cancelled("stop")

    with pytest.raises(Cancelled):
        toolkit.edit(small_photo, "x", provider="comfyui", progress=cancel_at_once)
    ours = next(pid for pid in fake.graphs if pid != theirs)
    assert fake.deleted == [ours] and fake.interrupts == []  # queued: taken off the queue
    deadline = time.time() + 10
    while theirs not in fake.history and time.time() < deadline:
        time.sleep(0.05)
    assert fake.history[theirs]["status"]["status_str"] == "success"  # theirs ran on

    def cancel_when_running(report: Progress) -> None:
        if report.total == fake.steps and report.step >= 2:
            raise Cancelled("stop")

    with pytest.raises(Cancelled):
        toolkit.edit(small_photo, "x", provider="comfyui", progress=cancel_when_running)
    running = list(fake.graphs)[-1]
    assert fake.interrupts == [running]  # /interrupt {"prompt_id": ours}, not a bare one


@pytest.mark.slow
def test_timeouts_and_500s(toolkit: Any, fake: FakeComfyUI, small_photo: np.ndarray) -> None:
    fake.prompt_delay = 1.0  # the server queues the prompt but answers late
    result = toolkit.edit(small_photo, "x", provider="comfyui", options={"http_timeout": 0.3})
    assert fake.prompt_posts == 1 and len(fake.graphs) == 1  # looked up in /queue, not re-sent
    assert np.array_equal(result.image.pixels, 255 - small_photo)
    fake.prompt_delay = 0.0
    fake.prompt_failures = 1
    toolkit.edit(small_photo, "x", provider="comfyui")
    assert fake.prompt_posts == 3 and len(fake.graphs) == 2  # the 500 was retried once
    fake.steps, fake.step_s = 100, 0.05
    with pytest.raises(ProviderTimeout, match=r"did not finish in 0\.4 s; it was cancelled"):
        toolkit.edit(small_photo, "x", provider="comfyui", options={"timeout": 0.4})
    assert fake.interrupts[-1] == list(fake.graphs)[-1]


def test_execution_errors(toolkit: Any, fake: FakeComfyUI, small_photo: np.ndarray) -> None:
    fake.fail_node = "KSampler"
    with pytest.raises(ServerError, match="CUDA out of memory"):
        toolkit.edit(small_photo, "x", provider="comfyui")


def test_the_shared_local_url_is_probed(
    served: tuple[FakeComfyUI, str], monkeypatch: pytest.MonkeyPatch, small_photo: np.ndarray
) -> None:
    _, url = served
    monkeypatch.delenv("COMFYUI_BASE_URL")
    monkeypatch.delenv("A1111_BASE_URL", raising=False)
    monkeypatch.setattr(remote, "_DETECTED", {})
    monkeypatch.setenv("STABLE_DIFFUSION_LOCAL_BASE_URL", url)
    comfy, a1111 = ComfyUIProvider(), Automatic1111Provider()
    assert comfy.status().ready and comfy.status().detail == url
    assert not a1111.status().ready
    result = toolkit_with(comfyui=comfy).upscale(small_photo, scale=2, provider="comfyui")
    assert result.image.pixels.shape == (128, 192, 3)


@pytest.mark.slow
def test_a_prompt_can_run_with_no_websocket(
    fake: FakeComfyUI, small_photo: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    import websockets.sync.client

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise OSError("no websocket here")

    monkeypatch.setattr(websockets.sync.client, "connect", refuse)
    result = toolkit_with(comfyui=ComfyUIProvider()).edit(small_photo, "x", provider="comfyui")
    assert np.array_equal(result.image.pixels, 255 - small_photo)
