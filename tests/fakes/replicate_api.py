"""A fake of Replicate's HTTP API that refuses what the service refuses.

Rules:
- Bearer token, else 401 ``{title, detail, status}`` (HTTP API reference, Authentication).
- ``POST /v1/models/{owner}/{name}/predictions`` serves **official models only**; a community
  model answers 404 there and must be run with ``POST /v1/predictions`` and its ``version``
  (HTTP API reference, "Create a prediction using an official model"; changelog 2025-08-05).
- ``GET /v1/models/{owner}/{name}`` -> the model with ``latest_version.id`` (replicate-python
  ``replicate/model.py``).
- **data URIs are for files up to 256 KB**; larger ones answer 422 (OpenAPI
  ``schemas_prediction_request.input``: "Use a data URL when you have a small file <= 256kb",
  else an HTTP URL, e.g. from ``POST /v1/files``, multipart ``content`` -> ``urls.get``
  (replicate-python ``replicate/file.py``)).
- each model's inputs are checked against its published schema (num_outputs 1-4 for SD,
  prompt_strength 0-1, Real-ESRGAN scale 0-10, FLUX Fill Pro steps 1-50 and guidance 2-5;
  mask the image's size); an unknown version is 422.
- ``Prefer: wait=N`` answers a finished prediction when it finishes in time, else
  ``starting`` to be polled at ``urls.get``; ``urls.cancel`` cancels it.
- a ``Cancel-After`` deadline ends the prediction as ``aborted`` when it is reached before the
  prediction starts, ``canceled`` when it is reached while it runs (changelog
  2025-10-16-prediction-deadlines). Here time is counted in polls (``poll_seconds`` each).

It "runs" a model by its kind: inpainting paints the masked pixels yellow, img2img blends
toward a colour by prompt_strength shifted by the seed, Real-ESRGAN resizes by scale.
"""

from __future__ import annotations

import base64
import io
import re
from typing import Any

import httpx
import numpy as np
from PIL import Image

from .http import Fake, Sent, Upload, json_response, png

TOKEN = "r8_fake"
YELLOW = (255, 255, 0)
MODELS = {
    # owner/name: (official, version id, kind)
    "stability-ai/stable-diffusion-inpainting": (False, "a" * 64, "sd-inpaint"),
    "stability-ai/stable-diffusion-img2img": (False, "b" * 64, "sd-img2img"),
    "nightmareai/real-esrgan": (False, "c" * 64, "real-esrgan"),
    "black-forest-labs/flux-fill-pro": (True, "d" * 64, "flux-fill"),
}
DATA_URI_MAX = 256 * 1024


def problem(status: int, detail: str, title: str = "Invalid input") -> httpx.Response:
    return json_response({"title": title, "detail": detail, "status": status}, status)


