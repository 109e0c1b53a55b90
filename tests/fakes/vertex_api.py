"""A fake of Vertex AI's Gemini ``:generateContent`` and Imagen ``:predict`` for image editing,
refusing what the service refuses in late 2026.

Rules:
- Bearer token (401 ``UNAUTHENTICATED``); the path's project and location.
- **discontinued models answer 404 NOT_FOUND**: imagegeneration@002-006, imagetext@001,
  imagen-3.0-capability-001/-002, imagen-3.0-(fast-)generate-*, imagen-4.0-*-generate-001
  ("Discontinued endpoints ... update your model endpoints before June 30, 2026":
  docs.cloud.google.com/vertex-ai/generative-ai/docs/image/edit-images-overview), unless the
  fake is told the project still has one (``still_served``).
- ``:generateContent`` (google-genai ``models.py`` ``_GenerateContentParameters_to_vertex``):
  ``contents[].parts`` of ``inlineData {mimeType, data}`` and ``text``; an image answer needs
  ``generationConfig.responseModalities`` with IMAGE; ``imageConfig.aspectRatio`` one of 1:1,
  2:3, 3:2, 3:4, 4:3, 9:16, 16:9, 21:9 (google-genai ``types.ImageConfig``).
- ``:predict`` for Imagen (google-genai ``_EditImageParameters_to_vertex``): one instance with
  a RAW and a MASK ``referenceImages``, ``editMode``, ``sampleCount`` 1-4. Imagen edits every
  **non-zero** mask pixel.

Gemini "redraws" the whole picture at its own size for the aspect ratio (1:1 1024x1024, 3:2
1248x832, ...; colours shifted by +5) and paints what the mask (second image) marks green;
without a mask it inverts the picture. Imagen paints the masked pixels blue.
"""

from __future__ import annotations

import base64
import io
from typing import Any

import httpx
import numpy as np
from PIL import Image

from .http import Fake, Sent, json_response, png

TOKEN = "ya29.fake"
PROJECT, LOCATION = "my-project", "us-central1"
BLUE = (0, 0, 255)
GREEN = (0, 200, 0)
DISCONTINUED = {
    "imagegeneration@002",
    "imagegeneration@003",
    "imagegeneration@004",
    "imagegeneration@005",
    "imagegeneration@006",
    "imagetext@001",
    "imagen-3.0-capability-001",
    "imagen-3.0-capability-002",
    "imagen-3.0-fast-generate-001",
    "imagen-3.0-generate-001",
    "imagen-3.0-generate-002",
    "imagen-4.0-fast-generate-001",
    "imagen-4.0-generate-001",
    "imagen-4.0-ultra-generate-001",
}
GEMINI = {"gemini-2.5-flash-image", "gemini-3-pro-image-preview"}
GEMINI_SIZES = {
    "1:1": (1024, 1024),
    "2:3": (832, 1248),
    "3:2": (1248, 832),
    "3:4": (864, 1184),
    "4:3": (1184, 864),
    "9:16": (768, 1344),
    "16:9": (1344, 768),
    "21:9": (1536, 672),
}
MODES = {
    "EDIT_MODE_INPAINT_INSERTION",
    "EDIT_MODE_INPAINT_REMOVAL",
    "EDIT_MODE_OUTPAINT",
    "EDIT_MODE_BGSWAP",
}


def error(status: int, message: str, state: str = "INVALID_ARGUMENT") -> httpx.Response:
    return json_response({"error": {"code": status, "message": message, "status": state}}, status)


def decode(data: str) -> Image.Image:
    image = Image.open(io.BytesIO(base64.b64decode(data)))
    image.load()
    return image


def encoded(image: Image.Image) -> str:
    return base64.b64encode(png(image)).decode()


