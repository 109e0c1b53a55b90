"""The HTTP service: the official OpenAI client, /sd-inpaint, native routes, jobs, limits, SSRF."""

from __future__ import annotations

import base64
import io
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from retouch.api import Toolkit
from retouch.errors import InvalidRequest
from retouch.server import ServerSettings, create_app, urlfetch
from retouch.types import ImageResult, OperationSpec, ProviderInfo, ProviderStatus, ResultImage

from .fakes import live


def png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, "PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    from skimage import data

    return np.ascontiguousarray(data.astronaut()[::4, ::4])  # 128 x 128


@pytest.fixture(scope="module")
def hole() -> np.ndarray:
    mask = np.zeros((128, 128), np.uint8)
    mask[20:50, 90:115] = 255
    return mask


class Shuffler:
    """A variations provider for the tests: real, simple work (each variation a different
    flip/roll of the input), since no local provider does variations without diffusion."""

    info = ProviderInfo(
        name="shuffler",
        kind="local",
        description="test variations",
        operations={"variations": OperationSpec(honours=frozenset({"n", "seed"}))},
    )

    def status(self) -> ProviderStatus:
        return ProviderStatus(True)

    def run(self, request, progress):  # type: ignore[no-untyped-def]
        base = request.image.pixels
        images = [
            ResultImage(pixels=np.ascontiguousarray(np.roll(base, 7 * (i + 1), axis=1)), seed=i)
            for i in range(request.n)
        ]
        return ImageResult(images=images, provider="shuffler")


class Slow:
    """Sleeps, to fill queues in the overload tests."""

    info = ProviderInfo(
        name="slow",
        kind="local",
        description="test",
        operations={"erase": OperationSpec()},
        priority=-1,
    )

    def status(self) -> ProviderStatus:
        return ProviderStatus(True)

    def run(self, request, progress):  # type: ignore[no-untyped-def]
        for step in range(10):
            progress(__import__("retouch.types", fromlist=["Progress"]).Progress("sleep", step, 10))
            time.sleep(0.05)
        return ImageResult(
            images=[ResultImage(pixels=request.image.pixels.copy())], provider="slow"
        )


class Broken:
    info = ProviderInfo(
        name="broken",
        kind="local",
        description="test",
        operations={"erase": OperationSpec()},
        priority=-1,
    )

    def status(self) -> ProviderStatus:
        return ProviderStatus(True)

    def run(self, request, progress):  # type: ignore[no-untyped-def]
        raise RuntimeError("secret internal detail /etc/passwd")


def toolkit() -> Toolkit:
    return Toolkit(providers={"shuffler": Shuffler(), "slow": Slow(), "broken": Broken()})


# --- the official OpenAI client ------------------------------------------------------------------