class FakeReplicate(Fake):
    def __init__(self, *, run_polls: int = 0, start_polls: int = 1) -> None:
        super().__init__()
        self.run_polls = run_polls
        """Polls a prediction takes after the create (0: done within ``Prefer: wait``)."""
        self.start_polls = start_polls
        """Polls it stays ``starting`` (queued, booting) before ``processing``."""
        self.poll_seconds = 1.0
        """The time a poll stands for, against ``Cancel-After``."""
        self.never_finish = False
        self.predictions: dict[str, dict[str, Any]] = {}
        self.files: dict[str, bytes] = {}
        self.route("GET", "/v1/models/(?P<owner>[^/]+)/(?P<name>[^/]+)", self.model)
        self.route(
            "POST", "/v1/models/(?P<owner>[^/]+)/(?P<name>[^/]+)/predictions", self.create_official
        )
        self.route("POST", "/v1/predictions", self.create_version)
        self.route("GET", "/v1/predictions/(?P<pid>[^/]+)", self.get)
        self.route("POST", "/v1/predictions/(?P<pid>[^/]+)/cancel", self.cancel)
        self.route("POST", "/v1/files", self.upload)
        self.route("GET", "/v1/files/(?P<fid>[^/]+)", self.download)
        self.route("GET", "/delivery/(?P<name>[^/]+)", self.delivery)

    def _denied(self, request: httpx.Request) -> httpx.Response | None:
        if request.headers.get("authorization") != f"Bearer {TOKEN}":
            return problem(401, "You did not pass a valid authentication token", "Unauthenticated")
        return None

    def model(self, request: httpx.Request, sent: Sent, owner: str, name: str) -> httpx.Response:
        if denied := self._denied(request):
            return denied
        known = MODELS.get(f"{owner}/{name}")
        if known is None:
            return problem(404, "Not found", "Not found")
        return json_response(
            {
                "url": f"https://replicate.com/{owner}/{name}",
                "owner": owner,
                "name": name,
                "latest_version": {"id": known[1], "openapi_schema": {}},
            }
        )

    def create_official(
        self, request: httpx.Request, sent: Sent, owner: str, name: str
    ) -> httpx.Response:
        if denied := self._denied(request):
            return denied
        known = MODELS.get(f"{owner}/{name}")
        if known is None or not known[0]:
            # Community models are not served on the official-model route.
            return problem(404, f"The requested model {owner}/{name} was not found", "Not found")
        return self._create(request, sent, known[2], f"{owner}/{name}")

    def create_version(self, request: httpx.Request, sent: Sent) -> httpx.Response:
        if denied := self._denied(request):
            return denied
        version = str(sent.fields.get("version") or "")
        for model, (_, version_id, kind) in MODELS.items():
            if version in (version_id, f"{model}:{version_id}"):
                return self._create(request, sent, kind, model)
        return problem(422, f"version: Invalid version or not permitted: {version!r}")

    def _file(self, value: Any, name: str) -> tuple[Image.Image | None, httpx.Response | None]:
        if not isinstance(value, str):
            return None, problem(422, f"input.{name}: a file URL or data URI is required")
        if value.startswith("data:"):
            data = base64.b64decode(value.split(",", 1)[1])
            if len(data) > DATA_URI_MAX:
                return None, problem(
                    422,
                    f"input.{name}: data URIs are for files up to 256kb; upload larger files "
                    "with POST /v1/files and pass their URL",
                )
        else:
            match = re.search(r"/v1/files/([^/]+)$", value)
            if match is None or match.group(1) not in self.files:
                return None, problem(422, f"input.{name}: could not fetch {value}")
            data = self.files[match.group(1)]
        image = Image.open(io.BytesIO(data))
        image.load()
        return image, None

    def _create(self, request: httpx.Request, sent: Sent, kind: str, model: str) -> httpx.Response:
        inputs = sent.fields.get("input") or {}
        image, bad = self._file(inputs.get("image"), "image")
        if bad or image is None:
            return bad or problem(422, "input.image")
        rgb = np.asarray(image.convert("RGB")).copy()
        count = 1
        if kind in ("sd-inpaint", "flux-fill"):
            mask, bad = self._file(inputs.get("mask"), "mask")
            if bad or mask is None:
                return bad or problem(422, "input.mask")
            if mask.size != image.size:
                return problem(422, "input.mask: must be the image's size")
            if not inputs.get("prompt"):
                return problem(422, "input.prompt: required")
            rgb[np.asarray(mask.convert("L")) > 127] = YELLOW
        if kind == "sd-inpaint":
            count = int(inputs.get("num_outputs", 1))
            if not 1 <= count <= 4:
                return problem(422, "input.num_outputs: 1-4")
        if kind == "flux-fill":
            if not 1 <= int(inputs.get("steps", 50)) <= 50:
                return problem(422, "input.steps: 1-50")
            if not 2 <= float(inputs.get("guidance", 3)) <= 5:
                return problem(422, "input.guidance: 2-5")
            if inputs.get("output_format", "jpg") not in ("jpg", "png"):
                return problem(422, "input.output_format: jpg or png")
        if kind == "sd-img2img":
            strength = float(inputs.get("prompt_strength", 0.8))
            if not 0 <= strength <= 1 or not inputs.get("prompt"):
                return problem(422, "input.prompt_strength: 0-1; input.prompt: required")
            count = int(inputs.get("num_outputs", 1))
            seed = int(inputs.get("seed", 7))
            flat = np.array([seed % 256, (seed * 7) % 256, 128], float)
            rgb = (rgb * (1 - strength) + flat * strength).astype(np.uint8)
        if kind == "real-esrgan":
            factor = float(inputs.get("scale", 4))
            if not 0 < factor <= 10:
                return problem(422, "input.scale: 0-10")
            rgb = np.asarray(
                Image.fromarray(rgb).resize(
                    (round(rgb.shape[1] * factor), round(rgb.shape[0] * factor))
                )
            )
        pid = f"p{len(self.predictions)}"
        base = str(request.url.copy_with(path="/", query=None)).rstrip("/")
        outputs = []
        for i in range(count):
            name = f"{pid}-{i}.png"
            self.files[name] = png(Image.fromarray(np.roll(rgb, i, axis=1)))
            outputs.append(f"{base}/delivery/{name}")
        cancel_after = request.headers.get("cancel-after")
        deadline = float(cancel_after.rstrip("s")) if cancel_after else None
        done = self.run_polls == 0 and not self.never_finish
        state = {
            "id": pid,
            "model": model,
            "version": MODELS[model][1],
            "status": "succeeded" if done else "starting",
            "input": inputs,
            "output": (outputs[0] if kind == "flux-fill" else outputs) if done else None,
            "error": None,
            "metrics": {"predict_time": 0.1},
            "urls": {
                "get": f"{base}/v1/predictions/{pid}",
                "cancel": f"{base}/v1/predictions/{pid}/cancel",
            },
            "_polls": 0,
            "_outputs": outputs[0] if kind == "flux-fill" else outputs,
            "_deadline": deadline,
            "_prefer": request.headers.get("prefer"),
        }
        self.predictions[pid] = state
        return json_response(self._public(state), 201)

    @staticmethod
    def _public(state: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in state.items() if not k.startswith("_")}

    def get(self, request: httpx.Request, sent: Sent, pid: str) -> httpx.Response:
        if denied := self._denied(request):
            return denied
        state = self.predictions[pid]
        state["_polls"] += 1
        if state["status"] in ("starting", "processing"):
            deadline = state["_deadline"]
            if deadline is not None and state["_polls"] * self.poll_seconds >= deadline:
                state["status"] = "aborted" if state["status"] == "starting" else "canceled"
            elif self.never_finish:
                pass
            elif state["_polls"] >= self.run_polls:
                state["status"], state["output"] = "succeeded", state["_outputs"]
            elif state["_polls"] >= self.start_polls:
                state["status"] = "processing"
        return json_response(self._public(state))

    def cancel(self, request: httpx.Request, sent: Sent, pid: str) -> httpx.Response:
        if denied := self._denied(request):
            return denied
        state = self.predictions[pid]
        state["status"] = "canceled"
        return json_response(self._public(state))

    def upload(self, request: httpx.Request, sent: Sent) -> httpx.Response:
        if denied := self._denied(request):
            return denied
        content = sent.fields.get("content")
        if not isinstance(content, Upload):
            return problem(422, "content: a file is required")
        fid = f"f{len(self.files)}"
        self.files[fid] = content.data
        base = str(request.url.copy_with(path="/", query=None)).rstrip("/")
        return json_response(
            {
                "id": fid,
                "name": sent.fields.get("filename", content.filename),
                "content_type": content.content_type,
                "size": len(content.data),
                "urls": {"get": f"{base}/v1/files/{fid}"},
            },
            201,
        )

    def download(self, request: httpx.Request, sent: Sent, fid: str) -> httpx.Response:
        return httpx.Response(200, content=self.files[fid], headers={"content-type": "image/png"})

    def delivery(self, request: httpx.Request, sent: Sent, name: str) -> httpx.Response:
        return httpx.Response(200, content=self.files[name], headers={"content-type": "image/png"})
