"""A fake of Stability AI's v2beta image API that refuses what the service refuses.

Rules from platform.stability.ai/docs/api-reference (as recorded in /work/shared/
REFERENCE-APIS.md; the fast-upscale bounds also in docs.comfy.org/router-schemas/stability/
upscale-fast.json):

- Bearer key (401), ``accept`` image/* or application/json (400).
- **a request over 10 MiB answers 413** ``payload_too_large`` "Your request was larger than
  10MiB".
- seed 0..4294967294; prompt 1-10000 characters where required.
- edit endpoints: 4,096 to 9,437,184 pixels; outpaint, search-and-replace/recolor and
  conservative upscale also aspect 1:2.5 to 2.5:1; remove-background at most 4,194,304 px.
- inpaint grow_mask 0-100, erase 0-20; outpaint left/right/up/down 0-2000, one above 0.
- **fast upscale**: sides 32-1536 px, 1,024 to 1,048,576 pixels, aspect 1:2.5 to 2.5:1.
- **creative upscale**: 4,096 to 1,048,576 pixels, creativity 0.1-0.5, answers an id polled at
  ``/v2beta/results/{id}`` (202 until done); **conservative**: creativity 0.2-0.5.
- SD3 ``/generate/sd3``: ``mode=image-to-image`` needs ``image`` and ``strength`` 0-1; model
  one of sd3.5-large, sd3.5-large-turbo, sd3.5-medium; output jpeg or png.

It answers like the service: image bytes with ``seed`` / ``finish-reason`` headers; inpaint
and erase at a different size than sent; SD3 image-to-image at about 1 MP in the input's
aspect, the picture blended towards a flat colour by ``strength`` and shifted by the seed;
errors as ``{id, name, errors[]}``; moderation as 403 ``content_moderation``.
"""

from __future__ import annotations

import io

import httpx
import numpy as np
from PIL import Image

from .http import Fake, Sent, Upload, json_response, png

KEY = "sk-stability-fake"
CYAN = (0, 255, 255)
MAX_REQUEST = 10 * 2**20
SD3_MODELS = {"sd3.5-large", "sd3.5-large-turbo", "sd3.5-medium"}


def error(status: int, name: str, *messages: str) -> httpx.Response:
    return json_response({"id": "e1", "name": name, "errors": list(messages)}, status)


def image_answer(image: Image.Image, seed: str | None, fmt: str = "png") -> httpx.Response:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG" if fmt == "jpeg" else fmt.upper())
    return httpx.Response(
        200,
        content=buffer.getvalue(),
        headers={
            "content-type": f"image/{fmt}",
            "seed": seed or "1234567",
            "finish-reason": "SUCCESS",
        },
    )


def aspect_ok(width: int, height: int) -> bool:
    return 1 / 2.5 <= width / height <= 2.5


