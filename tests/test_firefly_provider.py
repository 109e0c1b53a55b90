"""The firefly provider against a fake of Adobe IMS and the Firefly Services API
(tests/fakes/firefly_api.py), reached through httpx's MockTransport."""

from __future__ import annotations

import io
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from retouch.errors import AuthenticationError, Cancelled, InvalidRequest, ProviderTimeout
from retouch.providers.firefly import SCOPE, FireflyProvider
from retouch.types import Progress

from .conftest import box_mask
from .fakes import toolkit_with
from .fakes.firefly_api import CLIENT_ID, RED, SECRET, FakeFirefly

FILL = "/v3/images/fill-async"


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeFirefly:
    monkeypatch.setenv("FIREFLY_CLIENT_ID", CLIENT_ID)
    monkeypatch.setenv("FIREFLY_CLIENT_SECRET", SECRET)
    monkeypatch.delenv("FIREFLY_BASE_URL", raising=False)
    monkeypatch.delenv("FIREFLY_IMS_URL", raising=False)
    monkeypatch.setenv("RETOUCH_REMOTE_BACKOFF", "0.001")
    return FakeFirefly()


@pytest.fixture
def provider(fake: FakeFirefly) -> FireflyProvider:
    return FireflyProvider(transport=fake.transport)


@pytest.fixture
def toolkit(provider: FireflyProvider) -> Any:
    return toolkit_with(firefly=provider)


@pytest.fixture
def mask(small_photo: np.ndarray) -> np.ndarray:
    return box_mask(small_photo.shape[:2], (30, 20, 60, 45))


FAST = {"poll_interval": 0.001}


def test_inpaint_is_generative_fill(
    toolkit: Any, fake: FakeFirefly, small_photo: np.ndarray, mask: np.ndarray
) -> None:
    result = toolkit.inpaint(
        small_photo,
        mask,
        "a red kite",
        negative_prompt="text",
        n=2,
        seed=40,
        provider="firefly",
        options=FAST,
        feather=0,
    )
    token, image_upload, mask_upload, create = fake.sent[:4]
    assert (token.method, token.path) == ("POST", "/ims/token/v3")
    assert token.fields == {
        "grant_type": "client_credentials",
        "client_id": CLIENT_ID,
        "client_secret": SECRET,
        "scope": SCOPE,
    }
    assert [s.path for s in (image_upload, mask_upload)] == ["/v2/storage/image"] * 2
    assert image_upload.headers["content-type"] == "image/png"
    assert image_upload.headers["x-api-key"] == CLIENT_ID
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(mask_upload.body))), mask)
    assert create.path == FILL and create.fields == {
        "numVariations": 2,
        "seeds": [40, 41],
        "image": {"source": {"uploadId": "u0"}},
        "mask": {"source": {"uploadId": "u1"}},
        "prompt": "a red kite",
        "negativePrompt": "text",
    }
    assert fake.count("GET", "/v3/status/.*") == 3  # pending -> running -> succeeded
    downloads = [s for s in fake.sent if s.path.startswith("/s3/")]
    assert len(downloads) == 2 and all("authorization" not in s.headers for s in downloads)
    assert [i.seed for i in result.images] == [40, 41]
    out = result.image.pixels
    assert np.array_equal(out[mask == 0], small_photo[mask == 0])
    assert (out[mask > 0] == RED).all()


def test_the_token_is_kept_and_renewed_when_refused(
    toolkit: Any, fake: FakeFirefly, small_photo: np.ndarray, mask: np.ndarray
) -> None:
    toolkit.inpaint(small_photo, mask, "x", provider="firefly", options=FAST)
    toolkit.inpaint(small_photo, mask, "y", provider="firefly", options=FAST)
    assert fake.count("POST", "/ims/token/v3") == 1
    fake.expire_tokens()
    toolkit.inpaint(small_photo, mask, "z", provider="firefly", options=FAST)
    assert fake.count("POST", "/ims/token/v3") == 2 and fake.count("POST", FILL) == 3


def test_outpaint_is_generative_expand(
    toolkit: Any, fake: FakeFirefly, small_photo: np.ndarray
) -> None:
    wide = toolkit.outpaint(
        small_photo, left=20, right=12, top=8, provider="firefly", options=FAST, feather=0
    )
    [body] = fake.bodies("expand")
    assert body["size"] == {"width": 128, "height": 72}
    assert body["placement"] == {"inset": {"left": 20, "top": 8, "right": 12, "bottom": 0}}
    out = wide.image.pixels
    assert out.shape == (72, 128, 3) and np.array_equal(out[8:, 20:116], small_photo)
    assert (out[:8] == RED).all()
    huge = toolkit.outpaint(small_photo, right=3000, provider="firefly", options=FAST, feather=0)
    body = fake.bodies("expand")[-1]
    assert max(body["size"].values()) <= 2688  # asked smaller, scaled back
    assert huge.image.pixels.shape == (64, 3096, 3)
    assert np.array_equal(huge.image.pixels[:, :96], small_photo)
    assert huge.usage["output_size"]["by"] == "resize"


