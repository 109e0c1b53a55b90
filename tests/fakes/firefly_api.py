"""A fake of Adobe IMS and the Firefly Services API (v2 storage, v3 async jobs) refusing
what they refuse.

Rules (AdobeDocs/ff-services-docs, firefly-api guides: how-tos ``using-async-apis.md``,
``using-fill-image.md``, ``using-expand-image.md``; concepts ``image-upload``, ``masking``,
``placement``, ``seeds``; the quickstart's IMS call):
- IMS ``POST /ims/token/v3`` form ``grant_type=client_credentials``, ``client_id``,
  ``client_secret``, a ``scope`` with ``firefly_api`` -> ``{access_token, token_type,
  expires_in}``; a wrong secret is 400 ``invalid_client``.
- every API call needs ``x-api-key`` (the client id) and a live ``Authorization: Bearer``
  token (401 otherwise).
- ``POST /v2/storage/image``: the raw image with Content-Type image/jpeg, image/png or
  image/webp -> ``{"images": [{"id"}]}``.
- ``/v3/images/fill-async``, ``/expand-async``, ``/generate-similar-async``: the image (and
  fill's mask) by an uploaded id; ``numVariations`` 1-4; ``seeds`` exactly as many as
  numVariations when both are given; prompts at most 1024 characters; expand's ``size`` 1-2688
  px a side, ``placement`` not with a mask. Each answers ``{jobId, statusUrl, cancelUrl}``.
- ``GET /v3/status/{jobId}``: pending, running, then succeeded with
  ``result.outputs[{seed, image: {url}}]``; ``PUT /v3/cancel/{jobId}`` -> canceled.
- output URLs are pre-signed S3 URLs: a download that also sends an Authorization header is
  refused ("Only one auth mechanism allowed", Amazon S3 InvalidArgument).

Fill paints the white (fill) part of the mask red; expand places the source by its inset and
paints the new area red; similar images shift the picture by the seed.
"""

from __future__ import annotations

import io
from typing import Any

import httpx
import numpy as np
from PIL import Image

from .http import Fake, Sent, json_response, png

CLIENT_ID, SECRET = "ff-client", "ff-secret"
RED = (220, 20, 20)


def error(status: int, code: str, message: str) -> httpx.Response:
    return json_response({"error_code": code, "message": message}, status)


