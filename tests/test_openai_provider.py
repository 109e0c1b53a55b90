"""The openai provider against a fake that enforces OpenAI's documented images contract."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from retouch.api import Toolkit
from retouch.errors import (
    AuthenticationError,
    ContentPolicy,
    InvalidRequest,
    RateLimited,
    ServerError,
)
from retouch.providers.openai import openai_mask

from .conftest import box_mask
from .fakes import live
from .fakes.openai_api import KEY, MAGENTA, FakeOpenAI


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeOpenAI]:
    service = FakeOpenAI()
    with live(service.app) as url:
        monkeypatch.setenv("OPENAI_BASE_URL", f"{url}/v1")
        monkeypatch.setenv("OPENAI_API_KEY", KEY)
        monkeypatch.setenv("RETOUCH_REMOTE_BACKOFF", "0.01")
        yield service


@pytest.fixture
def scene(small_photo: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return small_photo, box_mask(small_photo.shape[:2], (30, 20, 60, 45))


def test_mask_conversion_is_alpha_zero_where_to_edit() -> None:
    import io

    rgb = np.full((4, 4, 3), 9, np.uint8)
    mask = box_mask((4, 4), (0, 0, 2, 4))
    converted = np.asarray(Image.open(io.BytesIO(openai_mask(rgb, mask))))
    assert (
        converted.shape == (4, 4, 4)
        and (converted[:, :2, 3] == 0).all()
        and (converted[:, 2:, 3] == 255).all()
    )
    assert (converted[:, :, :3] == 9).all()


def test_gpt_image_inpaint_resized_back_and_outside_restored(
    fake: FakeOpenAI, scene: tuple[np.ndarray, np.ndarray]
) -> None:
    photo, mask = scene
    result = Toolkit().inpaint(photo, mask, "a red ball", provider="openai", feather=0)
    out = result.image.pixels
    assert out.shape == photo.shape  # the service answered 1024 x 1024
    assert np.array_equal(out[mask == 0], photo[mask == 0])  # its colour shift is undone outside
    inside = out[mask > 0].astype(int)
    assert np.abs(inside - np.array(MAGENTA)).mean() < 40
    assert result.usage["total_tokens"] == 150 and result.model == "gpt-image-1"
    assert fake.calls[-1]["model"] == "gpt-image-1" and fake.calls[-1]["prompt"] == "a red ball"


def test_dalle2_gets_a_square_of_an_allowed_size(
    fake: FakeOpenAI, scene: tuple[np.ndarray, np.ndarray]
) -> None:
    photo, mask = scene  # 96 x 64: padded to a 256 square by the provider
    result = Toolkit().inpaint(
        photo, mask, "a red ball", provider="openai", options={"model": "dall-e-2"}, n=2
    )
    assert len(result.images) == 2 and all(i.pixels.shape == photo.shape for i in result.images)
    assert fake.calls[-1]["size"] == "256x256" and fake.calls[-1]["response_format"] == "b64_json"
    assert np.array_equal(result.image.pixels[mask == 0], photo[mask == 0])
    with pytest.raises(InvalidRequest, match="length limit"):
        Toolkit().inpaint(photo, mask, "x" * 1001, provider="openai", options={"model": "dall-e-2"})
    assert len(fake.calls) == 1  # refused before sending


def test_variations_from_urls(fake: FakeOpenAI, small_photo: np.ndarray) -> None:
    result = Toolkit().variations(small_photo, n=2, provider="openai")
    a, b = (i.pixels for i in result.images)
    assert a.shape == small_photo.shape and not np.array_equal(a, b) and result.model == "dall-e-2"


def test_errors_are_mapped_and_retried(
    fake: FakeOpenAI, scene: tuple[np.ndarray, np.ndarray], monkeypatch: pytest.MonkeyPatch
) -> None:
    photo, mask = scene
    toolkit = Toolkit()
    fake.script = [
        (429, {"retry-after": "0"}, {"error": {"message": "slow down"}}),
        (500, {}, {"error": {"message": "oops"}}),
    ]
    assert (
        toolkit.inpaint(photo, mask, "x", provider="openai").provider == "openai"
    )  # retried twice, then fine
    fake.script = [(429, {"retry-after": "0"}, {"error": {"message": "slow down"}})] * 5
    with pytest.raises(RateLimited, match="openai: rate limited") as limited:
        toolkit.inpaint(photo, mask, "x", provider="openai")
    assert limited.value.retry_after == 0
    fake.script = [(503, {}, {"error": {"message": "overloaded"}})] * 5
    with pytest.raises(ServerError, match="after 4 tries"):
        toolkit.inpaint(photo, mask, "x", provider="openai")
    fake.script = [
        (
            400,
            {},
            {
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


def test_cli_inpaint_against_the_fake(
    fake: FakeOpenAI, tmp_path: Path, astronaut_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    from retouch.cli import main

    mask_path = tmp_path / "m.png"
    Image.fromarray(box_mask((512, 512), (380, 20, 460, 200))).save(mask_path)
    out = tmp_path / "out.png"
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
        str(out),
        "--json",
    ]
    assert main(argv) == 0
    assert json.loads(capsys.readouterr().out)["provider"] == "openai"
    before, after = np.asarray(Image.open(astronaut_file)), np.asarray(Image.open(out))
    hole = np.asarray(Image.open(mask_path)) > 0
    assert np.array_equal(after[~hole], before[~hole])
    assert main(["providers", "--json"]) == 0
    assert next(p for p in json.loads(capsys.readouterr().out) if p["name"] == "openai")["ready"]
