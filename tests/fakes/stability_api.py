"""A fake of Stability AI's v2beta image API enforcing its documented contract: Bearer key,
``accept``, multipart fields and their ranges, pixel and aspect limits. Answers like the
service: image bytes with ``seed`` / ``finish-reason`` headers (inpaint and erase at a
different size than sent), creative upscale as an id polled at /v2beta/results/{id} (202 until
done), errors as ``{id, name, errors[]}``, moderation as 403 ``content_moderation``."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
from PIL import Image
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

KEY = "sk-stability-fake"
CYAN = (0, 255, 255)


def error(status: int, name: str, *messages: str) -> JSONResponse:
    return JSONResponse({"id": "e1", "name": name, "errors": list(messages)}, status_code=status)


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


class FakeStability:
    def __init__(self, *, polls_before_done: int = 2) -> None:
        self.script: list[tuple[int, dict[str, str], dict[str, Any]]] = []
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.polls_before_done = polls_before_done
        self.jobs: dict[str, tuple[int, bytes]] = {}
        edit = "/v2beta/stable-image/edit"
        self.app = Starlette(
            routes=[
                Route(f"{edit}/{{kind}}", self.edit, methods=["POST"]),
                Route("/v2beta/stable-image/upscale/{kind}", self.upscale, methods=["POST"]),
                Route("/v2beta/results/{job}", self.result, methods=["GET"]),
            ]
        )

    async def _open(
        self, request: Request
    ) -> tuple[dict[str, Any], Image.Image | None, Response | None]:
        if request.headers.get("authorization") != f"Bearer {KEY}":
            return {}, None, error(401, "unauthorized", "authorization: invalid or missing API key")
        if self.script:
            status, headers, body = self.script.pop(0)
            return {}, None, JSONResponse(body, status_code=status, headers=headers)
        accept = request.headers.get("accept", "")
        if accept not in ("image/*", "application/json"):
            return (
                {},
                None,
                error(400, "bad_request", "accept: must be image/* or application/json"),
            )
        form = await request.form()
        fields = {k: v for k, v in form.items()}
        self.calls.append(
            (
                request.url.path,
                {k: (v if isinstance(v, str) else "<file>") for k, v in fields.items()},
            )
        )
        upload = fields.get("image")
        if upload is None or isinstance(upload, str):
            return fields, None, error(400, "bad_request", "image: required")
        image = Image.open(io.BytesIO(await upload.read()))
        image.load()
        pixels = image.width * image.height
        if not 4096 <= pixels <= 9_437_184:
            return (
                fields,
                None,
                error(400, "bad_request", f"image: {pixels} pixels is outside 4096-9437184"),
            )
        return fields, image, None

    def _image(self, image: Image.Image, seed: str | None, fmt: str) -> Response:
        return Response(
            png(image),
            media_type=f"image/{fmt}",
            headers={"seed": seed or "1234567", "finish-reason": "SUCCESS"},
        )

    async def edit(self, request: Request) -> Response:
        kind = request.path_params["kind"]
        fields, image, refused = await self._open(request)
        if refused or image is None:
            return refused or error(400, "bad_request", "image")
        rgb = np.asarray(image.convert("RGB")).copy()
        seed = fields.get("seed")
        if seed is not None and not 0 <= int(seed) <= 4_294_967_294:
            return error(400, "bad_request", "seed: out of range")
        if kind in ("inpaint", "erase"):
            upload = fields.get("mask")
            if upload is None or isinstance(upload, str):
                return error(400, "bad_request", "mask: required for this fake")
            mask = Image.open(io.BytesIO(await upload.read()))
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
            return self._image(
                out.resize((image.width * 3 // 2, image.height * 3 // 2)),
                seed,
                str(fields.get("output_format", "png")),
            )
        if kind == "outpaint":
            sides = [int(fields.get(s) or 0) for s in ("left", "right", "up", "down")]
            if not any(sides) or any(not 0 <= s <= 2000 for s in sides):
                return error(400, "bad_request", "left/right/up/down: 0-2000, one above 0")
            left, right, up, down = sides
            canvas = np.zeros((image.height + up + down, image.width + left + right, 3), np.uint8)
            canvas[:] = (40, 200, 40)
            canvas[up : up + image.height, left : left + image.width] = rgb
            return self._image(Image.fromarray(canvas), seed, "png")
        if kind in ("search-and-replace", "search-and-recolor"):
            needed = "search_prompt" if kind == "search-and-replace" else "select_prompt"
            if not fields.get("prompt") or not fields.get(needed):
                return error(400, "bad_request", f"prompt and {needed}: required")
            return self._image(Image.fromarray(255 - rgb), seed, "png")
        if kind == "remove-background":
            if image.width * image.height > 4_194_304:
                return error(400, "bad_request", "image: at most 4194304 pixels")
            if fields.get("output_format", "png") not in ("png", "webp"):
                return error(400, "bad_request", "output_format: png or webp")
            alpha = np.zeros(rgb.shape[:2], np.uint8)
            alpha[
                rgb.shape[0] // 4 : -rgb.shape[0] // 4, rgb.shape[1] // 4 : -rgb.shape[1] // 4
            ] = 255
            return self._image(Image.fromarray(np.dstack([rgb, alpha]), "RGBA"), None, "png")
        return error(404, "not_found", f"no endpoint {kind}")

    async def upscale(self, request: Request) -> Response:
        kind = request.path_params["kind"]
        fields, image, refused = await self._open(request)
        if refused or image is None:
            return refused or error(400, "bad_request", "image")
        big = image.convert("RGB").resize((image.width * 4, image.height * 4))
        if kind == "fast":
            if not (32 <= image.width <= 1536 and 32 <= image.height <= 1536):
                return error(400, "bad_request", "image: sides 32-1536")
            return self._image(big, None, "png")
        if not fields.get("prompt"):
            return error(400, "bad_request", "prompt: required")
        if kind == "conservative":
            return self._image(big, None, "png")
        if request.headers.get("accept") != "application/json":
            return error(
                400, "bad_request", "creative upscale answers JSON: accept application/json"
            )
        job = f"job{len(self.jobs)}"
        self.jobs[job] = (0, png(big))
        return JSONResponse({"id": job})

    async def result(self, request: Request) -> Response:
        if request.headers.get("authorization") != f"Bearer {KEY}":
            return error(401, "unauthorized", "bad key")
        job = request.path_params["job"]
        if job not in self.jobs:
            return error(404, "not_found", "expired or unknown")
        polls, data = self.jobs[job]
        if polls < self.polls_before_done:
            self.jobs[job] = (polls + 1, data)
            return JSONResponse({"id": job, "status": "in-progress"}, status_code=202)
        return Response(
            data, media_type="image/png", headers={"finish-reason": "SUCCESS", "seed": "99"}
        )
