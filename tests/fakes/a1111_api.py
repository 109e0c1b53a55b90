"""A fake AUTOMATIC1111 API (``--api``) that behaves as modules/api/api.py does.

Rules (AUTOMATIC1111/stable-diffusion-webui ``modules/api/api.py``, ``modules/api/models.py``):
- ``--api-auth``: HTTP basic on every route, else 401 "Incorrect username or password".
- ``POST /sdapi/v1/img2img``: ``init_images`` (base64 images), an optional ``mask`` of the
  image's size, ``denoising_strength`` 0-1, ``batch_size``/``n_iter``, ``seed`` (-1 random;
  the batch gets seed, seed + 1, ...), ``width``/``height`` (the image is resized to them);
  answers ``{images, parameters, info}`` with ``info`` a JSON string. Jobs run **one at a
  time under ``queue_lock``**: a job sent while one runs waits behind it (``queued``).
- ``POST /sdapi/v1/extra-single-image`` -> ``{image, html_info}``; ``GET /sdapi/v1/upscalers``;
  ``GET /sdapi/v1/progress``; ``POST /sdapi/v1/interrupt``; ``GET /sdapi/v1/options``.

It works in timed steps so progress can be polled while a request runs; the masked area comes
back orange, img2img without a mask is blended toward a colour by the strength.
"""

from __future__ import annotations

import base64
import io
import json
import threading
import time
from typing import Any

import httpx
import numpy as np
from PIL import Image

from .http import Fake, Sent, json_response, png

ORANGE = (255, 128, 0)
UPSCALERS = ["None", "Lanczos", "R-ESRGAN 4x+", "R-ESRGAN 4x+ Anime6B"]


def decode(data: str) -> Image.Image:
    image = Image.open(io.BytesIO(base64.b64decode(data)))
    image.load()
    return image


def encode(image: Image.Image) -> str:
    return base64.b64encode(png(image)).decode()


def error(status: int, message: str) -> httpx.Response:
    return json_response(
        {"error": "HTTPException", "detail": message, "body": "", "errors": ""}, status
    )


class FakeA1111(Fake):
    def __init__(self, *, auth: str | None = None, steps: int = 5, step_s: float = 0.05) -> None:
        super().__init__()
        self.auth = auth
        self.steps, self.step_s = steps, step_s
        self.progress = 0.0
        self.interrupted = False
        self.lock = threading.Lock()
        self.running = 0
        self.queued = 0
        """Jobs that had to wait for another to finish (queue_lock)."""
        self.route("POST", "/sdapi/v1/img2img", self.img2img)
        self.route("POST", "/sdapi/v1/extra-single-image", self.extra)
        self.route("GET", "/sdapi/v1/progress", self.get_progress)
        self.route("POST", "/sdapi/v1/interrupt", self.interrupt)
        self.route("GET", "/sdapi/v1/options", self.options)
        self.route("GET", "/sdapi/v1/upscalers", self.upscalers)

    def check(self, request: httpx.Request) -> httpx.Response | None:
        if self.auth is not None:
            expected = "Basic " + base64.b64encode(self.auth.encode()).decode()
            if request.headers.get("authorization") != expected:
                return error(401, "Incorrect username or password")
        return None

    def _work(self) -> None:
        if self.running:
            self.queued += 1
        with self.lock:  # queue_lock: one job at a time
            self.running += 1
            self.interrupted = False
            try:
                for step in range(self.steps):
                    if self.interrupted:
                        break
                    self.progress = step / self.steps
                    time.sleep(self.step_s)
            finally:
                self.progress = 0.0
                self.running -= 1

    def img2img(self, request: httpx.Request, sent: Sent) -> httpx.Response:
        body = sent.fields
        images = body.get("init_images")
        if not isinstance(images, list) or len(images) != 1:
            return error(422, "init_images: one base64 image")
        image = decode(images[0]).convert("RGB")
        if not 0 <= float(body.get("denoising_strength", 0.75)) <= 1:
            return error(422, "denoising_strength: 0..1")
        size = (int(body.get("width", 512)), int(body.get("height", 512)))
        rgb = np.asarray(image).copy()
        if body.get("mask") is not None:
            mask = decode(body["mask"]).convert("L")
            if mask.size != image.size:
                return error(422, "mask: must be the image's size")
            rgb[np.asarray(mask) > 127] = ORANGE
        else:
            strength = float(body.get("denoising_strength", 0.75))
            rgb = (rgb * (1 - strength) + np.array([30, 60, 200]) * strength).astype(np.uint8)
        self._work()
        seed = int(body.get("seed", -1))
        seed = 1000 if seed == -1 else seed
        count = int(body.get("batch_size", 1)) * int(body.get("n_iter", 1))
        seeds = [seed + i for i in range(count)]
        outs = [
            encode(Image.fromarray(np.roll(rgb, i, axis=0) if i else rgb).resize(size))
            for i in range(count)
        ]
        info = {"seed": seed, "all_seeds": seeds, "sd_model_name": "fake-sd15"}
        return json_response({"images": outs, "parameters": body, "info": json.dumps(info)})

    def extra(self, request: httpx.Request, sent: Sent) -> httpx.Response:
        body = sent.fields
        image = decode(body["image"]).convert("RGB")
        factor = float(body.get("upscaling_resize", 1))
        out = image.resize((round(image.width * factor), round(image.height * factor)))
        self._work()
        return json_response({"image": encode(out), "html_info": ""})

    def get_progress(self, request: httpx.Request, sent: Sent) -> httpx.Response:
        return json_response(
            {"progress": self.progress, "eta_relative": 1.0, "state": {}, "current_image": None}
        )

    def interrupt(self, request: httpx.Request, sent: Sent) -> httpx.Response:
        self.interrupted = True
        return json_response({})

    def options(self, request: httpx.Request, sent: Sent) -> httpx.Response:
        return json_response({"sd_model_checkpoint": "fake-sd15.safetensors"})

    def upscalers(self, request: httpx.Request, sent: Sent) -> httpx.Response:
        return json_response([{"name": name, "model_name": None} for name in UPSCALERS])

    def progress_polls(self) -> int:
        return self.count("GET", "/sdapi/v1/progress")

    def payloads(self, path: str = "/sdapi/v1/img2img") -> list[dict[str, Any]]:
        return [s.fields for s in self.sent if s.path == path]
