"""A fake of OpenAI's images API as it stands in late 2026, refusing what the service refuses.

Rules, each from openai-python ``src/openai/types/image_edit_params.py`` (August 2026) unless
marked otherwise:

- Bearer key, else 401 ``invalid_api_key`` (API reference, Authentication).
- ``dall-e-2`` and ``dall-e-3`` were shut down on 2026-05-12: any request naming them, and
  ``/v1/images/variations`` (dall-e-2 only), answers 404 ``model_not_found`` "has been
  deprecated" (developers.openai.com/api/docs/models/dall-e-2; /api/docs/deprecations).
- ``image``: png, webp or jpg under 50 MB (up to 16 as ``image[]``); ``prompt`` required, at
  most 32000 characters; ``n`` 1-10.
- ``mask``: a PNG **under 4 MB**, the image's size, with an alpha channel ("fully
  transparent areas ... indicate where image should be edited").
- ``size``: 1024x1024, 1536x1024, 1024x1536 or auto; the gpt-image-2 family also any
  WIDTHxHEIGHT with both sides divisible by 16, aspect 1:3 to 3:1, at most 3840x2160.
- ``response_format`` is for dall-e-2 only ("GPT image models always return base64").
- ``background=transparent`` needs ``output_format`` png or webp.
- ``input_fidelity`` is unsupported for gpt-image-1-mini.

It answers like the service: the whole picture regenerated (colours shifted by +6), the
masked area painted magenta, at the requested size (``auto``: 1024x1024), each of the ``n``
images different; with ``background=transparent`` the masked area comes back transparent.
"""

from __future__ import annotations

import base64
import io
from typing import Any

import httpx
import numpy as np
from PIL import Image

from .http import Fake, Sent, Upload, json_response, png

KEY = "sk-fake"
MAGENTA = (255, 0, 255)
GPT_IMAGE_MODELS = {
    "gpt-image-1",
    "gpt-image-1-mini",
    "gpt-image-1.5",
    "gpt-image-2",
    "gpt-image-2-2026-04-21",
    "chatgpt-image-latest",
}
RETIRED = {"dall-e-2", "dall-e-3"}
STANDARD = {"1024x1024", "1536x1024", "1024x1536", "auto"}


def error(
    status: int, message: str, code: str | None = None, param: str | None = None
) -> httpx.Response:
    return json_response(
        {
            "error": {
                "message": message,
                "type": "invalid_request_error",
                "param": param,
                "code": code,
            }
        },
        status,
    )


def retired(model: str) -> httpx.Response:
    return error(
        404,
        f"The model `{model}` has been deprecated. Learn more: "
        "https://platform.openai.com/docs/deprecations",
        "model_not_found",
        "model",
    )


