"""A fake of OpenAI's images API (edits, variations) that enforces the documented contract:
Bearer key; multipart fields; PNG image; mask a PNG with alpha, the image's size; dall-e-2's
square sizes, 4 MB limit and 1000-character prompts; n 1-10. It answers like the service:
gpt-image models regenerate the whole picture at 1024 x 1024 (here: colours shifted, the
masked area painted magenta); errors use OpenAI's error body. ``script`` queues canned
failures (status, headers, body) for the next requests."""

from __future__ import annotations

import base64
import io
from typing import Any

import numpy as np
from PIL import Image
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

KEY = "sk-fake"
MAGENTA = (255, 0, 255)


def error(
    status: int, message: str, code: str | None = None, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(
        {
            "error": {
                "message": message,
                "type": "invalid_request_error",
                "param": None,
                "code": code,
            }
        },
        status_code=status,
        headers=headers,
    )


class FakeOpenAI:
    def __init__(self) -> None:
        self.script: list[tuple[int, dict[str, str], dict[str, Any]]] = []
        self.calls: list[dict[str, Any]] = []
        self.app = Starlette(
            routes=[
                Route("/v1/images/edits", self.edits, methods=["POST"]),
                Route("/v1/images/variations", self.variations, methods=["POST"]),
                Route("/files/{name}", self.file, methods=["GET"]),
            ]
        )
        self.files: dict[str, bytes] = {}
        self.base = ""

    async def _common(self, request: Request) -> tuple[dict[str, Any], Response | None]:
        self.base = str(request.base_url).rstrip("/")
        if request.headers.get("authorization") != f"Bearer {KEY}":
            return {}, error(401, "Incorrect API key provided.", "invalid_api_key")
        if self.script:
            status, headers, body = self.script.pop(0)
            return {}, JSONResponse(body, status_code=status, headers=headers)
        form = await request.form()
        fields = {k: v for k, v in form.items()}
        self.calls.append({k: (v if isinstance(v, str) else "<file>") for k, v in fields.items()})
        return fields, None

    @staticmethod
    async def _png(upload: Any, name: str) -> tuple[Image.Image | None, Response | None]:
        if upload is None or isinstance(upload, str):
            return None, error(400, f"{name} is required")
        data = await upload.read()
        if data[:8] != b"\x89PNG\r\n\x1a\n":
            return None, error(400, f"Invalid {name}: must be a PNG")
        image = Image.open(io.BytesIO(data))
        image.load()
        image.info["bytes"] = len(data)
        return image, None

    def _answer(self, images: list[Image.Image], fmt: str, model: str) -> JSONResponse:
        data = []
        for index, image in enumerate(images):
            buffer = io.BytesIO()
            image.save(buffer, "PNG")
            if fmt == "url":
                name = f"out-{len(self.files)}-{index}.png"
                self.files[name] = buffer.getvalue()
                data.append({"url": f"{self.base}/files/{name}"})
            else:
                data.append({"b64_json": base64.b64encode(buffer.getvalue()).decode()})
        body: dict[str, Any] = {"created": 1700000000, "data": data}
        if model.startswith("gpt-image"):
            body["usage"] = {
                "input_tokens": 50,
                "input_tokens_details": {"image_tokens": 40, "text_tokens": 10},
                "output_tokens": 100,
                "total_tokens": 150,
            }
        return JSONResponse(body)

    async def edits(self, request: Request) -> Response:
        fields, refused = await self._common(request)
        if refused:
            return refused
        model = str(fields.get("model") or "dall-e-2")
        image, bad = await self._png(fields.get("image"), "image")
        if bad or image is None:
            return bad or error(400, "image is required")
        prompt = str(fields.get("prompt") or "")
        if not prompt:
            return error(400, "prompt is required")
        if len(prompt) > (1000 if model == "dall-e-2" else 32000):
            return error(400, "prompt is too long")
        n = int(fields.get("n") or 1)
        if not 1 <= n <= 10:
            return error(400, "n must be between 1 and 10")
        mask = None
        if fields.get("mask") is not None:
            mask, bad = await self._png(fields.get("mask"), "mask")
            if bad or mask is None:
                return bad or error(400, "mask")
            if mask.mode != "RGBA":
                return error(400, "Invalid mask: it must have an alpha channel")
            if mask.size != image.size:
                return error(
                    400, f"Invalid mask: size {mask.size} differs from the image's {image.size}"
                )
        if model == "dall-e-2":
            if image.width != image.height or image.width not in (256, 512, 1024):
                return error(400, "dall-e-2 images must be square, 256, 512 or 1024 px")
            if fields.get("size") != f"{image.width}x{image.height}":
                return error(400, "size must match the image for this fake")
            if image.info["bytes"] >= 4 * 2**20:
                return error(400, "image must be less than 4 MB")
        elif fields.get("response_format") is not None:
            return error(400, "response_format is only supported for dall-e-2")
        rgb = np.asarray(image.convert("RGB")).astype(int)
        hole = (
            (np.asarray(mask)[:, :, 3] == 0) if mask is not None else np.zeros(rgb.shape[:2], bool)
        )
        regenerated = np.clip(rgb + 6, 0, 255).astype(
            np.uint8
        )  # whole picture redrawn, slightly off
        regenerated[hole] = MAGENTA
        out = Image.fromarray(regenerated)
        if model.startswith("gpt-image"):
            out = out.resize((1024, 1024))
        return self._answer([out] * n, str(fields.get("response_format") or "b64_json"), model)

    async def variations(self, request: Request) -> Response:
        fields, refused = await self._common(request)
        if refused:
            return refused
        image, bad = await self._png(fields.get("image"), "image")
        if bad or image is None:
            return bad or error(400, "image is required")
        if image.width != image.height:
            return error(400, "Invalid input image - image must be square")
        n = int(fields.get("n") or 1)
        rgb = np.asarray(image.convert("RGB"))
        outs = [Image.fromarray(np.roll(rgb, 5 * (i + 1), axis=1)) for i in range(n)]
        return self._answer(outs, str(fields.get("response_format") or "url"), "dall-e-2")

    async def file(self, request: Request) -> Response:
        return Response(self.files[request.path_params["name"]], media_type="image/png")
