"""The replicate provider against a fake that refuses what Replicate refuses
(tests/fakes/replicate_api.py), reached through httpx's MockTransport."""

from __future__ import annotations

import base64
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
    Cancelled,
    InvalidRequest,
    ProviderTimeout,
)
from retouch.providers.replicate import ReplicateProvider
from retouch.remote import data_uri, png_bytes
from retouch.types import Progress

from .conftest import box_mask
from .fakes import live, toolkit_with
from .fakes.replicate_api import MODELS, TOKEN, YELLOW, FakeReplicate

INPAINTING = "stability-ai/stable-diffusion-inpainting"


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeReplicate:
    monkeypatch.setenv("REPLICATE_API_TOKEN", TOKEN)
    monkeypatch.delenv("REPLICATE_BASE_URL", raising=False)
    monkeypatch.setenv("RETOUCH_REMOTE_BACKOFF", "0.001")
    return FakeReplicate()


@pytest.fixture
def toolkit(fake: FakeReplicate) -> Any:
    return toolkit_with(replicate=ReplicateProvider(transport=fake.transport))


@pytest.fixture
def mask(small_photo: np.ndarray) -> np.ndarray:
    return box_mask(small_photo.shape[:2], (30, 20, 60, 45))


def creates(fake: FakeReplicate) -> list[Any]:
    return [s for s in fake.sent if s.method == "POST" and s.path.endswith("predictions")]


def test_inpaint_default_path_looks_the_version_up_once(
    toolkit: Any, fake: FakeReplicate, small_photo: np.ndarray, mask: np.ndarray
) -> None:
    result = toolkit.inpaint(
        small_photo, mask, "a lamp", seed=4, n=2, provider="replicate", feather=0
    )
    assert [(s.method, s.path) for s in fake.sent[:2]] == [
        ("GET", f"/v1/models/{INPAINTING}"),
        ("POST", "/v1/predictions"),
    ]
    [create] = creates(fake)
    assert create.fields["version"] == MODELS[INPAINTING][1]
    assert create.headers["prefer"] == "wait=60" and create.headers["cancel-after"] == "600s"
    inputs = create.fields["input"]
    assert (inputs["prompt"], inputs["seed"], inputs["num_outputs"]) == ("a lamp", 4, 2)
    assert inputs["image"].startswith("data:image/png;base64,")  # small: a data URI
    assert len(result.images) == 2 and result.model == INPAINTING
    out = result.image.pixels
    assert np.array_equal(out[mask == 0], small_photo[mask == 0])
    assert np.abs(out[mask > 0].astype(int) - np.array(YELLOW)).mean() < 30
    toolkit.inpaint(small_photo, mask, "again", provider="replicate")
    assert fake.count("GET", f"/v1/models/{INPAINTING}") == 1  # cached


def test_files_over_256_kb_are_uploaded(toolkit: Any, fake: FakeReplicate) -> None:
    noisy = np.random.default_rng(0).integers(0, 256, (400, 400, 3), dtype=np.uint8)
    assert len(png_bytes(noisy)) > 256 * 1024
    mask = box_mask((400, 400), (100, 100, 200, 200))
    result = toolkit.inpaint(noisy, mask, "x", provider="replicate", feather=0, crop_margin=1000)
    assert fake.count("POST", "/v1/files") == 1  # the image; the mask is small
    inputs = creates(fake)[0].fields["input"]
    assert inputs["image"].startswith("https://api.replicate.com/v1/files/")
    assert inputs["mask"].startswith("data:image/png")
    assert np.array_equal(result.image.pixels[mask == 0], noisy[mask == 0])


def test_the_fake_refuses_what_the_service_refuses(fake: FakeReplicate) -> None:
    client = httpx.Client(transport=fake.transport, base_url="https://api.replicate.com")
    auth = {"Authorization": f"Bearer {TOKEN}"}
    small = data_uri(png_bytes(np.zeros((64, 64, 3), np.uint8)))
    body = {"input": {"image": small, "scale": 2}}
    community = client.post(
        "/v1/models/nightmareai/real-esrgan/predictions", headers=auth, json=body
    )
    assert community.status_code == 404
    noisy = np.random.default_rng(1).integers(0, 256, (300, 300, 3), dtype=np.uint8)
    big = {
        "version": MODELS["nightmareai/real-esrgan"][1],
        "input": {"image": data_uri(png_bytes(noisy))},
    }
    refused = client.post("/v1/predictions", headers=auth, json=big)
    assert refused.status_code == 422 and "256kb" in refused.json()["detail"]
    assert (
        client.post(
            "/v1/predictions", headers=auth, json={"version": "nope", "input": {}}
        ).status_code
        == 422
    )


