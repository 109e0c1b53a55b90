"""The stability provider against a fake that refuses what Stability's v2beta API refuses
(tests/fakes/stability_api.py), reached through httpx's MockTransport."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from retouch.errors import (
    ContentPolicy,
    InvalidRequest,
    ProviderTimeout,
    UnsupportedOperation,
)
from retouch.providers.stability import StabilityProvider
from retouch.remote import png_bytes

from .conftest import box_mask
from .fakes import live, toolkit_with
from .fakes.stability_api import CYAN, KEY, FakeStability

INPAINT = "/v2beta/stable-image/edit/inpaint"
SD3 = "/v2beta/stable-image/generate/sd3"


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeStability:
    monkeypatch.setenv("STABILITY_API_KEY", KEY)
    # Not the real host: the provider polls the real service no faster than every 10 s.
    monkeypatch.setenv("STABILITY_BASE_URL", "https://stability.fake")
    monkeypatch.setenv("RETOUCH_REMOTE_BACKOFF", "0.001")
    return FakeStability()


@pytest.fixture
def toolkit(fake: FakeStability) -> Any:
    return toolkit_with(stability=StabilityProvider(transport=fake.transport))


@pytest.fixture
def mask(small_photo: np.ndarray) -> np.ndarray:
    return box_mask(small_photo.shape[:2], (30, 20, 60, 45))


def test_inpaint_default_path(
    toolkit: Any, fake: FakeStability, small_photo: np.ndarray, mask: np.ndarray
) -> None:
    result = toolkit.inpaint(
        small_photo,
        mask,
        "a teapot",
        negative_prompt="blur",
        seed=7,
        provider="stability",
        options={"grow_mask": 5, "style_preset": "photographic"},
        feather=0,
    )
    [sent] = fake.sent
    assert (sent.method, sent.path) == ("POST", INPAINT)
    assert sent.headers["accept"] == "image/*"
    fields = sent.fields
    assert (fields["prompt"], fields["negative_prompt"], fields["seed"]) == (
        "a teapot",
        "blur",
        "7",
    )
    assert (fields["grow_mask"], fields["style_preset"], fields["output_format"]) == (
        "5",
        "photographic",
        "png",
    )
    assert fields["image"].content_type == "image/png"  # small enough to go lossless
    assert np.array_equal(np.asarray(fields["image"].image()), small_photo)
    assert np.array_equal(np.asarray(fields["mask"].image()), mask)
    out = result.image.pixels
    assert out.shape == small_photo.shape and result.image.seed == 7
    assert result.usage["output_size"] == {
        "width": 96,
        "height": 64,
        "by": "resize",
        "service_size": [144, 96],
    }
    assert np.array_equal(out[mask == 0], small_photo[mask == 0])
    assert np.abs(out[mask > 0].astype(int) - np.array(CYAN)).mean() < 40


def test_erase_and_outpaint(
    toolkit: Any, fake: FakeStability, small_photo: np.ndarray, mask: np.ndarray
) -> None:
    erased = toolkit.erase(small_photo, mask, provider="stability", seed=3)
    assert fake.sent[-1].path.endswith("/edit/erase") and erased.image.seed == 3
    assert np.array_equal(erased.image.pixels[mask == 0], small_photo[mask == 0])
    with pytest.raises(InvalidRequest, match=r"grow_mask must be 0\.\.20"):
        toolkit.erase(small_photo, mask, provider="stability", options={"grow_mask": 50})
    wide = toolkit.outpaint(
        small_photo, left=20, right=20, provider="stability", prompt="more room", feather=0
    )
    fields = fake.sent[-1].fields
    assert (fields["left"], fields["right"], fields["up"], fields["down"]) == ("20", "20", "0", "0")
    assert wide.image.pixels.shape == (64, 136, 3)
    assert np.array_equal(wide.image.pixels[:, 20:116], small_photo)


def test_img2img_is_sd3_image_to_image_with_strength(
    toolkit: Any, fake: FakeStability, small_photo: np.ndarray
) -> None:
    result = toolkit.edit(
        small_photo,
        "a watercolour",
        strength=0.35,
        negative_prompt="text",
        seed=11,
        provider="stability",
    )
    [sent] = fake.sent
    assert sent.path == SD3
    assert {k: v for k, v in sent.fields.items() if k != "image"} == {
        "mode": "image-to-image",
        "prompt": "a watercolour",
        "negative_prompt": "text",
        "strength": "0.35",
        "model": "sd3.5-large",
        "seed": "11",
        "output_format": "png",
    }
    assert result.image.pixels.shape == small_photo.shape and result.image.seed == 11
    assert result.usage["output_size"]["by"] == "resize"  # SD3 answered about 1 MP
    with pytest.raises(Exception, match=r"does not know the model 'sd3-x'; known: sd3\.5-large"):
        toolkit.edit(small_photo, "x", provider="stability", model="sd3-x")


@pytest.mark.slow
def test_variations_are_n_runs_with_distinct_seeds(
    toolkit: Any, fake: FakeStability, small_photo: np.ndarray
) -> None:
    result = toolkit.variations(small_photo, n=3, strength=0.5, seed=100, provider="stability")
    assert fake.count("POST", SD3) == 3
    assert [s.fields["seed"] for s in fake.sent] == ["100", "101", "102"]
    assert all(s.fields["strength"] == "0.5" for s in fake.sent)
    assert [i.seed for i in result.images] == [100, 101, 102]
    a, b, c = (i.pixels for i in result.images)
    assert a.shape == small_photo.shape and not np.array_equal(a, b) and not np.array_equal(b, c)
    fake.sent.clear()
    unseeded = toolkit.variations(small_photo, n=2, provider="stability")
    first, second = (int(s.fields["seed"]) for s in fake.sent)
    assert second == first + 1 and [i.seed for i in unseeded.images] == [first, second]


def test_search_modes_and_remove_background(
    toolkit: Any, fake: FakeStability, small_photo: np.ndarray
) -> None:
    replaced = toolkit.edit(
        small_photo,
        "a dog",
        provider="stability",
        options={"mode": "search-and-replace", "search_prompt": "cat"},
    )
    assert fake.sent[-1].path.endswith("/edit/search-and-replace")
    assert np.array_equal(replaced.image.pixels, 255 - small_photo)
    with pytest.raises(InvalidRequest, match="search_prompt"):
        toolkit.edit(
            small_photo, "a dog", provider="stability", options={"mode": "search-and-replace"}
        )
    cut = toolkit.remove_background(small_photo, provider="stability")
    assert cut.image.pixels.shape == (64, 96, 4) and cut.image.pixels[0, 0, 3] == 0


def test_upscale_modes_and_their_limits(
    toolkit: Any, fake: FakeStability, small_photo: np.ndarray
) -> None:
    fast = toolkit.upscale(small_photo, scale=4, provider="stability")
    assert fake.sent[-1].path.endswith("/upscale/fast")
    assert fast.image.pixels.shape == (256, 384, 3) and fast.usage["output_size"]["by"] == "service"
    conservative = toolkit.upscale(
        small_photo,
        scale=2,
        provider="stability",
        options={"mode": "conservative", "prompt": "a cat"},
    )
    assert fake.sent[-1].fields["creativity"] == "0.35"
    assert conservative.image.pixels.shape == (128, 192, 3)  # 4x from the service, resized
    reports: list[Any] = []
    creative = toolkit.upscale(
        small_photo,
        scale=4,
        provider="stability",
        model="creative",
        options={"poll_interval": 0.01, "creativity": 0.2},
        progress=reports.append,
    )
    assert creative.image.pixels.shape == (256, 384, 3) and creative.image.seed == 99
    assert fake.jobs["job0"][0] == 2 and fake.count("GET", "/v2beta/results/job0") == 3
    sent = len(fake.sent)
    megapixel = np.zeros((1000, 1200, 3), np.uint8)  # 1.2 MP: over fast upscale's 1 MP
    with pytest.raises(InvalidRequest, match=r"1,024-1,048,576 pixels.*mode=conservative"):
        toolkit.upscale(megapixel, scale=2, provider="stability")
    with pytest.raises(InvalidRequest, match="aspect ratio"):
        toolkit.upscale(np.zeros((90, 300, 3), np.uint8), scale=2, provider="stability")
    with pytest.raises(InvalidRequest, match=r"creative upscale takes creativity 0\.1-0\.5"):
        toolkit.upscale(
            small_photo, provider="stability", options={"mode": "creative", "creativity": 0.7}
        )
    with pytest.raises(InvalidRequest, match=r"conservative upscale takes creativity 0\.2-0\.5"):
        toolkit.upscale(
            small_photo, provider="stability", options={"mode": "conservative", "creativity": 0.1}
        )
    with pytest.raises(InvalidRequest, match=r"creative upscale takes 4,096-1,048,576 pixels"):
        toolkit.upscale(megapixel, scale=2, provider="stability", options={"mode": "creative"})
    with pytest.raises(
        InvalidRequest, match=r"does not know the model 'esrgan-v1-x2plus'; known: fast"
    ):
        toolkit.upscale(small_photo, scale=2, provider="stability", model="esrgan-v1-x2plus")
    assert len(fake.sent) == sent  # all refused before sending


def test_the_fake_refuses_what_the_service_refuses(fake: FakeStability) -> None:
    client = httpx.Client(transport=fake.transport, base_url="https://stability.fake")
    headers = {"authorization": f"Bearer {KEY}", "accept": "image/*"}
    noise = np.random.default_rng(1).integers(0, 256, (1900, 1900, 3), dtype=np.uint8)
    huge = png_bytes(noise)
    assert len(huge) > 10 * 2**20
    answer = client.post(
        "/v2beta/stable-image/edit/erase",
        headers=headers,
        files={"image": ("i.png", huge, "image/png"), "mask": ("m.png", huge, "image/png")},
    )
    assert answer.status_code == 413 and "10MiB" in answer.json()["errors"][0]
    square = {"image": ("i.png", png_bytes(np.zeros((1100, 1100, 3), np.uint8)), "image/png")}
    fast = client.post("/v2beta/stable-image/upscale/fast", headers=headers, files=square)
    assert fast.status_code == 400 and "1,048,576" in fast.json()["errors"][0]
    small = {"image": ("i.png", png_bytes(np.zeros((64, 64, 3), np.uint8)), "image/png")}
    loose = client.post(
        "/v2beta/stable-image/upscale/creative",
        headers={**headers, "accept": "application/json"},
        files=small,
        data={"prompt": "x", "creativity": "0.9"},
    )
    assert loose.status_code == 400 and "0.1-0.5" in loose.json()["errors"][0]


@pytest.mark.slow
def test_a_big_image_is_sent_within_10_mib(toolkit: Any, fake: FakeStability) -> None:
    noisy = np.random.default_rng(2).integers(0, 256, (1700, 2100, 3), dtype=np.uint8)
    assert len(png_bytes(noisy)) > 10 * 2**20  # lossless, the request would get a 413
    mask = box_mask((1700, 2100), (400, 400, 1200, 1200))
    toolkit.inpaint(
        noisy, mask, "x", provider="stability", options={"grow_mask": 0}, crop_margin=100_000
    )
    [sent] = fake.sent
    assert len(sent.body) <= 10 * 2**20 and sent.fields["image"].content_type == "image/webp"
    assert sent.fields["mask"].content_type == "image/png"  # the mask stays lossless
    assert np.array_equal(np.asarray(sent.fields["mask"].image()), mask)


def test_timeouts_and_500s(
    toolkit: Any, fake: FakeStability, small_photo: np.ndarray, mask: np.ndarray
) -> None:
    fake.script = [httpx.ReadTimeout("slow")]
    with pytest.raises(ProviderTimeout, match=r"not sent again.*credits"):
        toolkit.inpaint(small_photo, mask, "x", provider="stability")
    assert fake.count("POST", INPAINT) == 1
    fake.sent.clear()
    fake.script = [httpx.Response(500, json={"id": "x", "name": "internal", "errors": ["oops"]})]
    assert toolkit.inpaint(small_photo, mask, "x", provider="stability").provider == "stability"
    assert fake.count("POST", INPAINT) == 2
    fake.sent.clear()
    # Creative upscale: the create is not re-sent after a timeout; its polls are.
    fake.script = [httpx.ReadTimeout("slow")]
    with pytest.raises(ProviderTimeout, match="not sent again"):
        toolkit.upscale(small_photo, provider="stability", options={"mode": "creative"})
    assert fake.count("POST", "/v2beta/stable-image/upscale/creative") == 1
    fake.script_paths = "/v2beta/results/"
    fake.script = [httpx.ReadTimeout("slow"), httpx.Response(503, json={"errors": ["busy"]})]
    result = toolkit.upscale(
        small_photo,
        scale=4,
        provider="stability",
        options={"mode": "creative", "poll_interval": 0.01},
    )
    assert result.image.pixels.shape == (256, 384, 3)
    assert fake.count("POST", "/v2beta/stable-image/upscale/creative") == 2


def test_moderation_and_limits(
    toolkit: Any, fake: FakeStability, small_photo: np.ndarray, mask: np.ndarray
) -> None:
    fake.script = [
        httpx.Response(403, json={"id": "x", "name": "content_moderation", "errors": ["flagged"]})
    ]
    with pytest.raises(ContentPolicy, match="refused the content"):
        toolkit.inpaint(small_photo, mask, "x", provider="stability")
    with pytest.raises(InvalidRequest, match=r"1:2\.5"):
        toolkit.edit(
            np.zeros((300, 100, 3), np.uint8),
            "x",
            provider="stability",
            options={"mode": "search-and-recolor", "select_prompt": "y"},
        )
    with pytest.raises(InvalidRequest, match="seed must be"):
        toolkit.inpaint(small_photo, mask, "x", provider="stability", seed=4_294_967_295)
    with pytest.raises(InvalidRequest, match="has no model to choose"):
        toolkit.inpaint(small_photo, mask, "x", provider="stability", model="sd3.5-large")
    with pytest.raises(UnsupportedOperation, match="takes no strength"):
        toolkit.edit(
            small_photo,
            "x",
            strength=0.2,
            provider="stability",
            options={"mode": "search-and-recolor", "select_prompt": "y"},
        )


@pytest.fixture
def served(fake: FakeStability, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeStability]:
    with live(fake.asgi()) as url:
        monkeypatch.setenv("STABILITY_BASE_URL", url)
        yield fake


def test_cli_inpaint_against_the_fake(
    served: FakeStability, tmp_path: Path, astronaut_file: Path
) -> None:
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
        "stability",
        "--option",
        "style_preset=cinematic",
        "-o",
        str(out),
        "-q",
    ]
    assert main(argv) == 0
    assert served.sent[-1].fields["style_preset"] == "cinematic"
    hole = np.asarray(Image.open(mask_path)) > 0
    assert np.array_equal(
        np.asarray(Image.open(out))[~hole], np.asarray(Image.open(astronaut_file))[~hole]
    )