@pytest.mark.slow
def test_openai_client_edit_and_variations(photo: np.ndarray, hole: np.ndarray) -> None:
    import openai

    rgba = np.dstack(
        [photo, np.where(hole > 0, 0, 255).astype(np.uint8)]
    )  # OpenAI: transparent = edit
    settings = ServerSettings(api_keys=frozenset({"sk-test"}))
    with live(create_app(toolkit(), settings)) as url:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="sk-test", max_retries=0)
        edited = client.images.edit(
            image=("photo.png", png(photo)),
            mask=("mask.png", png(rgba)),
            prompt="remove the object",
            model="retouch-erase",
        )
        out = np.asarray(Image.open(io.BytesIO(base64.b64decode(edited.data[0].b64_json))))
        assert out.shape == photo.shape
        assert np.array_equal(out[hole == 0], photo[hole == 0])
        assert np.abs(out.astype(int) - photo.astype(int))[hole > 0].mean() > 3
        assert edited.created > 0 and edited.usage is not None

        as_url = client.images.edit(
            image=("photo.png", png(photo)),
            mask=("mask.png", png(rgba)),
            prompt="x",
            model="classic",
            response_format="url",
            size="256x256",
        )
        fetched = httpx.get(as_url.data[0].url, headers={"Authorization": "Bearer sk-test"})
        assert Image.open(io.BytesIO(fetched.content)).size == (256, 256)

        variations = client.images.create_variation(
            image=("photo.png", png(photo)), n=2, model="retouch-variations"
        )
        shots = [
            np.asarray(Image.open(io.BytesIO(base64.b64decode(d.b64_json))))
            for d in variations.data
        ]
        assert len(shots) == 2 and not np.array_equal(shots[0], shots[1])

        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(
                base_url=f"{url}/v1", api_key="wrong", max_retries=0
            ).images.create_variation(image=("p.png", png(photo)))
        with pytest.raises(openai.NotFoundError):
            client.images.edit(image=("p.png", png(photo)), prompt="x", model="dall-e-9")
        with pytest.raises(openai.BadRequestError, match="returns one image"):
            client.images.edit(
                image=("p.png", png(photo)),
                mask=("m.png", png(rgba)),
                prompt="x",
                n=2,
                model="retouch-erase",
            )
        # OpenAI's mask meaning, all of it: a fully opaque mask edits nothing.
        opaque = np.dstack([photo, np.full(photo.shape[:2], 255, np.uint8)])
        with pytest.raises(openai.BadRequestError, match="selects nothing"):
            client.images.edit(
                image=("p.png", png(photo)),
                mask=("m.png", png(opaque)),
                prompt="x",
                model="retouch-erase",
            )
        # No model and a prompt: inpainting, which no provider here can do -> 503 that says
        # what to install or set.
        with pytest.raises(openai.InternalServerError) as unavailable:
            client.images.edit(image=("p.png", png(photo)), mask=("m.png", png(rgba)), prompt="x")
        assert unavailable.value.status_code == 503
        assert "no provider is ready for inpaint" in str(unavailable.value)
        assert "OPENAI_API_KEY" in str(unavailable.value)


# --- /sd-inpaint ---------------------------------------------------------------------------------


def test_sd_inpaint_is_unavailable_without_a_model_unless_erase_is_chosen(
    photo: np.ndarray, hole: np.ndarray
) -> None:
    files = {"image": ("a.png", png(photo)), "mask": ("m.png", png(hole))}
    with TestClient(create_app(Toolkit(), ServerSettings(sd_inpaint=True))) as client:
        health = client.get("/sd-inpaint/health")
        assert health.status_code == 503
        body = health.json()
        assert (body["status"], body["service"]) == ("unavailable", "stable-diffusion-inpaint")
        assert "retouch models pull sd15-inpainting" in body["detail"]
        refused = client.post("/sd-inpaint/inpaint", files=files, data={"prompt": "a red ball"})
        assert refused.status_code == 503
        assert "RETOUCH_SD_INPAINT_FALLBACK=erase" in refused.json()["error"]["message"]
        no_prompt = client.post("/sd-inpaint/inpaint", files=files)
        assert no_prompt.status_code == 400 and no_prompt.json()["error"]["param"] == "prompt"
    settings = ServerSettings(sd_inpaint=True, sd_inpaint_fallback="erase")
    with TestClient(create_app(Toolkit(), settings)) as client:
        r = client.post(
            "/sd-inpaint/inpaint",
            files=files,
            data={"prompt": "a red ball", "num_inference_steps": "20", "guidance_scale": "7.5"},
        )
        assert r.status_code == 200 and r.headers["content-type"] == "image/png"
        assert r.headers["x-seed"] == "42" and r.headers["x-retouch-mode"] == "erase-fallback"
        out = np.asarray(Image.open(io.BytesIO(r.content)))
        assert np.array_equal(out[hole == 0], photo[hole == 0])
        for field, value in (
            ("num_inference_steps", "0"),
            ("num_inference_steps", "151"),
            ("guidance_scale", "25"),
            ("seed", "-1"),
        ):
            bad = client.post(
                "/sd-inpaint/inpaint", files=files, data={"prompt": "x", field: value}
            )
            assert bad.status_code == 400 and field in bad.json()["error"]["message"]
    with TestClient(create_app(Toolkit(), ServerSettings())) as client:
        assert client.get("/sd-inpaint/health").status_code == 404  # off unless configured


# --- native routes and errors ----------------------------------------------------------------------