def test_flux_fill_pro_runs_on_the_official_route(
    toolkit: Any, fake: FakeReplicate, small_photo: np.ndarray, mask: np.ndarray
) -> None:
    result = toolkit.inpaint(
        small_photo,
        mask,
        "a lamp",
        seed=9,
        n=2,
        steps=30,
        guidance=3.5,
        provider="replicate",
        model="black-forest-labs/flux-fill-pro",
        feather=0,
    )
    assert fake.count("GET", "/v1/models/.*") == 0  # no version needed
    runs = creates(fake)
    assert [s.path for s in runs] == ["/v1/models/black-forest-labs/flux-fill-pro/predictions"] * 2
    assert [s.fields["input"]["seed"] for s in runs] == [9, 10]
    assert runs[0].fields["input"]["steps"] == 30 and runs[0].fields["input"]["guidance"] == 3.5
    assert [i.seed for i in result.images] == [9, 10]
    assert np.array_equal(result.image.pixels[mask == 0], small_photo[mask == 0])
    with pytest.raises(InvalidRequest, match="guidance 2-5"):
        toolkit.inpaint(
            small_photo,
            mask,
            "x",
            guidance=7.0,
            provider="replicate",
            model="black-forest-labs/flux-fill-pro",
        )


def test_outpaint_pads_and_inpaints_the_new_area(
    toolkit: Any, fake: FakeReplicate, small_photo: np.ndarray
) -> None:
    result = toolkit.outpaint(small_photo, right=32, provider="replicate", feather=0)
    inputs = creates(fake)[0].fields["input"]
    sent_mask = np.asarray(Image.open(io.BytesIO(base64.b64decode(inputs["mask"].split(",")[1]))))
    assert (
        sent_mask.shape == (64, 128)
        and (sent_mask[:, 96:] == 255).all()
        and (sent_mask[:, :96] == 0).all()
    )
    out = result.image.pixels
    assert out.shape == (64, 128, 3) and np.array_equal(out[:, :96], small_photo)
    assert np.abs(out[:, 96:].astype(int) - np.array(YELLOW)).mean() < 30


def test_edit_and_variations_are_img2img_at_the_strength(
    toolkit: Any, fake: FakeReplicate, small_photo: np.ndarray
) -> None:
    edited = toolkit.edit(small_photo, "oil painting", strength=0.3, seed=5, provider="replicate")
    inputs = creates(fake)[-1].fields["input"]
    assert (inputs["prompt_strength"], inputs["seed"], inputs["prompt"]) == (0.3, 5, "oil painting")
    assert edited.image.pixels.shape == small_photo.shape and edited.image.seed == 5
    fake.sent.clear()
    varied = toolkit.variations(small_photo, n=3, strength=0.4, seed=20, provider="replicate")
    runs = creates(fake)
    assert [r.fields["input"]["seed"] for r in runs] == [20, 21, 22]
    assert all(r.fields["input"]["prompt_strength"] == 0.4 for r in runs)
    a, b, c = (i.pixels for i in varied.images)
    assert not np.array_equal(a, b) and not np.array_equal(b, c)
    assert [i.seed for i in varied.images] == [20, 21, 22]


def test_upscale_with_real_esrgan(
    toolkit: Any, fake: FakeReplicate, small_photo: np.ndarray
) -> None:
    result = toolkit.upscale(small_photo, scale=2, provider="replicate")
    assert creates(fake)[-1].fields["version"] == MODELS["nightmareai/real-esrgan"][1]
    assert creates(fake)[-1].fields["input"]["scale"] == 2.0
    assert result.image.pixels.shape == (128, 192, 3)
    assert result.usage["output_size"]["by"] == "service"


def test_unknown_models_are_refused_with_the_known_list(
    toolkit: Any, fake: FakeReplicate, small_photo: np.ndarray, mask: np.ndarray
) -> None:
    with pytest.raises(
        InvalidRequest, match=r"does not know the model 'me/mine'; known: stability-ai"
    ):
        toolkit.inpaint(small_photo, mask, "x", provider="replicate", model="me/mine")
    with pytest.raises(InvalidRequest, match="does not do upscale"):
        toolkit.upscale(small_photo, provider="replicate", model="black-forest-labs/flux-fill-pro")
    assert fake.sent == []