class FakeFirefly(Fake):
    def __init__(self, *, polls: int = 2) -> None:
        super().__init__()
        self.polls = polls
        self.tokens: set[str] = set()
        self.uploads: dict[str, bytes] = {}
        self.jobs: dict[str, dict[str, Any]] = {}
        self.files: dict[str, bytes] = {}
        self.route("POST", "/ims/token/v3", self.token)
        self.route("POST", "/v2/storage/image", self.upload)
        self.route("POST", "/v3/images/(?P<kind>fill|expand|generate-similar)-async", self.create)
        self.route("GET", "/v3/status/(?P<job>[^/]+)", self.status)
        self.route("PUT", "/v3/cancel/(?P<job>[^/]+)", self.cancel)
        self.route("GET", "/s3/(?P<name>[^/]+)", self.download)

    def expire_tokens(self) -> None:
        self.tokens.clear()

    def token(self, request: httpx.Request, sent: Sent) -> httpx.Response:
        form = sent.fields
        if form.get("grant_type") != "client_credentials":
            return json_response({"error": "unsupported_grant_type"}, 400)
        if (form.get("client_id"), form.get("client_secret")) != (CLIENT_ID, SECRET):
            return json_response(
                {"error": "invalid_client", "error_description": "invalid client_secret parameter"},
                400,
            )
        if "firefly_api" not in str(form.get("scope", "")).split(","):
            return json_response({"error": "invalid_scope"}, 400)
        value = f"token-{len(self.tokens) + self.count('POST', '/ims/token/v3')}"
        self.tokens.add(value)
        return json_response({"access_token": value, "token_type": "bearer", "expires_in": 86399})

    def _denied(self, request: httpx.Request) -> httpx.Response | None:
        if request.headers.get("x-api-key") != CLIENT_ID:
            return error(401, "unauthorized", "x-api-key: missing or wrong client id")
        bearer = request.headers.get("authorization", "")
        if not bearer.startswith("Bearer ") or bearer[7:] not in self.tokens:
            return error(401, "unauthorized", "Oauth token is not valid")
        return None

    def upload(self, request: httpx.Request, sent: Sent) -> httpx.Response:
        if denied := self._denied(request):
            return denied
        if request.headers.get("content-type") not in ("image/jpeg", "image/png", "image/webp"):
            return error(
                415, "unsupported_media_type", "Content-Type: image/jpeg, image/png or image/webp"
            )
        uid = f"u{len(self.uploads)}"
        self.uploads[uid] = sent.body
        return json_response({"images": [{"id": uid}]})

    def _image(self, value: Any) -> Image.Image | None:
        uid = ((value or {}).get("source") or {}).get("uploadId")
        if uid not in self.uploads:
            return None
        image = Image.open(io.BytesIO(self.uploads[uid]))
        image.load()
        return image

    def create(self, request: httpx.Request, sent: Sent, kind: str) -> httpx.Response:
        if denied := self._denied(request):
            return denied
        body = sent.fields
        n = int(body.get("numVariations", len(body.get("seeds") or []) or 1))
        if not 1 <= n <= 4:
            return error(400, "validation_error", "numVariations: 1-4")
        seeds = body.get("seeds")
        if seeds is not None and len(seeds) != n:
            return error(400, "validation_error", "seeds: as many as numVariations")
        for key in ("prompt", "negativePrompt"):
            if len(str(body.get(key, ""))) > 1024:
                return error(400, "validation_error", f"{key}: at most 1024 characters")
        image = self._image(body.get("image"))
        if image is None:
            return error(400, "validation_error", "image.source.uploadId: unknown upload")
        rgb = np.asarray(image.convert("RGB")).copy()
        if kind == "fill":
            mask = self._image(body.get("mask"))
            if mask is None:
                return error(400, "validation_error", "mask.source.uploadId: required")
            white = np.asarray(mask.convert("L").resize(image.size)) > 127  # white = fill
            if (body.get("mask") or {}).get("invert"):
                white = ~white
            rgb[white] = RED
            results = [rgb] * n
        elif kind == "expand":
            size = body.get("size") or {}
            width, height = int(size.get("width", 0)), int(size.get("height", 0))
            if not (1 <= width <= 2688 and 1 <= height <= 2688):
                return error(400, "validation_error", "size: width and height 1-2688")
            inset = (body.get("placement") or {}).get("inset") or {}
            if inset and (body.get("image") or {}).get("mask"):
                return error(400, "validation_error", "placement cannot be used with a mask")
            left, top = (
                int(inset.get("left", (width - image.width) // 2)),
                int(inset.get("top", (height - image.height) // 2)),
            )
            if left < 0 or top < 0 or left + image.width > width or top + image.height > height:
                return error(400, "validation_error", "placement: the image must fit the size")
            canvas = np.zeros((height, width, 3), np.uint8)
            canvas[:] = RED
            canvas[top : top + image.height, left : left + image.width] = rgb
            results = [canvas] * n
        else:
            results = [np.roll(rgb, 5 * (i + 1), axis=1) for i in range(n)]
        job = f"urn:ff:jobs:fake:{len(self.jobs)}"
        names = []
        for i, pixels in enumerate(results):
            name = f"{len(self.files)}-{i}.png"
            self.files[name] = png(Image.fromarray(pixels))
            names.append(name)
        self.jobs[job] = {
            "status": "pending",
            "polls": 0,
            "names": names,
            "seeds": seeds or [1842533538 + i for i in range(n)],
            "kind": kind,
        }
        base = "https://firefly-api.adobe.io"
        return json_response(
            {
                "jobId": job,
                "statusUrl": f"{base}/v3/status/{job}",
                "cancelUrl": f"{base}/v3/cancel/{job}",
            },
            202,
        )

    def status(self, request: httpx.Request, sent: Sent, job: str) -> httpx.Response:
        if denied := self._denied(request):
            return denied
        state = self.jobs.get(job)
        if state is None:
            return error(404, "not_found", "no such job")
        if state["status"] in ("pending", "running"):
            state["polls"] += 1
            state["status"] = "succeeded" if state["polls"] > self.polls else "running"
        body: dict[str, Any] = {"jobId": job, "status": state["status"]}
        if state["status"] == "succeeded":
            body["result"] = {
                "outputs": [
                    {
                        "seed": seed,
                        "image": {
                            "url": f"https://bucket.s3.amazonaws.com/s3/{name}?X-Amz-Signature=abc"
                        },
                    }
                    for seed, name in zip(state["seeds"], state["names"], strict=True)
                ]
            }
        return json_response(body)

    def cancel(self, request: httpx.Request, sent: Sent, job: str) -> httpx.Response:
        if denied := self._denied(request):
            return denied
        self.jobs[job]["status"] = "canceled"
        return json_response({"jobId": job, "status": "cancel_pending"})

    def download(self, request: httpx.Request, sent: Sent, name: str) -> httpx.Response:
        if "authorization" in request.headers:
            return httpx.Response(
                400,
                content=b"<Error><Code>InvalidArgument</Code><Message>Only one auth mechanism allowed</Message></Error>",
            )
        return httpx.Response(200, content=self.files[name], headers={"content-type": "image/png"})

    def bodies(self, kind: str) -> list[dict[str, Any]]:
        return [s.fields for s in self.sent if s.path == f"/v3/images/{kind}-async"]