def test_variations_are_similar_images(
    toolkit: Any, fake: FakeFirefly, small_photo: np.ndarray
) -> None:
    result = toolkit.variations(small_photo, n=3, seed=7, provider="firefly", options=FAST)
    [body] = fake.bodies("generate-similar")
    assert (body["numVariations"], body["seeds"]) == (3, [7, 8, 9])
    assert [i.seed for i in result.images] == [7, 8, 9]
    a, b = result.images[0].pixels, result.images[1].pixels
    assert a.shape == small_photo.shape and not np.array_equal(a, b)


def test_limits_are_checked_before_sending(
    toolkit: Any, fake: FakeFirefly, small_photo: np.ndarray, mask: np.ndarray
) -> None:
    with pytest.raises(InvalidRequest, match="1-4 images"):
        toolkit.inpaint(small_photo, mask, "x", n=5, provider="firefly")
    with pytest.raises(InvalidRequest, match="seeds go up to"):
        toolkit.inpaint(small_photo, mask, "x", seed=2**32 - 1, provider="firefly")
    with pytest.raises(InvalidRequest, match="1024 characters"):
        toolkit.inpaint(small_photo, mask, "x" * 1025, provider="firefly")
    assert fake.count("POST", FILL) == 0


def test_cancel_timeout_and_retries(
    toolkit: Any, fake: FakeFirefly, small_photo: np.ndarray, mask: np.ndarray
) -> None:
    def stop(report: Progress) -> None:
        if report.stage == "firefly":
            raise Cancelled("stop")

    with pytest.raises(Cancelled):
        toolkit.inpaint(small_photo, mask, "x", provider="firefly", options=FAST, progress=stop)
    assert fake.count("PUT", "/v3/cancel/.*") == 1
    fake.polls = 10_000
    with pytest.raises(ProviderTimeout, match="it was cancelled"):
        toolkit.inpaint(
            small_photo,
            mask,
            "x",
            provider="firefly",
            options={"poll_interval": 0.01, "timeout": 0.1},
        )
    assert fake.count("PUT", "/v3/cancel/.*") == 2
    fake.polls = 1
    fake.sent.clear()
    fake.script_paths = FILL
    fake.script = [httpx.ReadTimeout("slow")]
    with pytest.raises(ProviderTimeout, match="not sent again"):
        toolkit.inpaint(small_photo, mask, "x", provider="firefly", options=FAST)
    assert fake.count("POST", FILL) == 1
    fake.sent.clear()
    fake.script = [httpx.Response(500, json={"error_code": "internal", "message": "oops"})]
    toolkit.inpaint(small_photo, mask, "x", provider="firefly", options=FAST)
    assert fake.count("POST", FILL) == 2


def test_credentials(
    monkeypatch: pytest.MonkeyPatch, fake: FakeFirefly, small_photo: np.ndarray, mask: np.ndarray
) -> None:
    monkeypatch.setenv("FIREFLY_CLIENT_SECRET", "wrong")
    with pytest.raises(AuthenticationError, match="IMS refused the credentials"):
        toolkit_with(firefly=FireflyProvider(transport=fake.transport)).inpaint(
            small_photo, mask, "x", provider="firefly"
        )
    monkeypatch.delenv("FIREFLY_CLIENT_SECRET")
    status = FireflyProvider().status()
    assert not status.ready and "FIREFLY_CLIENT_SECRET" in status.detail


def test_cli_lists_firefly(
    fake: FakeFirefly, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import json

    from retouch.cli import main

    assert main(["providers", "--json"]) == 0
    listed = {p["name"]: p for p in json.loads(capsys.readouterr().out)}
    assert listed["firefly"]["ready"] and listed["firefly"]["kind"] == "remote"
    assert set(listed["firefly"]["operations"]) == {"inpaint", "outpaint", "variations"}
    monkeypatch.delenv("FIREFLY_CLIENT_ID")
    assert main(["providers"]) == 0
    lines = capsys.readouterr().out.splitlines()
    at = next(i for i, x in enumerate(lines) if x.startswith("firefly"))
    assert "not ready" in lines[at] and "export FIREFLY_CLIENT_ID" in lines[at + 1]