class FakeVertex(Fake):
    def __init__(self, *, still_served: frozenset[str] = frozenset()) -> None:
        super().__init__()
        self.still_served = still_served
        models = "/v1/projects/(?P<project>[^/]+)/locations/(?P<location>[^/]+)/publishers/google/models/(?P<model>[^/:]+)"
        self.route("POST", f"{models}:generateContent", self.generate)
        self.route("POST", f"{models}:predict", self.predict)

    def _check(
        self, request: httpx.Request, project: str, location: str, model: str
    ) -> httpx.Response | None:
        if request.headers.get("authorization") != f"Bearer {TOKEN}":
            return error(401, "Request had invalid authentication credentials.", "UNAUTHENTICATED")
        if (project, location) != (PROJECT, LOCATION):
            return error(403, f"Permission denied on project {project}", "PERMISSION_DENIED")
        if model in DISCONTINUED and model not in self.still_served:
            return error(
                404,
                f"Publisher Model `projects/{project}/locations/{location}/publishers/google/"
                f"models/{model}` was not found or your project does not have access to it.",
                "NOT_FOUND",
            )
        return None

    def generate(
        self, request: httpx.Request, sent: Sent, project: str, location: str, model: str
    ) -> httpx.Response:
        if bad := self._check(request, project, location, model):
            return bad
        if model not in GEMINI:
            return error(404, f"Publisher Model {model} was not found", "NOT_FOUND")
        body = sent.fields
        contents = body.get("contents")
        if not isinstance(contents, list) or not contents:
            return error(400, "contents is required")
        parts = contents[-1].get("parts") or []
        images = [decode(p["inlineData"]["data"]) for p in parts if "inlineData" in p]
        texts = [p["text"] for p in parts if "text" in p]
        if not texts:
            return error(400, "a text part is required")
        if any(
            p["inlineData"].get("mimeType") not in ("image/png", "image/jpeg", "image/webp")
            for p in parts
            if "inlineData" in p
        ):
            return error(400, "inlineData.mimeType: image/png, image/jpeg or image/webp")
        config = body.get("generationConfig") or {}
        if "IMAGE" not in (config.get("responseModalities") or []):
            return json_response(
                {
                    "candidates": [
                        {
                            "content": {"role": "model", "parts": [{"text": "I can describe it."}]},
                            "finishReason": "STOP",
                        }
                    ]
                }
            )
        ratio = (config.get("imageConfig") or {}).get("aspectRatio", "1:1")
        if ratio not in GEMINI_SIZES:
            return error(400, f"imageConfig.aspectRatio {ratio} is not supported")
        if "forbidden" in " ".join(texts):
            return json_response({"promptFeedback": {"blockReason": "PROHIBITED_CONTENT"}})
        if not images:
            return error(400, "this fake edits an image: send one")
        rgb = np.clip(np.asarray(images[0].convert("RGB")).astype(int) + 5, 0, 255).astype(np.uint8)
        if len(images) > 1:
            mask = np.asarray(images[1].convert("L").resize(images[0].size)) > 127
            rgb[mask] = GREEN
        else:
            rgb = 255 - rgb
        seed = int(config.get("seed", 0))
        rgb = np.roll(rgb, seed % 3, axis=1) if len(images) == 1 else rgb
        out = Image.fromarray(rgb).resize(GEMINI_SIZES[ratio])
        return json_response(
            {
                "candidates": [
                    {
                        "content": {
                            "role": "model",
                            "parts": [
                                {"text": "Here is the edited image."},
                                {"inlineData": {"mimeType": "image/png", "data": encoded(out)}},
                            ],
                        },
                        "finishReason": "STOP",
                    }
                ],
                "usageMetadata": {"promptTokenCount": 300, "candidatesTokenCount": 1290},
                "modelVersion": model,
            }
        )

    def predict(
        self, request: httpx.Request, sent: Sent, project: str, location: str, model: str
    ) -> httpx.Response:
        if bad := self._check(request, project, location, model):
            return bad
        body = sent.fields
        instances, parameters = body.get("instances"), body.get("parameters", {})
        if not isinstance(instances, list) or len(instances) != 1:
            return error(400, "exactly one instance")
        references = {r.get("referenceType"): r for r in instances[0].get("referenceImages", [])}
        if "REFERENCE_TYPE_RAW" not in references or "REFERENCE_TYPE_MASK" not in references:
            return error(400, "referenceImages need a RAW and a MASK reference")
        mode = parameters.get("editMode")
        if mode not in MODES:
            return error(400, f"unknown editMode {mode}")
        count = int(parameters.get("sampleCount", 1))
        if not 1 <= count <= 4:
            return error(400, "sampleCount must be 1-4")
        raw = decode(
            references["REFERENCE_TYPE_RAW"]["referenceImage"]["bytesBase64Encoded"]
        ).convert("RGB")
        rgb = np.asarray(raw).copy()
        mask_reference: dict[str, Any] = references["REFERENCE_TYPE_MASK"]
        config = mask_reference.get("maskImageConfig", {})
        if config.get("maskMode") == "MASK_MODE_USER_PROVIDED":
            mask = decode(mask_reference["referenceImage"]["bytesBase64Encoded"]).convert("L")
            if mask.size != raw.size:
                return error(400, "mask must be the image's size")
            rgb[np.asarray(mask) > 0] = BLUE  # any non-zero pixel is edited
        elif config.get("maskMode") == "MASK_MODE_BACKGROUND":
            rgb[: rgb.shape[0] // 2] = BLUE
        else:
            return error(400, "maskMode required")
        return json_response(
            {
                "predictions": [
                    {"bytesBase64Encoded": encoded(Image.fromarray(rgb)), "mimeType": "image/png"}
                ]
                * count
            }
        )