def test_native_routes_multipart_and_json(photo: np.ndarray, hole: np.ndarray) -> None:
    with TestClient(create_app(Toolkit(), ServerSettings())) as client:
        r = client.post(
            "/v1/erase",
            files={"image": ("a.png", png(photo)), "mask": ("m.png", png(hole))},
            data={"seed": "5"},
        )
        assert (
            r.status_code == 200
            and r.headers["x-seed"] == "5"
            and r.headers["x-provider"] == "classic"
        )
        as_json = client.post(
            "/v1/upscale",
            json={
                "image": base64.b64encode(png(photo)).decode(),
                "scale": 2,
                "response_format": "json",
            },
        )
        meta = as_json.json()
        assert meta["provider"] == "realesrgan" and meta["images"][0]["width"] == 256
        decoded = Image.open(io.BytesIO(base64.b64decode(meta["images"][0]["b64_json"])))
        assert decoded.size == (256, 256)
        subject = client.post("/v1/masks/subject", files={"image": ("a.png", png(photo))})
        assert subject.status_code == 200 and Image.open(io.BytesIO(subject.content)).mode == "L"
        rect = client.post(
            "/v1/masks/rect", data={"box": "10,10,30,40"}, files={"image": ("a.png", png(photo))}
        )
        assert (np.asarray(Image.open(io.BytesIO(rect.content))) > 0).sum() == 20 * 30


@pytest.mark.parametrize(
    ("case", "status", "message"),
    [
        ("mask size", 400, "64 x 64"),
        ("not an image", 400, "not an image"),
        ("unknown field", 400, "unknown field"),
        ("missing mask", 400, "missing image field"),
        ("too many pixels", 413, "over the limit"),
        ("upload too big", 413, "upload limit"),
        ("server path in JSON", 400, "base64"),
        ("url when off", 400, "turned off"),
    ],
)
def test_bad_input_gets_a_clear_4xx(
    photo: np.ndarray, hole: np.ndarray, case: str, status: int, message: str
) -> None:
    settings = ServerSettings(
        max_pixels=10_000 if case == "too many pixels" else 40_000_000,
        max_upload_bytes=5_000 if case == "upload too big" else 25 * 2**20,
    )
    with TestClient(create_app(Toolkit(), settings)) as client:
        files = {"image": ("a.png", png(photo)), "mask": ("m.png", png(hole))}
        data: dict[str, str] = {}
        if case == "mask size":
            files["mask"] = ("m.png", png(np.zeros((64, 64), np.uint8)))
        elif case == "not an image":
            files["image"] = ("a.png", b"hello")
        elif case == "unknown field":
            data = {"sed": "1"}
        elif case == "missing mask":
            del files["mask"]
        if case == "server path in JSON":
            r = client.post("/v1/erase", json={"image": "/etc/passwd", "mask": "/etc/hosts"})
        elif case == "url when off":
            r = client.post(
                "/v1/erase", json={"image": "http://127.0.0.1:9/x.png", "mask": "subject"}
            )
        else:
            r = client.post("/v1/erase", files=files, data=data)
        assert r.status_code == status, r.text
        error = r.json()["error"]
        assert message in error["message"] and set(error) == {"message", "type", "param", "code"}


def test_a_500_never_leaks_details(photo: np.ndarray, hole: np.ndarray) -> None:
    with TestClient(
        create_app(toolkit(), ServerSettings()), raise_server_exceptions=False
    ) as client:
        r = client.post(
            "/v1/erase",
            files={"image": ("a.png", png(photo)), "mask": ("m.png", png(hole))},
            data={"provider": "broken"},
        )
        assert r.status_code == 500
        assert (
            "secret" not in r.text
            and "Traceback" not in r.text
            and r.json()["error"]["type"] == "server_error"
        )


def test_health_ready_metrics_docs_and_keys() -> None:
    with TestClient(create_app(Toolkit(), ServerSettings(api_keys=frozenset({"k1"})))) as client:
        assert client.get("/health").json()["status"] == "ok"
        assert client.get("/openapi.json").status_code == 200
        assert client.get("/ready").status_code == 401
        ready = client.get("/ready", headers={"X-API-Key": "k1"})
        assert ready.status_code == 200 and ready.json()["providers"]["classic"]["ready"]
        metrics = client.get("/metrics", headers={"Authorization": "Bearer k1"}).text
        assert (
            "retouch_requests_total" in metrics
            and "retouch_queue_depth" in metrics
            and "retouch_jobs_total" in metrics
        )