def test_polling_abort_cancel_and_timeout(
    monkeypatch: pytest.MonkeyPatch, small_photo: np.ndarray
) -> None:
    monkeypatch.setenv("REPLICATE_API_TOKEN", TOKEN)
    fake = FakeReplicate(run_polls=3)
    toolkit = toolkit_with(replicate=ReplicateProvider(transport=fake.transport))
    reports: list[Progress] = []
    result = toolkit.upscale(
        small_photo,
        scale=2,
        provider="replicate",
        options={
            "version": MODELS["nightmareai/real-esrgan"][1],
            "poll_interval": 0.001,
            "extra_input": {"face_enhance": True},
        },
        progress=reports.append,
    )
    assert (
        result.image.pixels.shape == (128, 192, 3) and fake.count("GET", "/v1/predictions/p0") == 3
    )
    assert creates(fake)[-1].fields["input"]["face_enhance"] is True and len(reports) >= 4
    deadline = {"timeout": 2, "poll_interval": 0.001}  # Cancel-After: 2s
    fake.start_polls = 5  # still queued at its deadline: aborted
    with pytest.raises(ProviderTimeout, match="aborted at its Cancel-After deadline"):
        toolkit.edit(small_photo, "x", provider="replicate", options=deadline)
    assert fake.predictions["p1"]["status"] == "aborted"
    fake.start_polls = 1  # running at its deadline: canceled by the service, not by us
    with pytest.raises(ProviderTimeout, match="canceled while running, at its Cancel-After"):
        toolkit.edit(small_photo, "x", provider="replicate", options=deadline)
    assert fake.count("POST", "/v1/predictions/p2/cancel") == 0

    def stop(report: Progress) -> None:
        if report.stage == "replicate":
            raise Cancelled("stop")

    with pytest.raises(Cancelled):
        toolkit.edit(small_photo, "x", provider="replicate", progress=stop)
    assert fake.count("POST", "/v1/predictions/p3/cancel") == 1
    assert fake.predictions["p3"]["status"] == "canceled"
    fake.never_finish, fake.poll_seconds = True, 0.001  # our deadline comes first
    with pytest.raises(ProviderTimeout, match="it was cancelled"):
        toolkit.edit(
            small_photo, "x", provider="replicate", options={"timeout": 0.05, "poll_interval": 0.01}
        )
    assert fake.predictions["p4"]["status"] == "canceled"


def test_timeouts_and_500s(
    toolkit: Any,
    fake: FakeReplicate,
    small_photo: np.ndarray,
    mask: np.ndarray,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake.script_paths = "predictions$"
    fake.script = [httpx.ReadTimeout("slow")]
    with pytest.raises(ProviderTimeout, match=r"not sent again.*replicate\.com/predictions"):
        toolkit.inpaint(small_photo, mask, "x", provider="replicate")
    assert len(creates(fake)) == 1
    fake.sent.clear()
    fake.script = [httpx.Response(500, json={"detail": "oops"})]
    toolkit.inpaint(small_photo, mask, "x", provider="replicate")
    assert len(creates(fake)) == 2
    monkeypatch.setenv("REPLICATE_API_TOKEN", "bad")
    with pytest.raises(AuthenticationError):
        toolkit.inpaint(small_photo, mask, "x", provider="replicate")


@pytest.fixture
def served(fake: FakeReplicate, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeReplicate]:
    with live(fake.asgi()) as url:
        monkeypatch.setenv("REPLICATE_BASE_URL", url)
        yield fake


@pytest.mark.slow
def test_cli_upscale_with_the_default_community_model(
    served: FakeReplicate, tmp_path: Path, astronaut_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from retouch.cli import main

    out = tmp_path / "big.png"
    argv = [
        "upscale",
        str(astronaut_file),
        "--provider",
        "replicate",
        "--scale",
        "2",
        "-o",
        str(out),
        "--json",
    ]
    assert main(argv) == 0
    assert json.loads(capsys.readouterr().out)["provider"] == "replicate"
    assert np.asarray(Image.open(out)).shape == (1024, 1024, 3)
    paths = [(s.method, s.path) for s in served.sent]
    assert ("GET", "/v1/models/nightmareai/real-esrgan") in paths
    assert ("POST", "/v1/files") in paths  # the 512 px photo is over 256 KB as PNG
    [create] = [s for s in served.sent if s.path == "/v1/predictions"]
    assert create.fields["version"] == MODELS["nightmareai/real-esrgan"][1]
    assert create.fields["input"]["scale"] == 2.0
    assert ("POST", "/v1/models/nightmareai/real-esrgan/predictions") not in paths
