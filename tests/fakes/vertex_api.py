"""A fake of Imagen's capability-model predict endpoint on Vertex AI: checks the Bearer
token, the path (project, location, model), the instance's referenceImages (a RAW image and
a MASK with maskImageConfig), the edit mode and sampleCount 1-4; answers predictions with
base64 PNGs (the masked area painted blue)."""

from __future__ import annotations

import base64
import io
from typing import Any

import numpy as np
from PIL import Image
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

TOKEN = "ya29.fake"
PROJECT, LOCATION = "my-project", "us-central1"
BLUE = (0, 0, 255)
MODES = {
    "EDIT_MODE_INPAINT_INSERTION",
    "EDIT_MODE_INPAINT_REMOVAL",
    "EDIT_MODE_OUTPAINT",
    "EDIT_MODE_BGSWAP",
}


def error(status: int, message: str) -> JSONResponse:
    return JSONResponse(
        {"error": {"code": status, "message": message, "status": "INVALID_ARGUMENT"}},
        status_code=status,
    )


def image_of(reference: dict[str, Any]) -> Image.Image:
    image = Image.open(
        io.BytesIO(base64.b64decode(reference["referenceImage"]["bytesBase64Encoded"]))
    )
    image.load()
    return image


class FakeVertex:
    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        path = f"/v1/projects/{PROJECT}/locations/{LOCATION}/publishers/google/models/{{model}}:predict"
        self.app = Starlette(routes=[Route(path, self.predict, methods=["POST"])])

    async def predict(self, request: Request) -> JSONResponse:
        if request.headers.get("authorization") != f"Bearer {TOKEN}":
            return error(401, "Request had invalid authentication credentials.")
        if request.path_params["model"] != "imagen-3.0-capability-001":
            return error(404, "model not found")
        body = await request.json()
        self.bodies.append(body)
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
        raw = image_of(references["REFERENCE_TYPE_RAW"]).convert("RGB")
        rgb = np.asarray(raw).copy()
        mask_reference = references["REFERENCE_TYPE_MASK"]
        config = mask_reference.get("maskImageConfig", {})
        if config.get("maskMode") == "MASK_MODE_USER_PROVIDED":
            mask = image_of(mask_reference).convert("L")
            if mask.size != raw.size:
                return error(400, "mask must be the image's size")
            rgb[np.asarray(mask) > 127] = BLUE
        elif config.get("maskMode") == "MASK_MODE_BACKGROUND":
            rgb[: rgb.shape[0] // 2] = BLUE
        else:
            return error(400, "maskMode required")
        predictions = []
        for _ in range(count):
            buffer = io.BytesIO()
            Image.fromarray(rgb).save(buffer, "PNG")
            predictions.append(
                {
                    "bytesBase64Encoded": base64.b64encode(buffer.getvalue()).decode(),
                    "mimeType": "image/png",
                }
            )
        return JSONResponse({"predictions": predictions})