# --- jobs --------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_jobs_progress_events_result_cancel_and_expiry(photo: np.ndarray, hole: np.ndarray) -> None:
    image, mask = base64.b64encode(png(photo)).decode(), base64.b64encode(png(hole)).decode()
    settings = ServerSettings(concurrency=1, job_ttl_s=0.5)
    with TestClient(create_app(toolkit(), settings)) as client:
        started = client.post(
            "/v1/jobs",
            json={"operation": "erase", "image": image, "mask": mask, "provider": "slow"},
        )
        assert started.status_code == 202
        first = started.json()["id"]
        queued = client.post(
            "/v1/jobs",
            json={"operation": "erase", "image": image, "mask": mask, "provider": "slow"},
        ).json()["id"]
        assert client.delete(f"/v1/jobs/{queued}").json()["status"] == "cancelled"
        events = client.get(f"/v1/jobs/{first}/events").text
        assert (
            "event: running" in events
            and '"stage": "sleep"' in events
            and "event: succeeded" in events
        )
        done = client.get(f"/v1/jobs/{first}").json()
        assert done["status"] == "succeeded" and done["progress"]["step"] == 9
        picture = client.get(f"/v1/jobs/{first}/images/0")
        assert picture.status_code == 200 and Image.open(io.BytesIO(picture.content)).size == (
            128,
            128,
        )
        failed = client.post(
            "/v1/jobs",
            json={
                "operation": "erase",
                "image": image,
                "mask": base64.b64encode(png(np.zeros((8, 8), np.uint8))).decode(),
            },
        ).json()["id"]
        for _ in range(100):
            state = client.get(f"/v1/jobs/{failed}").json()
            if state["status"] != "queued" and state["status"] != "running":
                break
            time.sleep(0.05)
        assert state["status"] == "failed" and "8 x 8" in state["error"]["message"]
        assert client.get("/v1/jobs/job_nope").status_code == 404
        time.sleep(0.6)
        gone = client.get(f"/v1/jobs/{first}")
        assert gone.status_code == 410 and "deleted" in gone.json()["error"]["message"]
        bad = client.post("/v1/jobs", json={"operation": "paint", "image": image})
        assert (
            bad.status_code == 400 and "operation must be one of" in bad.json()["error"]["message"]
        )


@pytest.mark.slow
def test_a_burst_gets_429_with_retry_after_not_a_crash(photo: np.ndarray, hole: np.ndarray) -> None:
    settings = ServerSettings(concurrency=1, queue_size=1)
    with live(create_app(toolkit(), settings)) as url:

        def call(_: int) -> httpx.Response:
            return httpx.post(
                f"{url}/v1/erase",
                files={"image": ("a.png", png(photo)), "mask": ("m.png", png(hole))},
                data={"provider": "slow"},
                timeout=30,
            )

        with ThreadPoolExecutor(8) as pool:
            responses = list(pool.map(call, range(8)))
        codes = sorted(r.status_code for r in responses)
        assert codes.count(200) >= 2 and 429 in codes and all(c in (200, 429) for c in codes)
        refused = next(r for r in responses if r.status_code == 429)
        assert refused.headers["retry-after"] == "2"
        assert httpx.get(f"{url}/health").status_code == 200


# --- image URLs ---------------------------------------------------------------------------------------


class Images(BaseHTTPRequestHandler):
    body: ClassVar[bytes] = b""

    def do_GET(self) -> None:
        if self.path == "/redirect":
            self.send_response(302)
            self.send_header("Location", "http://169.254.169.254/latest/meta-data/")
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/x.png",
        "http://10.1.2.3/x.png",
        "http://169.254.169.254/latest/",
        "http://[::ffff:127.0.0.1]/x.png",
        "http://localhost/x.png",
        "file:///etc/passwd",
        "ftp://example.com/x.png",
    ],
)
def test_urls_to_non_public_addresses_are_refused_before_connecting(url: str) -> None:
    with pytest.raises(InvalidRequest, match=r"not a public address|only http"):
        urlfetch.check_url(url)


