"""The replicate provider against a fake of Replicate's predictions API."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import pytest

from retouch.api import Toolkit
from retouch.errors import AuthenticationError, ProviderTimeout

from .conftest import box_mask
from .fakes import live
from .fakes.replicate_api import TOKEN, YELLOW, FakeReplicate


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REPLICATE_API_TOKEN", TOKEN)
    monkeypatch.setenv("RETOUCH_REMOTE_BACKOFF", "0.01")


@contextmanager
def serve(service: FakeReplicate, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    with live(service.app) as url:
        monkeypatch.setenv("REPLICATE_BASE_URL", url)
        yield url


def test_inpaint_answered_within_prefer_wait(
    env: None, monkeypatch: pytest.MonkeyPatch, small_photo: np.ndarray
) -> None:
    service = FakeReplicate()
    with serve(service, monkeypatch):
        mask = box_mask(small_photo.shape[:2], (30, 20, 60, 45))
        result = Toolkit().inpaint(
            small_photo, mask, "a lamp", seed=4, n=2, provider="replicate", feather=0
        )
        assert (
            len(result.images) == 2 and result.model == "stability-ai/stable-diffusion-inpainting"
        )
        out = result.image.pixels
        assert np.array_equal(out[mask == 0], small_photo[mask == 0])
        assert np.abs(out[mask > 0].astype(int) - np.array(YELLOW)).mean() < 30
        body = service.bodies[-1]
        assert (
            body["prefer"] == "wait=60"
            and body["input"]["seed"] == 4
            and body["input"]["num_outputs"] == 2
        )


def test_polled_until_done_with_a_pinned_version(
    env: None, monkeypatch: pytest.MonkeyPatch, small_photo: np.ndarray
) -> None:
    service = FakeReplicate(polls_before_done=3)
    with serve(service, monkeypatch):
        reports = []
        result = Toolkit().upscale(
            small_photo,
            scale=2,
            provider="replicate",
            options={
                "version": "abc123",
                "poll_interval": 0.02,
                "extra_input": {"face_enhance": True},
            },
            progress=reports.append,
        )
        assert result.image.pixels.shape == (128, 192, 3) and result.model == "abc123"
        assert (
            service.bodies[-1]["path"] == "/v1/predictions"
            and service.bodies[-1]["input"]["face_enhance"] is True
        )
        assert len(reports) >= 4


def test_timeout_cancels_the_prediction(
    env: None, monkeypatch: pytest.MonkeyPatch, small_photo: np.ndarray
) -> None:
    service = FakeReplicate(never_finish=True)
    with serve(service, monkeypatch):
        with pytest.raises(ProviderTimeout, match="cancelled"):
            Toolkit().edit(
                small_photo,
                "x",
                provider="replicate",
                options={"timeout": 0.2, "poll_interval": 0.05},
            )
        assert service.predictions["p0"]["status"] == "canceled"
        monkeypatch.setenv("REPLICATE_API_TOKEN", "bad")
        with pytest.raises(AuthenticationError):
            Toolkit().edit(small_photo, "x", provider="replicate")
