"""The vertex provider against a fake of Vertex AI's Gemini and Imagen image editing
(tests/fakes/vertex_api.py), reached through httpx's MockTransport."""

from __future__ import annotations

import base64
import io
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from retouch.errors import (
    AuthenticationError,
    ContentPolicy,
    InvalidRequest,
    ProviderTimeout,
    ServerError,
)
from retouch.masks import feather
from retouch.providers.vertex import MODEL, VertexProvider

from .conftest import box_mask
from .fakes import toolkit_with
from .fakes.vertex_api import BLUE, GREEN, LOCATION, PROJECT, TOKEN, FakeVertex

MODELS = f"/v1/projects/{PROJECT}/locations/{LOCATION}/publishers/google/models"
IMAGEN = "imagen-3.0-capability-001"


@pytest.fixture(autouse=True)
def env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VERTEX_PROJECT", PROJECT)
    monkeypatch.setenv("VERTEX_LOCATION", LOCATION)
    monkeypatch.setenv("VERTEX_ACCESS_TOKEN", TOKEN)
    monkeypatch.delenv("VERTEX_BASE_URL", raising=False)
    monkeypatch.setenv("RETOUCH_REMOTE_BACKOFF", "0.001")


@pytest.fixture
def fake() -> FakeVertex:
    return FakeVertex()


@pytest.fixture
def toolkit(fake: FakeVertex) -> Any:
    return toolkit_with(vertex=VertexProvider(transport=fake.transport))


@pytest.fixture
def mask(small_photo: np.ndarray) -> np.ndarray:
    return box_mask(small_photo.shape[:2], (30, 20, 60, 45))


def inline_images(body: dict[str, Any]) -> list[np.ndarray]:
    parts = body["contents"][0]["parts"]
    return [
        np.asarray(Image.open(io.BytesIO(base64.b64decode(p["inlineData"]["data"]))))
        for p in parts
        if "inlineData" in p
    ]


def test_gemini_inpaint_is_the_default_path(
    toolkit: Any, fake: FakeVertex, small_photo: np.ndarray, mask: np.ndarray
) -> None:
    result = toolkit.inpaint(small_photo, mask, "a hat", seed=8, n=2, provider="vertex", feather=0)
    assert [s.path for s in fake.sent] == [f"{MODELS}/{MODEL}:generateContent"] * 2
    body = fake.sent[0].fields
    image, sent_mask = inline_images(body)
    assert np.array_equal(image, small_photo) and np.array_equal(sent_mask, mask)
    text = body["contents"][0]["parts"][-1]["text"]
    assert "white in the mask" in text and text.endswith("a hat")
    config = body["generationConfig"]
    assert config["responseModalities"] == ["TEXT", "IMAGE"]
    assert config["imageConfig"] == {"aspectRatio": "3:2"} and config["seed"] == 8
    assert fake.sent[1].fields["generationConfig"]["seed"] == 9
    assert [i.seed for i in result.images] == [8, 9] and result.model == MODEL
    assert result.usage["output_size"] == {
        "width": 96,
        "height": 64,
        "by": "resize",
        "service_size": [1248, 832],
    }
    out = result.image.pixels
    assert np.array_equal(out[mask == 0], small_photo[mask == 0])  # Gemini redrew it all
    assert np.abs(out[mask > 0].astype(int) - np.array(GREEN)).mean() < 30


def test_gemini_erase_outpaint_and_edit(
    toolkit: Any, fake: FakeVertex, small_photo: np.ndarray, mask: np.ndarray
) -> None:
    erased = toolkit.erase(small_photo, mask, provider="vertex")
    assert "Remove what is" in fake.sent[-1].fields["contents"][0]["parts"][-1]["text"]
    assert np.array_equal(erased.image.pixels[mask == 0], small_photo[mask == 0])
    wide = toolkit.outpaint(
        small_photo, left=16, right=16, provider="vertex", prompt="a beach", feather=0
    )
    canvas, new_area = inline_images(fake.sent[-1].fields)
    assert (
        canvas.shape == (64, 128, 3)
        and (new_area[:, :16] == 255).all()
        and (new_area[:, 16:112] == 0).all()
    )
    assert fake.sent[-1].fields["contents"][0]["parts"][-1]["text"].endswith("Guidance: a beach")
    assert wide.image.pixels.shape == (64, 128, 3)
    assert np.array_equal(wide.image.pixels[:, 16:112], small_photo)
    edited = toolkit.edit(small_photo, "night time", provider="vertex", width=192)
    assert len(inline_images(fake.sent[-1].fields)) == 1  # no mask: the whole picture
    assert edited.image.pixels.shape == (128, 192, 3)