def test_url_fetch_follows_redirects_only_to_public_addresses(photo: np.ndarray) -> None:
    Images.body = png(photo)
    server = ThreadingHTTPServer(("127.0.0.1", 0), Images)
    threading.Thread(target=server.serve_forever, args=(0.01,), daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    allowed = frozenset({"127.0.0.1"})  # this test server only; every other host is checked
    try:
        assert (
            urlfetch.fetch_public(f"{base}/photo.png", max_bytes=10**7, allow_hosts=allowed)
            == Images.body
        )
        with pytest.raises(InvalidRequest, match=r"169\.254\.169\.254"):
            urlfetch.fetch_public(f"{base}/redirect", max_bytes=10**7, allow_hosts=allowed)
        settings = ServerSettings(allow_image_urls=True, url_allow_hosts=allowed)
        with TestClient(create_app(Toolkit(), settings)) as client:
            r = client.post(
                "/v1/upscale",
                json={"image": f"{base}/photo.png", "scale": 2, "response_format": "json"},
            )
            assert r.status_code == 200 and r.json()["images"][0]["width"] == 256
            blocked = client.post(
                "/v1/upscale", json={"image": "http://127.0.0.2/x.png", "scale": 2}
            )
            assert (
                blocked.status_code == 400
                and "not a public address" in blocked.json()["error"]["message"]
            )
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.slow
def test_shutdown_lets_jobs_finish_within_the_grace_then_cancels(
    photo: np.ndarray, hole: np.ndarray
) -> None:
    image, mask = base64.b64encode(png(photo)).decode(), base64.b64encode(png(hole)).decode()
    request = {
        "operation": "erase",
        "image": image,
        "mask": mask,
        "provider": "slow",
    }  # 0.5 s of work
    for grace, expected in ((5.0, "succeeded"), (0.15, "cancelled")):
        app = create_app(toolkit(), ServerSettings(shutdown_grace_s=grace))
        with TestClient(app) as client:
            job_id = client.post("/v1/jobs", json=request).json()["id"]
            time.sleep(0.1)
        assert app.state.service.jobs.jobs[job_id].status == expected


def test_request_timeout_is_a_504_and_the_work_stops(photo: np.ndarray, hole: np.ndarray) -> None:
    with TestClient(create_app(toolkit(), ServerSettings(request_timeout_s=0.1))) as client:
        r = client.post(
            "/v1/erase",
            files={"image": ("a.png", png(photo)), "mask": ("m.png", png(hole))},
            data={"provider": "slow"},
        )
        assert r.status_code == 504 and "longer than 0.1 s" in r.json()["error"]["message"]


class Painter:
    """Inpaint and edit for the tests: paints the masked area (or everything) mid-grey."""

    info = ProviderInfo(
        name="painter",
        kind="local",
        description="test inpaint/edit",
        operations={
            "inpaint": OperationSpec(honours=frozenset({"prompt", "n"})),
            "edit": OperationSpec(honours=frozenset({"prompt", "n"})),
        },
    )

    def status(self) -> ProviderStatus:
        return ProviderStatus(True)

    def run(self, request, progress):  # type: ignore[no-untyped-def]
        out = np.full_like(request.image.pixels, 128)
        return ImageResult(
            images=[ResultImage(pixels=out) for _ in range(request.n)], provider="painter"
        )


def test_openai_masks_transparent_everything_and_no_mask(photo: np.ndarray) -> None:
    import openai

    clear = np.dstack([photo, np.zeros(photo.shape[:2], np.uint8)])  # transparent = edit all
    with live(create_app(Toolkit(providers={"painter": Painter()}), ServerSettings())) as url:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="none", max_retries=0)
        everything = client.images.edit(
            image=("p.png", png(photo)), mask=("m.png", png(clear)), prompt="grey", n=2
        )
        assert len(everything.data) == 2
        out = np.asarray(Image.open(io.BytesIO(base64.b64decode(everything.data[0].b64_json))))
        assert (out == 128).all()  # the whole image was the edit area
        whole = client.images.edit(image=("p.png", png(photo)), prompt="grey")
        out = np.asarray(Image.open(io.BytesIO(base64.b64decode(whole.data[0].b64_json))))
        assert (out == 128).all()  # no mask: the whole image is edited (an edit, not an error)