class FakeStability(Fake):
    def __init__(self, *, polls_before_done: int = 2) -> None:
        super().__init__()
        self.polls_before_done = polls_before_done
        self.jobs: dict[str, tuple[int, bytes]] = {}
        self.route("POST", "/v2beta/stable-image/edit/(?P<kind>[a-z-]+)", self.edit)
        self.route("POST", "/v2beta/stable-image/upscale/(?P<kind>[a-z]+)", self.upscale)
        self.route("POST", "/v2beta/stable-image/generate/sd3", self.sd3)
        self.route("GET", "/v2beta/results/(?P<job>[^/]+)", self.result)

    def _open(
        self, request: httpx.Request, sent: Sent
    ) -> tuple[Image.Image | None, httpx.Response | None]:
        if request.headers.get("authorization") != f"Bearer {KEY}":
            return None, error(401, "unauthorized", "authorization: invalid or missing API key")
        if request.headers.get("accept") not in ("image/*", "application/json"):
            return None, error(400, "bad_request", "accept: must be image/* or application/json")
        if len(sent.body) > MAX_REQUEST:
            return None, error(413, "payload_too_large", "Your request was larger than 10MiB.")
        upload = sent.fields.get("image")
        if not isinstance(upload, Upload):
            return None, error(400, "bad_request", "image: required")
        image = upload.image()
        if image.format not in ("PNG", "JPEG", "WEBP"):
            return None, error(400, "bad_request", "image: jpeg, png or webp")
        seed = sent.fields.get("seed")
        if seed is not None and not 0 <= int(seed) <= 4_294_967_294:
            return None, error(400, "bad_request", "seed: 0..4294967294")
        return image, None

    @staticmethod
    def _pixels(
        image: Image.Image, low: int = 4096, high: int = 9_437_184
    ) -> httpx.Response | None:
        pixels = image.width * image.height
        if not low <= pixels <= high:
            return error(400, "bad_request", f"image: {pixels} pixels is outside {low}-{high}")
        return None

    def edit(self, request: httpx.Request, sent: Sent, kind: str) -> httpx.Response:
        image, refused = self._open(request, sent)
        if refused or image is None:
            return refused or error(400, "bad_request", "image")
        fields = sent.fields
        seed = fields.get("seed")
        limit = 4_194_304 if kind == "remove-background" else 9_437_184
        if bad := self._pixels(image, high=limit):
            return bad
        rgb = np.asarray(image.convert("RGB")).copy()
        if kind in ("inpaint", "erase"):
            upload = fields.get("mask")
            if not isinstance(upload, Upload):
                return error(400, "bad_request", "mask: required for this fake")
            mask = upload.image()
            if mask.mode != "L":
                return error(400, "bad_request", "mask: send a grey mask")
            limit = 100 if kind == "inpaint" else 20
            if fields.get("grow_mask") is not None and not 0 <= int(fields["grow_mask"]) <= limit:
                return error(400, "bad_request", f"grow_mask: 0-{limit}")
            if kind == "inpaint" and not 1 <= len(str(fields.get("prompt") or "")) <= 10000:
                return error(400, "bad_request", "prompt: 1-10000 characters")
            hole = np.asarray(mask.resize(image.size)) > 127
            rgb[hole] = CYAN if kind == "inpaint" else rgb[~hole].mean(axis=0).astype(np.uint8)
            out = Image.fromarray(np.clip(rgb.astype(int) + 4, 0, 255).astype(np.uint8))
            scale = min(1.5, (4_000_000 / (image.width * image.height)) ** 0.5)  # about 4 MP
            size = (round(image.width * scale), round(image.height * scale))
            return image_answer(out.resize(size), seed, str(fields.get("output_format", "png")))
        if kind == "outpaint":
            if not aspect_ok(image.width, image.height):
                return error(400, "bad_request", "image: aspect ratio 1:2.5 to 2.5:1")
            sides = [int(fields.get(s) or 0) for s in ("left", "right", "up", "down")]
            if not any(sides) or any(not 0 <= s <= 2000 for s in sides):
                return error(400, "bad_request", "left/right/up/down: 0-2000, one above 0")
            left, right, up, down = sides
            canvas = np.zeros((image.height + up + down, image.width + left + right, 3), np.uint8)
            canvas[:] = (40, 200, 40)
            canvas[up : up + image.height, left : left + image.width] = rgb
            return image_answer(Image.fromarray(canvas), seed)
        if kind in ("search-and-replace", "search-and-recolor"):
            if not aspect_ok(image.width, image.height):
                return error(400, "bad_request", "image: aspect ratio 1:2.5 to 2.5:1")
            needed = "search_prompt" if kind == "search-and-replace" else "select_prompt"
            if not fields.get("prompt") or not fields.get(needed):
                return error(400, "bad_request", f"prompt and {needed}: required")
            return image_answer(Image.fromarray(255 - rgb), seed)
        if kind == "remove-background":
            if fields.get("output_format", "png") not in ("png", "webp"):
                return error(400, "bad_request", "output_format: png or webp")
            alpha = np.zeros(rgb.shape[:2], np.uint8)
            h, w = rgb.shape[:2]
            alpha[h // 4 : -h // 4, w // 4 : -w // 4] = 255
            return image_answer(Image.fromarray(np.dstack([rgb, alpha]), "RGBA"), None)
        return error(404, "not_found", f"no endpoint {kind}")

    def sd3(self, request: httpx.Request, sent: Sent) -> httpx.Response:
        image, refused = self._open(request, sent)
        if refused or image is None:
            return refused or error(400, "bad_request", "image")
        fields = sent.fields
        if fields.get("mode") != "image-to-image":
            return error(400, "bad_request", "mode: image-to-image when an image is sent")
        if "strength" not in fields or not 0 <= float(fields["strength"]) <= 1:
            return error(400, "bad_request", "strength: required for image-to-image, 0-1")
        if not 1 <= len(str(fields.get("prompt") or "")) <= 10000:
            return error(400, "bad_request", "prompt: 1-10000 characters")
        if fields.get("model", "sd3.5-large") not in SD3_MODELS:
            return error(400, "bad_request", f"model: one of {sorted(SD3_MODELS)}")
        fmt = fields.get("output_format", "png")
        if fmt not in ("jpeg", "png"):
            return error(400, "bad_request", "output_format: jpeg or png")
        if min(image.size) < 64:
            return error(400, "bad_request", "image: at least 64 px per side")
        strength = float(fields["strength"])
        seed = int(fields.get("seed") or 0) or 42
        rgb = np.asarray(image.convert("RGB")).astype(float)
        flat = np.array([seed % 256, (seed // 256) % 256, 128], float)
        out = (rgb * (1 - strength) + flat * strength).astype(np.uint8)
        scale = (1_048_576 / (image.width * image.height)) ** 0.5  # SD3 answers about 1 MP
        size = (round(image.width * scale / 64) * 64, round(image.height * scale / 64) * 64)
        return image_answer(Image.fromarray(out).resize(size), str(seed), fmt)

    def upscale(self, request: httpx.Request, sent: Sent, kind: str) -> httpx.Response:
        image, refused = self._open(request, sent)
        if refused or image is None:
            return refused or error(400, "bad_request", "image")
        fields = sent.fields
        width, height = image.size
        big = image.convert("RGB").resize((width * 4, height * 4))
        if kind == "fast":
            if not (min(width, height) >= 32 and max(width, height) <= 1536):
                return error(400, "bad_request", "image: sides 32-1536 px")
            if not 1_024 <= width * height <= 1_048_576:
                return error(400, "bad_request", "image: 1,024 to 1,048,576 pixels")
            if not aspect_ok(width, height):
                return error(400, "bad_request", "image: aspect ratio 1:2.5 to 2.5:1")
            return image_answer(big, None)
        if not fields.get("prompt"):
            return error(400, "bad_request", "prompt: required")
        creativity = float(fields.get("creativity", 0.3 if kind == "creative" else 0.35))
        if kind == "conservative":
            if not 0.2 <= creativity <= 0.5:
                return error(400, "bad_request", "creativity: 0.2-0.5")
            if not aspect_ok(width, height):
                return error(400, "bad_request", "image: aspect ratio 1:2.5 to 2.5:1")
            if bad := self._pixels(image):
                return bad
            return image_answer(big, None)
        if kind != "creative":
            return error(404, "not_found", f"no endpoint {kind}")
        if not 0.1 <= creativity <= 0.5:
            return error(400, "bad_request", "creativity: 0.1-0.5")
        if bad := self._pixels(image, high=1_048_576):
            return bad
        if request.headers.get("accept") != "application/json":
            return error(
                400, "bad_request", "creative upscale answers JSON: accept application/json"
            )
        job = f"job{len(self.jobs)}"
        self.jobs[job] = (0, png(big))
        return json_response({"id": job})

    def result(self, request: httpx.Request, sent: Sent, job: str) -> httpx.Response:
        if request.headers.get("authorization") != f"Bearer {KEY}":
            return error(401, "unauthorized", "bad key")
        if job not in self.jobs:
            return error(404, "not_found", "expired or unknown")
        polls, data = self.jobs[job]
        if polls < self.polls_before_done:
            self.jobs[job] = (polls + 1, data)
            return json_response({"id": job, "status": "in-progress"}, 202)
        return httpx.Response(
            200,
            content=data,
            headers={"content-type": "image/png", "finish-reason": "SUCCESS", "seed": "99"},
        )
