"""A fake Replicate API: predictions by model or version, ``Prefer: wait``, polling at
urls.get, cancel at urls.cancel, file outputs served by URL. It checks the Bearer token and
that images arrive as data URIs."""

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

TOKEN = "r8_fake"
YELLOW = (255, 255, 0)


def from_data_uri(value: Any) -> Image.Image | None:
    if not isinstance(value, str) or not value.startswith("data:image/png;base64,"):
        return None
    image = Image.open(io.BytesIO(base64.b64decode(value.split(",", 1)[1])))
    image.load()
    return image


class FakeReplicate:
    def __init__(self, *, polls_before_done: int = 0, never_finish: bool = False) -> None:
        self.polls_before_done = polls_before_done
        self.never_finish = never_finish
        self.predictions: dict[str, dict[str, Any]] = {}
        self.files: dict[str, bytes] = {}
        self.bodies: list[dict[str, Any]] = []
        self.app = Starlette(
            routes=[
                Route("/v1/models/{owner}/{name}/predictions", self.create, methods=["POST"]),
                Route("/v1/predictions", self.create, methods=["POST"]),
                Route("/v1/predictions/{pid}", self.get, methods=["GET"]),
                Route("/v1/predictions/{pid}/cancel", self.cancel, methods=["POST"]),
                Route("/files/{name}", self.file, methods=["GET"]),
            ]
        )

    def _auth(self, request: Request) -> JSONResponse | None:
        if request.headers.get("authorization") != f"Bearer {TOKEN}":
            return JSONResponse(
                {
                    "title": "Unauthenticated",
                    "detail": "You did not pass a valid authentication token",
                    "status": 401,
                },
                status_code=401,
            )
        return None

    async def create(self, request: Request) -> Response:
        if denied := self._auth(request):
            return denied
        body = await request.json()
        self.bodies.append(
            {"path": request.url.path, "prefer": request.headers.get("prefer"), **body}
        )
        inputs = body.get("input") or {}
        image = from_data_uri(inputs.get("image"))
        if image is None:
            return JSONResponse(
                {"detail": "input.image: a data URI or URL is required", "status": 422},
                status_code=422,
            )
        rgb = np.asarray(image.convert("RGB")).copy()
        if "mask" in inputs:
            mask = from_data_uri(inputs["mask"])
            if mask is None or mask.size != image.size:
                return JSONResponse(
                    {"detail": "input.mask: same-size image required", "status": 422},
                    status_code=422,
                )
            rgb[np.asarray(mask.convert("L")) > 127] = YELLOW
        if "scale" in inputs:
            factor = float(inputs["scale"])
            rgb = np.asarray(
                Image.fromarray(rgb).resize(
                    (round(rgb.shape[1] * factor), round(rgb.shape[0] * factor))
                )
            )
        pid = f"p{len(self.predictions)}"
        base = str(request.base_url).rstrip("/")
        outputs = []
        for i in range(int(inputs.get("num_outputs", 1))):
            buffer = io.BytesIO()
            Image.fromarray(np.roll(rgb, i, axis=1)).save(buffer, "PNG")
            self.files[f"{pid}-{i}.png"] = buffer.getvalue()
            outputs.append(f"{base}/files/{pid}-{i}.png")
        done = self.polls_before_done == 0 and not self.never_finish
        prediction = {
            "id": pid,
            "status": "succeeded" if done else "starting",
            "input": inputs,
            "output": outputs if done else None,
            "error": None,
            "metrics": {"predict_time": 0.1},
            "urls": {
                "get": f"{base}/v1/predictions/{pid}",
                "cancel": f"{base}/v1/predictions/{pid}/cancel",
            },
        }
        self.predictions[pid] = {**prediction, "_polls": 0, "_outputs": outputs}
        return JSONResponse(prediction, status_code=201)

    async def get(self, request: Request) -> Response:
        if denied := self._auth(request):
            return denied
        state = self.predictions[request.path_params["pid"]]
        state["_polls"] += 1
        if (
            state["status"] in ("starting", "processing")
            and not self.never_finish
            and state["_polls"] >= self.polls_before_done
        ):
            state["status"], state["output"] = "succeeded", state["_outputs"]
        elif state["status"] == "starting":
            state["status"] = "processing"
        return JSONResponse({k: v for k, v in state.items() if not k.startswith("_")})

    async def cancel(self, request: Request) -> Response:
        if denied := self._auth(request):
            return denied
        state = self.predictions[request.path_params["pid"]]
        state["status"] = "canceled"
        return JSONResponse({k: v for k, v in state.items() if not k.startswith("_")})

    async def file(self, request: Request) -> Response:
        return Response(self.files[request.path_params["name"]], media_type="image/png")
