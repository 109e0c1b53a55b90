"""The vertex provider against a fake Imagen capability endpoint."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

from retouch.api import Toolkit
from retouch.errors import AuthenticationError, InvalidRequest

from .conftest import box_mask
from .fakes import live
from .fakes.vertex_api import BLUE, LOCATION, PROJECT, TOKEN, FakeVertex


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeVertex]:
    service = FakeVertex()
    with live(service.app) as url:
        monkeypatch.setenv("VERTEX_BASE_URL", url)
        monkeypatch.setenv("VERTEX_PROJECT", PROJECT)
        monkeypatch.setenv("VERTEX_LOCATION", LOCATION)
        monkeypatch.setenv("VERTEX_ACCESS_TOKEN", TOKEN)
        monkeypatch.setenv("RETOUCH_REMOTE_BACKOFF", "0.01")
        yield service


def test_inpaint_erase_outpaint_and_bgswap(fake: FakeVertex, small_photo: np.ndarray) -> None:
    mask = box_mask(small_photo.shape[:2], (30, 20, 60, 45))
    toolkit = Toolkit()
    inserted = toolkit.inpaint(
        small_photo,
        mask,
        "a hat",
        n=2,
        seed=8,
        provider="vertex",
        options={"dilation": 0.03},
        feather=0,
    )
    assert len(inserted.images) == 2 and inserted.image.seed == 8
    out = inserted.image.pixels
    assert np.array_equal(out[mask == 0], small_photo[mask == 0]) and (out[mask > 0] == BLUE).all()
    sent = fake.bodies[-1]
    assert sent["parameters"] == {
        "editMode": "EDIT_MODE_INPAINT_INSERTION",
        "sampleCount": 2,
        "seed": 8,
        "addWatermark": False,
    }
    assert sent["instances"][0]["referenceImages"][1]["maskImageConfig"] == {
        "maskMode": "MASK_MODE_USER_PROVIDED",
        "dilation": 0.03,
    }
    toolkit.erase(small_photo, mask, provider="vertex")
    assert fake.bodies[-1]["parameters"]["editMode"] == "EDIT_MODE_INPAINT_REMOVAL"
    wide = toolkit.outpaint(small_photo, left=16, right=16, provider="vertex", feather=0)
    assert wide.image.pixels.shape == (64, 128, 3) and (wide.image.pixels[:, :16] == BLUE).all()
    assert np.array_equal(wide.image.pixels[:, 16:112], small_photo)
    swapped = toolkit.edit(small_photo, "a beach", provider="vertex", options={"mode": "bgswap"})
    assert (
        fake.bodies[-1]["instances"][0]["referenceImages"][1]["maskImageConfig"]["maskMode"]
        == "MASK_MODE_BACKGROUND"
    )
    assert swapped.image.pixels.shape == small_photo.shape


def test_errors(fake: FakeVertex, small_photo: np.ndarray, monkeypatch: pytest.MonkeyPatch) -> None:
    mask = box_mask(small_photo.shape[:2], (30, 20, 60, 45))
    with pytest.raises(InvalidRequest, match="1-4 images"):
        Toolkit().inpaint(small_photo, mask, "x", n=5, provider="vertex")
    monkeypatch.setenv("VERTEX_ACCESS_TOKEN", "expired")
    with pytest.raises(AuthenticationError):
        Toolkit().inpaint(small_photo, mask, "x", provider="vertex")
