"""A fake AUTOMATIC1111 API (--api): img2img with inpainting, extra-single-image, progress and
interrupt, optional basic auth. It checks the fields its contract documents (base64 PNGs, a mask
of the image's size, sizes multiple of 8, denoising 0..1) and works in timed steps so progress
can be polled while a request runs."""

from __future__ import annotations

import asyncio
import base64
import io
import json
from typing import Any

import numpy as np
from PIL import Image
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

ORANGE = (255, 128, 0)


def decode(data: str) -> Image.Image:
    image = Image.open(io.BytesIO(base64.b64decode(data)))
    image.load()
    return image


def encode(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def error(status: int, message: str) -> JSONResponse:
    return JSONResponse(
        {"error": "HTTPException", "detail": message, "body": "", "errors": ""}, status_code=status
    )


class FakeA1111:
    def __init__(self, *, auth: str | None = None, steps: int = 5, step_s: float = 0.1) -> None:
        self.auth = auth
        self.steps, self.step_s = steps, step_s
        self.progress = 0.0
        self.interrupted = False
        self.progress_polls = 0
        self.payloads: list[dict[str, Any]] = []
        self.app = Starlette(
            routes=[
                Route("/sdapi/v1/img2img", self.img2img, methods=["POST"]),
                Route("/sdapi/v1/extra-single-image", self.extra, methods=["POST"]),
                Route("/sdapi/v1/progress", self.get_progress, methods=["GET"]),
                Route("/sdapi/v1/interrupt", self.interrupt, methods=["POST"]),
            ]
        )

    def _denied(self, request: Request) -> JSONResponse | None:
        if self.auth is None:
            return None
        expected = "Basic " + base64.b64encode(self.auth.encode()).decode()
        return (
            None
            if request.headers.get("authorization") == expected
            else error(401, "Not authenticated")
        )

    async def _work(self) -> None:
        self.interrupted = False
        for step in range(self.steps):
            if self.interrupted:
                break
            self.progress = step / self.steps
            await asyncio.sleep(self.step_s)
        self.progress = 0.0

    async def img2img(self, request: Request) -> JSONResponse:
        if denied := self._denied(request):
            return denied
        body = await request.json()
        self.payloads.append(body)
        images = body.get("init_images")
        if not isinstance(images, list) or len(images) != 1:
            return error(422, "init_images: one base64 image")
        image = decode(images[0]).convert("RGB")
        if (
            (body.get("width"), body.get("height")) != image.size
            or image.width % 8
            or image.height % 8
        ):
            return error(422, "width/height must be the image's size, multiples of 8")
        if not 0 <= float(body.get("denoising_strength", 0.75)) <= 1:
            return error(422, "denoising_strength: 0..1")
        rgb = np.asarray(image).copy()
        if body.get("mask") is not None:
            mask = decode(body["mask"]).convert("L")
            if mask.size != image.size:
                return error(422, "mask: must be the image's size")
            rgb[np.asarray(mask) > 127] = ORANGE
        await self._work()
        seed = int(body.get("seed", -1))
        seed = 1000 if seed == -1 else seed
        count = int(body.get("batch_size", 1))
        seeds = [seed + i for i in range(count)]
        outs = [
            encode(Image.fromarray(np.roll(rgb, i, axis=0) if i else rgb)) for i in range(count)
        ]
        info = {"seed": seed, "all_seeds": seeds, "sd_model_name": "fake-sd15"}
        return JSONResponse({"images": outs, "parameters": body, "info": json.dumps(info)})

    async def extra(self, request: Request) -> JSONResponse:
        if denied := self._denied(request):
            return denied
        body = await request.json()
        self.payloads.append(body)
        image = decode(body["image"]).convert("RGB")
        factor = float(body.get("upscaling_resize", 1))
        out = image.resize((round(image.width * factor), round(image.height * factor)))
        await self._work()
        return JSONResponse({"image": encode(out), "html_info": ""})

    async def get_progress(self, request: Request) -> JSONResponse:
        if denied := self._denied(request):
            return denied
        self.progress_polls += 1
        return JSONResponse(
            {"progress": self.progress, "eta_relative": 1.0, "state": {}, "current_image": None}
        )

    async def interrupt(self, request: Request) -> JSONResponse:
        self.interrupted = True
        return JSONResponse({})