class FakeOpenAI(Fake):
    def __init__(self) -> None:
        super().__init__()
        self.route("POST", "/v1/images/edits", self.edits)
        self.route("POST", "/v1/images/variations", self.variations)

    def edits(self, request: httpx.Request, sent: Sent) -> httpx.Response:
        if request.headers.get("authorization") != f"Bearer {KEY}":
            return error(401, "Incorrect API key provided.", "invalid_api_key")
        fields = sent.fields
        model = str(fields.get("model") or "gpt-image-1.5")  # the service's default
        if model in RETIRED:
            return retired(model)
        if model not in GPT_IMAGE_MODELS:
            return error(400, f"Invalid model {model}.", "invalid_value", "model")
        uploads = fields.get("image") or fields.get("image[]")
        uploads = uploads if isinstance(uploads, list) else [uploads]
        if not uploads or not all(isinstance(u, Upload) for u in uploads) or len(uploads) > 16:
            return error(400, "image is required (at most 16)", param="image")
        for upload in uploads:
            if len(upload.data) >= 50 * 10**6:
                return error(400, "image must be less than 50MB", param="image")
            if upload.image().format not in ("PNG", "JPEG", "WEBP"):
                return error(400, "image must be png, webp or jpg", param="image")
        image = uploads[0].image()
        prompt = fields.get("prompt")
        if not isinstance(prompt, str) or not prompt:
            return error(400, "prompt is required", param="prompt")
        if len(prompt) > 32000:
            return error(400, "prompt is too long (32000 characters)", param="prompt")
        n = int(fields.get("n") or 1)
        if not 1 <= n <= 10:
            return error(400, "n must be between 1 and 10", param="n")
        if fields.get("response_format") is not None:
            return error(
                400, "response_format is only supported for dall-e-2", param="response_format"
            )
        background = fields.get("background")
        output_format = fields.get("output_format") or "png"
        if background == "transparent" and output_format not in ("png", "webp"):
            return error(400, "transparent background needs png or webp output", param="background")
        if fields.get("input_fidelity") is not None and model == "gpt-image-1-mini":
            return error(
                400, "input_fidelity is not supported for gpt-image-1-mini", param="input_fidelity"
            )
        size = str(fields.get("size") or "auto")
        refused = self._check_size(model, size)
        if refused is not None:
            return refused
        hole = np.zeros((image.height, image.width), bool)
        upload = fields.get("mask")
        if upload is not None:
            if not isinstance(upload, Upload) or upload.data[:8] != b"\x89PNG\r\n\x1a\n":
                return error(400, "Invalid mask: must be a PNG", param="mask")
            if len(upload.data) >= 4 * 10**6:
                return error(400, "Invalid mask: must be less than 4MB", param="mask")
            mask = upload.image()
            if mask.mode not in ("RGBA", "LA"):
                return error(400, "Invalid mask: it must have an alpha channel", param="mask")
            if mask.size != image.size:
                return error(
                    400, f"Invalid mask: size {mask.size} differs from the image's {image.size}"
                )
            hole = np.asarray(mask.getchannel("A")) == 0
        width, height = (1024, 1024) if size == "auto" else (int(v) for v in size.split("x"))
        rgb = np.asarray(image.convert("RGB")).astype(int)
        redrawn = np.clip(rgb + 6, 0, 255).astype(np.uint8)  # the whole picture, slightly off
        redrawn[hole] = MAGENTA
        outs = []
        for index in range(n):
            variant = np.roll(redrawn, 3 * index, axis=1) if upload is None else redrawn
            if background == "transparent":
                # With a mask the edited area comes back transparent; without one the
                # background does (here: an 8 px border, as a cut-out would).
                clear = hole.copy()
                if upload is None:
                    clear[:8], clear[-8:], clear[:, :8], clear[:, -8:] = True, True, True, True
                alpha = np.where(clear, 0, 255).astype(np.uint8)
                out = Image.fromarray(np.dstack([variant, alpha]), "RGBA")
            else:
                out = Image.fromarray(variant)
            outs.append(out.resize((width, height)))
        data = [{"b64_json": base64.b64encode(png(o)).decode()} for o in outs]
        return json_response(
            {
                "created": 1790000000,
                "data": data,
                "background": background or "opaque",
                "output_format": output_format,
                "size": f"{width}x{height}",
                "usage": {
                    "input_tokens": 50,
                    "input_tokens_details": {"image_tokens": 40, "text_tokens": 10},
                    "output_tokens": 100,
                    "total_tokens": 150,
                },
            }
        )

    @staticmethod
    def _check_size(model: str, size: str) -> httpx.Response | None:
        if size in STANDARD:
            return None
        if not model.startswith("gpt-image-2"):
            return error(400, f"Invalid size '{size}' for {model}.", "invalid_value", "size")
        try:
            width, height = (int(v) for v in size.split("x"))
        except ValueError:
            return error(400, f"Invalid size '{size}'.", "invalid_value", "size")
        if width % 16 or height % 16:
            return error(400, "width and height must be divisible by 16", param="size")
        if not 1 / 3 <= width / height <= 3:
            return error(400, "aspect ratio must be between 1:3 and 3:1", param="size")
        if max(width, height) > 3840 or width * height > 3840 * 2160:
            return error(400, "the maximum supported resolution is 3840x2160", param="size")
        return None

    def variations(self, request: httpx.Request, sent: Sent) -> httpx.Response:
        # dall-e-2 was the only model of this endpoint.
        return retired(str(sent.fields.get("model") or "dall-e-2"))

    def decoded_mask(self, index: int = -1) -> Any:
        upload = self.sent[index].fields.get("mask")
        return None if upload is None else Image.open(io.BytesIO(upload.data))
