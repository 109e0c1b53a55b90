"""A 4096 x 3072 photo with film grain (its lossless PNG is far over the services' limits)
inpainted through the OpenAI and Stability fakes: what is sent fits (OpenAI's mask under 4 MB,
Stability's whole request under 10 MiB), the result is full size, pixels outside the mask are
unchanged."""

from __future__ import annotations

import numpy as np
import pytest

from retouch.compose import resize_pixels
from retouch.providers.openai import OpenAIProvider
from retouch.providers.stability import StabilityProvider
from retouch.remote import png_bytes

from .fakes import toolkit_with
from .fakes.openai_api import KEY as OPENAI_KEY
from .fakes.openai_api import FakeOpenAI
from .fakes.stability_api import KEY as STABILITY_KEY
from .fakes.stability_api import FakeStability

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def photo(astronaut: np.ndarray) -> np.ndarray:
    big = resize_pixels(astronaut, (4096, 3072)).astype(np.int16)
    grain = np.random.default_rng(3).normal(0, 6, big.shape).astype(np.int16)
    return np.clip(big + grain, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def mask() -> np.ndarray:
    mask = np.zeros((3072, 4096), np.uint8)
    mask[600:2600, 900:3300] = 255  # most of the picture: the crop is the whole photo
    return mask


def test_the_photo_is_too_big_to_send_as_it_is(photo: np.ndarray) -> None:
    crop = photo[472:2728, 772:3428]  # the crop around the mask: 2656 x 2256
    assert len(png_bytes(crop)) > 10 * 2**20


def test_openai(monkeypatch: pytest.MonkeyPatch, photo: np.ndarray, mask: np.ndarray) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", OPENAI_KEY)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    fake = FakeOpenAI()
    result = toolkit_with(openai=OpenAIProvider(transport=fake.transport)).inpaint(
        photo, mask, "a garden", provider="openai", feather=0
    )
    [sent] = fake.sent
    assert len(sent.fields["mask"].data) < 4 * 10**6
    # The crop around the mask (2656 x 2256 with its margin) at the 2048 px working size.
    assert sent.fields["image"].image().size == (2048, 1740)
    assert sent.fields["size"] == "2048x1744"  # gpt-image-2: multiples of 16
    out = result.image.pixels
    assert out.shape == photo.shape
    assert np.array_equal(out[mask == 0], photo[mask == 0])


def test_stability(monkeypatch: pytest.MonkeyPatch, photo: np.ndarray, mask: np.ndarray) -> None:
    monkeypatch.setenv("STABILITY_API_KEY", STABILITY_KEY)
    monkeypatch.setenv("STABILITY_BASE_URL", "https://stability.fake")
    fake = FakeStability()
    result = toolkit_with(stability=StabilityProvider(transport=fake.transport)).inpaint(
        photo, mask, "a garden", provider="stability", feather=0
    )
    [sent] = fake.sent
    assert len(sent.body) <= 10 * 2**20
    assert sent.fields["image"].content_type == "image/webp"  # the image part, lossy
    assert sent.fields["mask"].content_type == "image/png"  # the mask, never
    assert sent.fields["image"].image().size == (2656, 2256)  # the crop, full resolution
    out = result.image.pixels
    assert out.shape == photo.shape
    assert np.array_equal(out[mask == 0], photo[mask == 0])