def test_imagen_by_name_with_a_thresholded_mask(small_photo: np.ndarray, mask: np.ndarray) -> None:
    fake = FakeVertex(still_served=frozenset({IMAGEN}))
    toolkit = toolkit_with(vertex=VertexProvider(transport=fake.transport))
    soft = feather(mask, 6)  # grey edges: Imagen would edit every non-zero pixel
    result = toolkit.inpaint(
        small_photo,
        soft,
        "a hat",
        n=2,
        seed=3,
        provider="vertex",
        model=IMAGEN,
        options={"dilation": 0.03},
        feather=0,
    )
    [sent] = fake.sent
    assert sent.path == f"{MODELS}/{IMAGEN}:predict"
    assert sent.fields["parameters"] == {
        "editMode": "EDIT_MODE_INPAINT_INSERTION",
        "sampleCount": 2,
        "seed": 3,
        "addWatermark": False,
    }
    reference = sent.fields["instances"][0]["referenceImages"][1]
    assert reference["maskImageConfig"] == {"maskMode": "MASK_MODE_USER_PROVIDED", "dilation": 0.03}
    sent_mask = np.asarray(
        Image.open(io.BytesIO(base64.b64decode(reference["referenceImage"]["bytesBase64Encoded"])))
    )
    assert set(np.unique(sent_mask)) == {0, 255}
    assert np.array_equal(sent_mask > 0, soft >= 128)
    out = result.image.pixels
    assert np.array_equal(out[soft == 0], small_photo[soft == 0])
    assert (out[soft == 255] == BLUE).all()
    swapped = toolkit.edit(
        small_photo, "a beach", provider="vertex", model=IMAGEN, options={"mode": "bgswap"}
    )
    assert fake.sent[-1].fields["parameters"]["editMode"] == "EDIT_MODE_BGSWAP"
    assert swapped.image.pixels.shape == small_photo.shape


def test_discontinued_and_unknown_models(
    toolkit: Any, fake: FakeVertex, small_photo: np.ndarray, mask: np.ndarray
) -> None:
    with pytest.raises(InvalidRequest, match=r"discontinued by Google.*gemini-2\.5-flash-image"):
        toolkit.inpaint(small_photo, mask, "x", provider="vertex", model=IMAGEN)
    assert fake.count("POST", f"{MODELS}/{IMAGEN}:predict") == 1
    with pytest.raises(
        InvalidRequest, match=r"does not know the model 'imagegeneration@006'; known: gemini"
    ):
        toolkit.inpaint(small_photo, mask, "x", provider="vertex", model="imagegeneration@006")
    with pytest.raises(InvalidRequest, match="1-4 images"):
        toolkit.inpaint(small_photo, mask, "x", n=5, provider="vertex", model=IMAGEN)


def test_blocks_text_only_answers_and_errors(
    toolkit: Any,
    fake: FakeVertex,
    small_photo: np.ndarray,
    mask: np.ndarray,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with pytest.raises(ContentPolicy, match="PROHIBITED_CONTENT"):
        toolkit.inpaint(small_photo, mask, "something forbidden", provider="vertex")
    fake.script = [
        httpx.Response(
            200,
            json={"candidates": [{"content": {"parts": [{"text": "no"}]}, "finishReason": "STOP"}]},
        )
    ]
    with pytest.raises(ServerError, match="without an image"):
        toolkit.inpaint(small_photo, mask, "x", provider="vertex")
    fake.sent.clear()
    fake.script = [httpx.ReadTimeout("slow")]
    with pytest.raises(ProviderTimeout, match="not sent again"):
        toolkit.inpaint(small_photo, mask, "x", provider="vertex")
    assert len(fake.sent) == 1
    fake.sent.clear()
    fake.script = [httpx.Response(500, json={"error": {"code": 500, "message": "internal"}})]
    toolkit.inpaint(small_photo, mask, "x", provider="vertex")
    assert len(fake.sent) == 2
    monkeypatch.setenv("VERTEX_ACCESS_TOKEN", "expired")
    with pytest.raises(AuthenticationError):
        toolkit.inpaint(small_photo, mask, "x", provider="vertex")
