"""The openai provider against a fake that refuses what OpenAI's images API refuses in 2026
(tests/fakes/openai_api.py), reached through httpx's MockTransport."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from retouch.errors import (
    AuthenticationError,
    ContentPolicy,
    ProviderTimeout,
    RateLimited,
    ServerError,
    UnsupportedOperation,
)
from retouch.providers.openai import (
    OUTPAINT_PROMPT,
    VARIATION_PROMPT,
    OpenAIProvider,
    openai_mask,
    service_size,
)
from retouch.remote import png_bytes

from .conftest import box_mask
from .fakes import live, toolkit_with
from .fakes.openai_api import KEY, MAGENTA, FakeOpenAI

EDITS = "/v1/images/edits"


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeOpenAI:
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    monkeypatch.setenv("RETOUCH_REMOTE_BACKOFF", "0.001")
    return FakeOpenAI()


@pytest.fixture
def toolkit(fake: FakeOpenAI) -> Any:
    return toolkit_with(openai=OpenAIProvider(transport=fake.transport))


@pytest.fixture
def scene(small_photo: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return small_photo, box_mask(small_photo.shape[:2], (30, 20, 60, 45))


def sent_mask(fake: FakeOpenAI) -> np.ndarray:
    return np.asarray(fake.decoded_mask())


def test_mask_is_alpha_only_zero_where_to_edit() -> None:
    mask = box_mask((4, 4), (0, 0, 2, 4))
    converted = np.asarray(Image.open(io.BytesIO(openai_mask(mask))))
    assert converted.shape == (4, 4, 4) and (converted[:, :, :3] == 0).all()
    assert (converted[:, :2, 3] == 0).all() and (converted[:, 2:, 3] == 255).all()


def test_inpaint_default_path(
    toolkit: Any, fake: FakeOpenAI, scene: tuple[np.ndarray, np.ndarray]
) -> None:
    photo, mask = scene
    result = toolkit.inpaint(photo, mask, "a red ball", provider="openai", feather=0)
    [sent] = fake.sent
    assert (sent.method, sent.path) == ("POST", EDITS)
    fields = sent.fields
    assert (fields["model"], fields["prompt"], fields["n"]) == ("gpt-image-2", "a red ball", "1")
    assert fields["size"] == "96x64"  # the work size itself: gpt-image-2 takes multiples of 16
    assert "response_format" not in fields
    sent_image = fields["image"].image()
    assert sent_image.size == (96, 64) and fields["image"].content_type == "image/png"
    alpha_mask = sent_mask(fake)
    assert (alpha_mask[:, :, :3] == 0).all()
    assert np.array_equal(alpha_mask[:, :, 3] == 0, mask > 0)
    out = result.image.pixels
    assert out.shape == photo.shape
    assert np.array_equal(out[mask == 0], photo[mask == 0])  # the service's +6 shift undone
    assert np.abs(out[mask > 0].astype(int) - np.array(MAGENTA)).mean() < 10
    assert result.model == "gpt-image-2" and result.usage["total_tokens"] == 150
    assert result.usage["output_size"] == {"width": 96, "height": 64, "by": "service"}


def test_gpt_image_1_gets_the_standard_size_nearest_in_aspect(
    toolkit: Any, fake: FakeOpenAI, scene: tuple[np.ndarray, np.ndarray]
) -> None:
    photo, mask = scene
    result = toolkit.inpaint(
        photo, mask, "x", provider="openai", options={"model": "gpt-image-1"}, feather=0
    )
    assert fake.sent[-1].fields["size"] == "1536x1024"  # 96 x 64 is 3:2
    assert result.usage["output_size"] == {
        "width": 96,
        "height": 64,
        "by": "resize",
        "service_size": [1536, 1024],
    }
    assert np.array_equal(result.image.pixels[mask == 0], photo[mask == 0])


def test_gpt_image_2_sizes() -> None:
    assert (
        service_size("gpt-image-2", (4096, 3072), None) == "3312x2480"
    )  # at most 3840 x 2160 pixels
    assert service_size("gpt-image-2", (5000, 1000), None) == "2976x992"  # aspect held at 3:1
    assert service_size("gpt-image-2", (100, 75), None) == "96x80"
    assert service_size("gpt-image-1.5", (600, 1000), None) == "1024x1536"


def test_edit_honours_the_requested_size(
    toolkit: Any, fake: FakeOpenAI, small_photo: np.ndarray
) -> None:
    exact = toolkit.edit(small_photo, "a watercolour", provider="openai", width=160, height=112)
    assert fake.sent[-1].fields["size"] == "160x112" and "mask" not in fake.sent[-1].fields
    assert exact.image.pixels.shape == (112, 160, 3)
    assert exact.usage["output_size"]["by"] == "service"
    near = toolkit.edit(small_photo, "a watercolour", provider="openai", width=150)
    assert fake.sent[-1].fields["size"] == "144x96"
    assert near.image.pixels.shape == (100, 150, 3)
    assert near.usage["output_size"] == {
        "width": 150,
        "height": 100,
        "by": "resize",
        "service_size": [144, 96],
    }


def test_variations_are_n_whole_image_edits(
    toolkit: Any, fake: FakeOpenAI, small_photo: np.ndarray
) -> None:
    result = toolkit.variations(small_photo, n=2, provider="openai")
    [sent] = fake.sent
    assert sent.path == EDITS and fake.count("POST", "/v1/images/variations") == 0
    assert sent.fields["n"] == "2" and "mask" not in sent.fields
    assert sent.fields["prompt"] == VARIATION_PROMPT and sent.fields["model"] == "gpt-image-2"
    a, b = (i.pixels for i in result.images)
    assert a.shape == b.shape == small_photo.shape and not np.array_equal(a, b)
    steered = toolkit.variations(small_photo, provider="openai", prompt="at night")
    assert fake.sent[-1].fields["prompt"] == f"{VARIATION_PROMPT} at night"
    assert len(steered.images) == 1


def test_outpaint_pads_the_canvas_and_edits_the_new_area(
    toolkit: Any, fake: FakeOpenAI, small_photo: np.ndarray
) -> None:
    result = toolkit.outpaint(small_photo, left=32, provider="openai", feather=0)
    sent = fake.sent[-1]
    assert sent.fields["prompt"] == OUTPAINT_PROMPT and sent.fields["size"] == "128x64"
    assert sent.fields["image"].image().size == (128, 64)
    alpha = sent_mask(fake)[:, :, 3]
    assert (alpha[:, :32] == 0).all() and (alpha[:, 32:] == 255).all()
    out = result.image.pixels
    assert out.shape == (64, 128, 3) and np.array_equal(out[:, 32:], small_photo)
    assert np.abs(out[:, :32].astype(int) - np.array(MAGENTA)).mean() < 10


def test_transparent_background_keeps_the_alpha(
    toolkit: Any, fake: FakeOpenAI, small_photo: np.ndarray
) -> None:
    result = toolkit.edit(
        small_photo, "cut it out", provider="openai", options={"background": "transparent"}
    )
    assert fake.sent[-1].fields["background"] == "transparent"
    alpha = result.image.pixels[:, :, 3]
    assert result.image.pixels.shape == (64, 96, 4)
    assert alpha[0, 0] == 0 and alpha[32, 48] == 255


def test_retired_and_unknown_models_are_refused_before_sending(
    toolkit: Any, fake: FakeOpenAI, scene: tuple[np.ndarray, np.ndarray]
) -> None:
    photo, mask = scene
    with pytest.raises(
        UnsupportedOperation, match=r"dall-e-2 was retired .* 2026-05-12.*gpt-image-2"
    ):
        toolkit.inpaint(photo, mask, "x", provider="openai", options={"model": "dall-e-2"})
    with pytest.raises(UnsupportedOperation, match="retired"):
        toolkit.variations(photo, provider="openai", model="dall-e-2")
    with pytest.raises(Exception, match=r"does not know the model 'sdxl'; known: gpt-image-2"):
        toolkit.edit(photo, "x", provider="openai", model="sdxl")
    assert fake.sent == []


def test_the_fake_refuses_what_the_service_refuses(fake: FakeOpenAI) -> None:
    client = httpx.Client(transport=fake.transport, base_url="https://api.openai.com/v1")
    auth = {"Authorization": f"Bearer {KEY}"}
    photo = png_bytes(np.zeros((64, 64, 3), np.uint8))
    files = {"image": ("i.png", photo, "image/png")}
    old = client.post(
        "/images/edits", headers=auth, files=files, data={"model": "dall-e-2", "prompt": "x"}
    )
    assert old.status_code == 404 and old.json()["error"]["code"] == "model_not_found"
    assert client.post("/images/variations", headers=auth, files=files).status_code == 404
    noise = np.random.default_rng(0).integers(0, 256, (1100, 1100, 4), dtype=np.uint8)
    big = {
        "image": ("i.png", png_bytes(noise[:, :, :3]), "image/png"),
        "mask": ("m.png", png_bytes(noise), "image/png"),
    }
    refused = client.post(
        "/images/edits", headers=auth, files=big, data={"prompt": "x", "model": "gpt-image-2"}
    )
    assert refused.status_code == 400 and "4MB" in refused.json()["error"]["message"]
    odd = client.post(
        "/images/edits",
        headers=auth,
        files=files,
        data={"prompt": "x", "model": "gpt-image-2", "size": "1000x1000"},
    )
    assert odd.status_code == 400 and "16" in odd.json()["error"]["message"]
    fixed = client.post(
        "/images/edits",
        headers=auth,
        files=files,
        data={"prompt": "x", "model": "gpt-image-1", "size": "1024x768"},
    )
    assert fixed.status_code == 400


@pytest.mark.slow
def test_alpha_only_masks_stay_small_where_colour_masks_do_not(astronaut: np.ndarray) -> None:
    from retouch.compose import resize_pixels

    photo = resize_pixels(astronaut, (2048, 2048))
    mask = np.zeros((2048, 2048), np.uint8)
    mask[300:1200, 900:1800] = 255
    colours_and_alpha = png_bytes(np.dstack([photo, 255 - mask]))  # what was sent before
    assert len(colours_and_alpha) > 4 * 10**6  # over the mask limit
    assert len(openai_mask(mask)) < 100_000


def test_strength_is_refused_not_ignored(
    toolkit: Any, fake: FakeOpenAI, small_photo: np.ndarray
) -> None:
    with pytest.raises(UnsupportedOperation, match="strength is not supported by openai"):
        toolkit.edit(small_photo, "x", strength=0.3, provider="openai")
    assert fake.sent == []


def test_after_a_timeout_the_edit_is_not_sent_again(
    toolkit: Any, fake: FakeOpenAI, scene: tuple[np.ndarray, np.ndarray]
) -> None:
    photo, mask = scene
    fake.script = [httpx.ReadTimeout("slow")]
    with pytest.raises(ProviderTimeout, match=r"may still be running.*not sent again.*usage"):
        toolkit.inpaint(photo, mask, "x", provider="openai")
    assert fake.count("POST", EDITS) == 1


def test_after_a_500_the_edit_is_retried(
    toolkit: Any, fake: FakeOpenAI, scene: tuple[np.ndarray, np.ndarray]
) -> None:
    photo, mask = scene
    fake.script = [httpx.Response(500, json={"error": {"message": "oops"}})]
    assert toolkit.inpaint(photo, mask, "x", provider="openai").provider == "openai"
    assert fake.count("POST", EDITS) == 2
    fake.sent.clear()
    fake.script = [httpx.Response(503, json={"error": {"message": "overloaded"}})] * 5
    with pytest.raises(ServerError, match="after 3 tries"):
        toolkit.inpaint(photo, mask, "x", provider="openai")
    assert fake.count("POST", EDITS) == 3  # 2 retries, as openai-python
    fake.sent.clear()
    fake.script = [
        httpx.Response(
            429, headers={"retry-after": "200"}, json={"error": {"message": "slow down"}}
        )
    ]
    with pytest.raises(RateLimited, match="rate limited") as limited:
        toolkit.inpaint(photo, mask, "x", provider="openai")
    assert (
        limited.value.retry_after == 200 and fake.count("POST", EDITS) == 1
    )  # over 120 s: not waited


def test_errors_are_mapped(
    toolkit: Any,
    fake: FakeOpenAI,
    scene: tuple[np.ndarray, np.ndarray],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    photo, mask = scene
    fake.script = [
        httpx.Response(
            400,
            json={
                "error": {
                    "message": "Your request was rejected by the safety system",
                    "code": "moderation_blocked",
                }
            },
        )
    ]
    with pytest.raises(ContentPolicy, match="refused the content"):
        toolkit.inpaint(photo, mask, "x", provider="openai")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-wrong")
    with pytest.raises(AuthenticationError, match="check the API key"):
        toolkit.inpaint(photo, mask, "x", provider="openai")
    monkeypatch.delenv("OPENAI_API_KEY")
    with pytest.raises(AuthenticationError, match="OPENAI_API_KEY"):
        toolkit.inpaint(photo, mask, "x", provider="openai")


@pytest.fixture
def served(fake: FakeOpenAI, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeOpenAI]:
    with live(fake.asgi()) as url:
        monkeypatch.setenv("OPENAI_BASE_URL", f"{url}/v1")
        yield fake


def test_cli_variations_and_inpaint(
    served: FakeOpenAI, tmp_path: Path, astronaut_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from retouch.cli import main

    out = tmp_path / "var.png"
    argv = [
        "variations",
        str(astronaut_file),
        "--provider",
        "openai",
        "-n",
        "2",
        "-o",
        str(out),
        "--json",
    ]
    assert main(argv) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["provider"] == "openai" and len(report["images"]) == 2
    first, second = (np.asarray(Image.open(tmp_path / name)) for name in ("var.png", "var-1.png"))
    assert first.shape == second.shape == (512, 512, 3) and not np.array_equal(first, second)
    [sent] = served.sent
    assert sent.path == EDITS and sent.fields["n"] == "2" and "mask" not in sent.fields

    mask_path = tmp_path / "m.png"
    Image.fromarray(box_mask((512, 512), (380, 20, 460, 200))).save(mask_path)
    painted = tmp_path / "out.png"
    argv = [
        "inpaint",
        str(astronaut_file),
        "--mask",
        str(mask_path),
        "--prompt",
        "a moon",
        "--provider",
        "openai",
        "-o",
        str(painted),
        "-q",
    ]
    assert main(argv) == 0
    before, after = np.asarray(Image.open(astronaut_file)), np.asarray(Image.open(painted))
    hole = np.asarray(Image.open(mask_path)) > 0
    assert np.array_equal(after[~hole], before[~hole])
