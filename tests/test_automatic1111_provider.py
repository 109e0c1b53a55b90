"""The automatic1111 provider against a fake of A1111's --api (tests/fakes/a1111_api.py),
reached through httpx's MockTransport: progress, interrupt, basic auth, one job at a time."""

from __future__ import annotations

import base64
import io
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from retouch import remote
from retouch.errors import AuthenticationError, Cancelled, InvalidRequest, ProviderTimeout
from retouch.providers.automatic1111 import Automatic1111Provider
from retouch.providers.comfyui import ComfyUIProvider
from retouch.types import Progress

from .conftest import box_mask
from .fakes import toolkit_with
from .fakes.a1111_api import ORANGE, FakeA1111

IMG2IMG = "/sdapi/v1/img2img"


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeA1111:
    monkeypatch.setenv("A1111_BASE_URL", "http://gpu-box:7860")
    monkeypatch.setenv("A1111_AUTH", "me:secret")
    monkeypatch.setenv("RETOUCH_REMOTE_BACKOFF", "0.001")
    return FakeA1111(auth="me:secret")


@pytest.fixture
def toolkit(fake: FakeA1111) -> Any:
    return toolkit_with(automatic1111=Automatic1111Provider(transport=fake.transport))


@pytest.fixture
def mask(small_photo: np.ndarray) -> np.ndarray:
    return box_mask(small_photo.shape[:2], (30, 20, 60, 45))


def decoded(data: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(data))))


def test_inpaint_default_path_with_progress(
    toolkit: Any, fake: FakeA1111, small_photo: np.ndarray, mask: np.ndarray
) -> None:
    reports: list[Progress] = []
    result = toolkit.inpaint(
        small_photo,
        mask,
        "a kite",
        seed=11,
        n=2,
        steps=12,
        guidance=6.0,
        strength=0.8,
        provider="automatic1111",
        options={"poll_interval": 0.02},
        progress=reports.append,
        feather=0,
    )
    [sent] = fake.payloads()
    assert (sent["prompt"], sent["seed"], sent["batch_size"], sent["n_iter"]) == (
        "a kite",
        11,
        2,
        1,
    )
    assert (sent["steps"], sent["cfg_scale"], sent["denoising_strength"]) == (12, 6.0, 0.8)
    assert (
        sent["inpainting_fill"],
        sent["inpainting_mask_invert"],
        sent["width"],
        sent["height"],
    ) == (1, 0, 96, 64)
    assert np.array_equal(decoded(sent["init_images"][0]), small_photo)
    assert np.array_equal(decoded(sent["mask"])[:, :, 0], mask)
    assert [i.seed for i in result.images] == [11, 12] and result.model == "fake-sd15"
    out = result.image.pixels
    assert np.array_equal(out[mask == 0], small_photo[mask == 0])
    assert np.abs(out[mask > 0].astype(int) - np.array(ORANGE)).mean() < 30
    assert fake.progress_polls() >= 2 and reports[-1].step == reports[-1].total


def test_outpaint_inpaints_the_padded_canvas(
    toolkit: Any, fake: FakeA1111, small_photo: np.ndarray
) -> None:
    result = toolkit.outpaint(small_photo, top=16, bottom=16, provider="automatic1111", feather=0)
    [sent] = fake.payloads()
    assert (sent["width"], sent["height"], sent["inpainting_fill"], sent["denoising_strength"]) == (
        96,
        96,
        2,
        1.0,
    )
    new_area = decoded(sent["mask"])[:, :, 0]
    assert (
        (new_area[:16] == 255).all()
        and (new_area[16:80] == 0).all()
        and (new_area[80:] == 255).all()
    )
    out = result.image.pixels
    assert out.shape == (96, 96, 3) and np.array_equal(out[16:80], small_photo)


def test_edit_size_and_variations(toolkit: Any, fake: FakeA1111, small_photo: np.ndarray) -> None:
    edited = toolkit.edit(
        small_photo, "winter", strength=0.5, provider="automatic1111", width=160, height=104
    )
    sent = fake.payloads()[-1]
    assert (sent["width"], sent["height"], sent["resize_mode"], sent["denoising_strength"]) == (
        160,
        104,
        0,
        0.5,
    )
    assert "mask" not in sent
    assert (
        edited.image.pixels.shape == (104, 160, 3)
        and edited.usage["output_size"]["by"] == "service"
    )
    varied = toolkit.variations(small_photo, n=2, strength=0.4, seed=7, provider="automatic1111")
    sent = fake.payloads()[-1]
    assert (sent["batch_size"], sent["denoising_strength"], sent["seed"]) == (2, 0.4, 7)
    assert [i.seed for i in varied.images] == [7, 8]
    assert not np.array_equal(varied.images[0].pixels, varied.images[1].pixels)


