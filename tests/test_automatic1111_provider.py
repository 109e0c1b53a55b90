"""The automatic1111 provider against a fake A1111 API with progress, interrupt and basic auth."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

from retouch.api import Toolkit
from retouch.errors import AuthenticationError, Cancelled
from retouch.types import Progress

from .conftest import box_mask
from .fakes import live
from .fakes.a1111_api import ORANGE, FakeA1111


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeA1111]:
    service = FakeA1111(auth="me:secret")
    with live(service.app) as url:
        monkeypatch.setenv("A1111_BASE_URL", url)
        monkeypatch.setenv("A1111_AUTH", "me:secret")
        monkeypatch.setenv("RETOUCH_REMOTE_BACKOFF", "0.01")
        yield service


def test_inpaint_with_progress_and_seeds(fake: FakeA1111, small_photo: np.ndarray) -> None:
    mask = box_mask(small_photo.shape[:2], (30, 20, 60, 45))
    reports: list[Progress] = []
    result = Toolkit().inpaint(
        small_photo,
        mask,
        "a kite",
        seed=11,
        n=2,
        steps=12,
        guidance=6.0,
        strength=0.8,
        provider="automatic1111",
        options={"poll_interval": 0.05},
        progress=reports.append,
        feather=0,
    )
    assert [i.seed for i in result.images] == [11, 12] and result.model == "fake-sd15"
    out = result.image.pixels
    assert np.array_equal(out[mask == 0], small_photo[mask == 0])
    assert np.abs(out[mask > 0].astype(int) - np.array(ORANGE)).mean() < 30
    sent = fake.payloads[-1]
    assert (
        sent["steps"],
        sent["cfg_scale"],
        sent["denoising_strength"],
        sent["inpainting_fill"],
    ) == (12, 6.0, 0.8, 1)
    assert fake.progress_polls >= 2 and reports[-1].step == reports[-1].total


def test_cancel_interrupts_the_server(fake: FakeA1111, small_photo: np.ndarray) -> None:
    fake.steps, fake.step_s = 50, 0.05
    mask = box_mask(small_photo.shape[:2], (30, 20, 60, 45))

    def cancel(report: Progress) -> None:
        if report.stage == "a1111":
            raise Cancelled("stop")

    with pytest.raises(Cancelled):
        Toolkit().inpaint(
            small_photo,
            mask,
            "x",
            provider="automatic1111",
            options={"poll_interval": 0.05},
            progress=cancel,
        )
    assert fake.interrupted


def test_upscale_restore_and_auth(
    fake: FakeA1111, small_photo: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    toolkit = Toolkit()
    big = toolkit.upscale(small_photo, scale=2, provider="automatic1111", model="R-ESRGAN 4x+")
    assert (
        big.image.pixels.shape == (128, 192, 3)
        and fake.payloads[-1]["upscaler_1"] == "R-ESRGAN 4x+"
    )
    restored = toolkit.restore_faces(
        small_photo, provider="automatic1111", options={"face_restorer": "codeformer"}
    )
    assert (
        restored.image.pixels.shape == small_photo.shape
        and fake.payloads[-1]["codeformer_visibility"] == 1.0
    )
    monkeypatch.setenv("A1111_AUTH", "me:wrong")
    with pytest.raises(AuthenticationError):
        toolkit.upscale(small_photo, scale=2, provider="automatic1111")