def test_a_timed_out_job_is_sent_once_and_reported_as_maybe_running(
    toolkit: Any, fake: FakeA1111, small_photo: np.ndarray, mask: np.ndarray
) -> None:
    fake.script_paths = IMG2IMG
    fake.script = [httpx.ReadTimeout("the GPU is busy")]
    with pytest.raises(ProviderTimeout) as timed_out:
        toolkit.inpaint(
            small_photo, mask, "x", provider="automatic1111", options={"poll_interval": 0.01}
        )
    message = str(timed_out.value)
    assert (
        "not sent again" in message and "may still be queued or running on your server" in message
    )
    assert "http://gpu-box:7860" in message and "/sdapi/v1/interrupt" in message
    assert fake.count("POST", IMG2IMG) == 1  # no duplicate job queued on the user's GPU


def test_a_500_is_retried(
    toolkit: Any, fake: FakeA1111, small_photo: np.ndarray, mask: np.ndarray
) -> None:
    fake.script_paths = IMG2IMG
    fake.script = [httpx.Response(500, json={"error": "RuntimeError", "detail": "boom"})]
    result = toolkit.inpaint(
        small_photo, mask, "x", provider="automatic1111", options={"poll_interval": 0.01}
    )
    assert fake.count("POST", IMG2IMG) == 2 and result.images


def test_cancel_interrupts_the_server(
    toolkit: Any, fake: FakeA1111, small_photo: np.ndarray, mask: np.ndarray
) -> None:
    fake.steps, fake.step_s = 50, 0.02

    def cancel(report: Progress) -> None:
        if report.stage == "a1111":
            raise Cancelled("stop")

    with pytest.raises(Cancelled):
        toolkit.inpaint(
            small_photo,
            mask,
            "x",
            provider="automatic1111",
            options={"poll_interval": 0.02},
            progress=cancel,
        )
    assert fake.interrupted and fake.count("POST", "/sdapi/v1/interrupt") == 1


def test_upscale_restore_and_auth(
    toolkit: Any, fake: FakeA1111, small_photo: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    big = toolkit.upscale(small_photo, scale=2, provider="automatic1111", model="R-ESRGAN 4x+")
    assert big.image.pixels.shape == (128, 192, 3)
    assert fake.payloads("/sdapi/v1/extra-single-image")[-1]["upscaler_1"] == "R-ESRGAN 4x+"
    with pytest.raises(
        InvalidRequest, match="has no upscaler 'esrgan-v1-x2plus'; it has: None, Lanczos"
    ):
        toolkit.upscale(small_photo, scale=2, provider="automatic1111", model="esrgan-v1-x2plus")
    assert len(fake.payloads("/sdapi/v1/extra-single-image")) == 1
    restored = toolkit.restore_faces(
        small_photo, provider="automatic1111", options={"face_restorer": "codeformer"}
    )
    assert restored.image.pixels.shape == small_photo.shape
    assert fake.payloads("/sdapi/v1/extra-single-image")[-1]["codeformer_visibility"] == 1.0
    monkeypatch.setenv("A1111_AUTH", "me:wrong")
    with pytest.raises(AuthenticationError):
        toolkit.upscale(small_photo, scale=2, provider="automatic1111")


def test_the_shared_local_url_is_probed(
    fake: FakeA1111, monkeypatch: pytest.MonkeyPatch, small_photo: np.ndarray
) -> None:
    monkeypatch.delenv("A1111_BASE_URL")
    monkeypatch.delenv("COMFYUI_BASE_URL", raising=False)
    monkeypatch.setattr(remote, "_DETECTED", {})
    a1111 = Automatic1111Provider(transport=fake.transport)
    comfy = ComfyUIProvider(transport=fake.transport)  # the same server: an A1111
    assert not a1111.status().ready and "STABLE_DIFFUSION_LOCAL_BASE_URL" in a1111.status().detail
    monkeypatch.setenv("STABLE_DIFFUSION_LOCAL_BASE_URL", "http://sd-box:7860")
    assert a1111.status().ready and not comfy.status().ready
    assert fake.count("GET", "/sdapi/v1/options") == 1  # probed once, then remembered
    result = toolkit_with(automatic1111=a1111).upscale(
        small_photo, scale=2, provider="automatic1111"
    )
    assert result.image.pixels.shape == (128, 192, 3)
