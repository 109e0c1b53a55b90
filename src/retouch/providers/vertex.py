"""Google image editing on Vertex AI: Gemini image models (default) and Imagen's capability
models (by name, for projects that still have them).

Google lists ``imagen-3.0-capability-001`` and ``-002`` among discontinued endpoints
("update your model endpoints before June 30, 2026"; replacement ``gemini-2.5-flash-image``:
docs.cloud.google.com/vertex-ai/generative-ai/docs/image/edit-images-overview). So:

- **Gemini** (default ``gemini-2.5-flash-image``; any ``gemini-*-image*`` model):
  ``POST .../publishers/google/models/{model}:generateContent`` with the picture and, for a
  masked edit, the mask (white = edit) as ``inlineData`` parts and an instruction
  (``INSTRUCTIONS``) as text; ``generationConfig`` asks for ``responseModalities`` TEXT and
  IMAGE, the ``seed`` and the nearest supported ``imageConfig.aspectRatio`` (1:1, 2:3, 3:2,
  3:4, 4:3, 9:16, 16:9, 21:9: google-genai ``types.ImageConfig``). The image comes back as an
  ``inlineData`` part of the first candidate, at the model's own size: it is resized back,
  and the Toolkit pastes the original back outside the mask (Gemini may redraw everything).
  ``n`` images are ``n`` requests with seeds seed, seed + 1, ...
- **Imagen** (``imagen-*-capability-*``): ``POST .../models/{model}:predict`` with
  ``referenceImages`` (the RAW image; the MASK with ``MASK_MODE_USER_PROVIDED`` and
  ``dilation``), ``editMode`` and ``sampleCount`` 1-4 (google-genai
  ``_EditImageParameters_to_vertex``). Imagen edits every non-zero mask pixel, so the mask is
  thresholded at 50 % first (a feathered edge would otherwise grow the edit). A 404 for a
  discontinued model says so and names the replacement.

Outpaint sends the extended canvas (edge pixels stretched outwards) and a mask of the new
area. Credentials: an explicit token (option ``token``), VERTEX_ACCESS_TOKEN or
GOOGLE_OAUTH_ACCESS_TOKEN, else Application Default Credentials through google-auth when it
is installed. Project: VERTEX_PROJECT or GOOGLE_CLOUD_PROJECT; location: VERTEX_LOCATION
(us-central1); base URL: VERTEX_BASE_URL (default https://{location}-aiplatform.googleapis.com).
"""

from __future__ import annotations

import base64
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from retouch.errors import (
    AuthenticationError,
    ContentPolicy,
    InvalidRequest,
    ServerError,
    UnsupportedOperation,
)
from retouch.remote import (
    RemoteClient,
    decode_rgb,
    env,
    grey_png,
    outpaint_work,
    png_bytes,
    sized,
)
from retouch.results import ImageResult, OutputImage
from retouch.types import (
    EditRequest,
    EraseRequest,
    InpaintRequest,
    OperationSpec,
    OutpaintRequest,
    Progress,
    ProgressCallback,
    ProviderInfo,
    ProviderStatus,
    Request,
    parse_options,
)

NAME = "vertex"
MODEL = "gemini-2.5-flash-image"
GEMINI_MODELS = ("gemini-2.5-flash-image", "gemini-3-pro-image-preview")
IMAGEN_MODELS = ("imagen-3.0-capability-001", "imagen-3.0-capability-002")
DISCONTINUED = frozenset(IMAGEN_MODELS)
ASPECT_RATIOS = ("1:1", "2:3", "3:2", "3:4", "4:3", "9:16", "16:9", "21:9")
WORKING_SIZE = 1024
OUTPAINT_MAX_SIDE = 2048
TIMEOUT_S = 300.0
INSTRUCTIONS = {
    "inpaint": "The second image is a mask of the first. Change only the part of the first "
    "image that is white in the mask, and keep everything else exactly as it is. In the "
    "white part: {prompt}",
    "erase": "The second image is a mask of the first. Remove what is in the part of the "
    "first image that is white in the mask and fill it in to match its surroundings; keep "
    "everything else exactly as it is.",
    "outpaint": "The first image has an empty border; the second image is a mask of it (white "
    "= the border). Fill the border by extending the picture seamlessly, and keep the rest "
    "exactly as it is.{prompt}",
    "edit": "{prompt}",
}
BLOCKED = ("SAFETY", "PROHIBITED_CONTENT", "IMAGE_SAFETY", "BLOCKLIST", "SPII", "RECITATION")


@dataclass(frozen=True)
class VertexOptions:
    model: str = MODEL
    dilation: float = 0.01
    """Imagen: how far it grows the mask (0-1)."""
    base_steps: int | None = None
    """Imagen: sampling steps."""
    token: str | None = None
    mode: str | None = None
    """edit with Imagen: "bgswap" (replace the background, keep the subject Imagen finds)."""

    def __post_init__(self) -> None:
        if not 0 <= self.dilation <= 1:
            raise ValueError("dilation must be between 0 and 1")
        if self.base_steps is not None and not 1 <= self.base_steps <= 100:
            raise ValueError("base_steps must be 1..100")


def _token(options: VertexOptions) -> str:
    token = options.token or env("VERTEX_ACCESS_TOKEN") or env("GOOGLE_OAUTH_ACCESS_TOKEN")
    if token:
        return token
    try:
        import google.auth
        import google.auth.transport.requests
    except ImportError:
        raise AuthenticationError(
            "no credentials: export VERTEX_ACCESS_TOKEN=$(gcloud auth print-access-token), or install google-auth for ADC",
            provider=NAME,
        ) from None
    try:
        credentials, _ = google.auth.default(
            scopes=["https://www.googleapis.com/auth/cloud-platform"]
        )
        credentials.refresh(google.auth.transport.requests.Request())
    except Exception as exc:  # google-auth raises its own errors for missing/expired credentials
        raise AuthenticationError(
            f"Application Default Credentials failed: {exc}", provider=NAME
        ) from exc
    return str(credentials.token)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def family(model: str) -> str:
    """``gemini`` or ``imagen``; any other name is refused with the known ones."""
    if model.startswith("gemini-") and "image" in model:
        return "gemini"
    if model.startswith("imagen-") and "capability" in model:
        return "imagen"
    raise InvalidRequest(
        f"{NAME} does not know the model {model!r}; known: {', '.join(GEMINI_MODELS)} "
        f"(Gemini, the default), {', '.join(IMAGEN_MODELS)} (Imagen, discontinued by Google)",
        param="model",
    )


def aspect_ratio(width: int, height: int) -> str:
    """The supported aspect ratio nearest to width:height."""
    target = math.log(width / height)

    def distance(ratio: str) -> float:
        w, h = (int(v) for v in ratio.split(":"))
        return abs(math.log(w / h) - target)

    return min(ASPECT_RATIOS, key=distance)


def threshold(mask: NDArray[np.uint8]) -> NDArray[np.uint8]:
    """Imagen edits every non-zero pixel: keep only what is at least half selected."""
    return np.where(mask >= 128, 255, 0).astype(np.uint8)


class VertexProvider:
    info = ProviderInfo(
        name=NAME,
        kind="remote",
        description="Google on Vertex AI: Gemini image editing (default) or Imagen capability "
        "models: inpaint, erase, outpaint, edit (Imagen background swap)",
        operations={
            "inpaint": OperationSpec(
                min_side=64,
                working_size=WORKING_SIZE,
                honours=frozenset({"prompt", "seed", "n"}),
                options=VertexOptions,
            ),
            "erase": OperationSpec(
                min_side=64,
                working_size=WORKING_SIZE,
                honours=frozenset({"seed"}),
                options=VertexOptions,
            ),
            "outpaint": OperationSpec(
                min_side=64, honours=frozenset({"prompt", "seed"}), options=VertexOptions
            ),
            "edit": OperationSpec(
                min_side=64,
                max_side=4096,
                working_size=WORKING_SIZE,
                honours=frozenset({"prompt", "seed", "n"}),
                options=VertexOptions,
            ),
        },
        priority=-10,
    )

    def __init__(self, transport: Any = None) -> None:
        self.transport = transport

    def status(self) -> ProviderStatus:
        project = env("VERTEX_PROJECT") or env("GOOGLE_CLOUD_PROJECT")
        if project is None:
            return ProviderStatus(
                False, "set VERTEX_PROJECT (or GOOGLE_CLOUD_PROJECT) and VERTEX_ACCESS_TOKEN"
            )
        if not (env("VERTEX_ACCESS_TOKEN") or env("GOOGLE_OAUTH_ACCESS_TOKEN")):
            return ProviderStatus(
                False,
                "set VERTEX_ACCESS_TOKEN (gcloud auth print-access-token) or use ADC via google-auth",
            )
        return ProviderStatus(True, f"project {project}, {env('VERTEX_LOCATION', 'us-central1')}")

    def run(self, request: Request, progress: ProgressCallback) -> ImageResult:
        if not isinstance(request, (InpaintRequest, EraseRequest, OutpaintRequest, EditRequest)):
            raise UnsupportedOperation(f"{NAME} does not do {request.operation}")
        options = parse_options(VertexOptions, request.options, provider=NAME)
        kind = family(options.model)
        project = env("VERTEX_PROJECT") or env("GOOGLE_CLOUD_PROJECT")
        if project is None:
            raise InvalidRequest(f"{NAME}: set VERTEX_PROJECT (or GOOGLE_CLOUD_PROJECT)")
        location = env("VERTEX_LOCATION", "us-central1") or "us-central1"
        base = env("VERTEX_BASE_URL", f"https://{location}-aiplatform.googleapis.com") or ""
        client = RemoteClient(
            NAME,
            base,
            headers={"Authorization": f"Bearer {_token(options)}"},
            transport=self.transport,
            timeout=TIMEOUT_S,
            still_running="it may have been billed",
        )
        path = (
            f"/v1/projects/{project}/locations/{location}/publishers/google/models/{options.model}"
        )
        rgb = request.image.rgb8()
        size = (rgb.shape[1], rgb.shape[0])
        mask: NDArray[np.uint8] | None = None
        prompt = ""
        n = 1
        if isinstance(request, InpaintRequest):
            mask, prompt, n = request.mask.array, request.prompt, request.n
        elif isinstance(request, EraseRequest):
            mask = request.mask.array
        elif isinstance(request, OutpaintRequest):
            rgb, mask, size = outpaint_work(
                request,
                rgb,
                max_side=OUTPAINT_MAX_SIDE,
            )
            prompt = request.prompt or ""
        else:
            if request.mask is not None and kind == "imagen":
                raise UnsupportedOperation(f"{NAME}: Imagen edits with a mask through inpaint")
            mask, prompt, n = (
                request.mask.array if request.mask is not None else None,
                request.prompt,
                request.n,
            )
        progress(Progress(request.operation, 0, 1))
        if kind == "imagen":
            outputs = self._imagen(client, path, request, options, rgb, mask, prompt, n)
        else:
            if options.mode is not None:
                raise InvalidRequest(f"{NAME}: mode={options.mode} is for Imagen models")
            outputs = self._gemini(client, path, request, rgb, mask, prompt, n, progress)
        progress(Progress(request.operation, 1, 1))
        seed = getattr(request, "seed", None)
        pixels, report = sized(outputs, size)
        return ImageResult(
            images=[
                OutputImage(pixels=p, seed=None if seed is None else seed + i)
                for i, p in enumerate(pixels)
            ],
            provider=NAME,
            model=options.model,
            usage={"output_size": report},
        )

    def _gemini(
        self,
        client: RemoteClient,
        path: str,
        request: InpaintRequest | EraseRequest | OutpaintRequest | EditRequest,
        rgb: NDArray[np.uint8],
        mask: NDArray[np.uint8] | None,
        prompt: str,
        n: int,
        progress: ProgressCallback,
    ) -> list[NDArray[np.uint8]]:
        operation = request.operation
        if isinstance(request, EditRequest) and mask is not None:
            operation = "inpaint"  # an edit limited by a mask is an inpaint
        if operation == "outpaint":
            text = INSTRUCTIONS["outpaint"].format(prompt=f" Guidance: {prompt}" if prompt else "")
        else:
            text = INSTRUCTIONS[operation].format(prompt=prompt)
        parts: list[dict[str, Any]] = [
            {"inlineData": {"mimeType": "image/png", "data": _b64(png_bytes(rgb))}}
        ]
        if mask is not None:
            parts.append({"inlineData": {"mimeType": "image/png", "data": _b64(grey_png(mask))}})
        parts.append({"text": text})
        seed = getattr(request, "seed", None)
        outputs = []
        for index in range(n):
            config: dict[str, Any] = {
                "responseModalities": ["TEXT", "IMAGE"],
                "imageConfig": {"aspectRatio": aspect_ratio(rgb.shape[1], rgb.shape[0])},
            }
            if seed is not None:
                config["seed"] = seed + index
            body = {"contents": [{"role": "user", "parts": parts}], "generationConfig": config}
            answer = client.request("POST", f"{path}:generateContent", json=body).json()
            outputs.append(_gemini_image(answer))
            progress(Progress(request.operation, index + 1, n))
        return outputs

    def _imagen(
        self,
        client: RemoteClient,
        path: str,
        request: InpaintRequest | EraseRequest | OutpaintRequest | EditRequest,
        options: VertexOptions,
        rgb: NDArray[np.uint8],
        mask: NDArray[np.uint8] | None,
        prompt: str,
        n: int,
    ) -> list[NDArray[np.uint8]]:
        mask_mode = "MASK_MODE_USER_PROVIDED"
        if isinstance(request, InpaintRequest):
            mode = "EDIT_MODE_INPAINT_INSERTION"
        elif isinstance(request, EraseRequest):
            mode = "EDIT_MODE_INPAINT_REMOVAL"
        elif isinstance(request, OutpaintRequest):
            mode = "EDIT_MODE_OUTPAINT"
        else:
            if options.mode != "bgswap":
                raise UnsupportedOperation(
                    f"{NAME}: Imagen edits by background swap: set the option mode=bgswap "
                    f"(or use the default {MODEL} for prompt edits)"
                )
            mode, mask_mode = "EDIT_MODE_BGSWAP", "MASK_MODE_BACKGROUND"
        if not 1 <= n <= 4:
            raise InvalidRequest(f"{NAME}: Imagen returns 1-4 images per request")
        mask_reference: dict[str, Any] = {
            "referenceType": "REFERENCE_TYPE_MASK",
            "referenceId": 2,
            "maskImageConfig": {"maskMode": mask_mode, "dilation": options.dilation},
        }
        if mask is not None:
            mask_reference["referenceImage"] = {
                "bytesBase64Encoded": _b64(grey_png(threshold(mask)))
            }
        instance = {
            "prompt": prompt,
            "referenceImages": [
                {
                    "referenceType": "REFERENCE_TYPE_RAW",
                    "referenceId": 1,
                    "referenceImage": {"bytesBase64Encoded": _b64(png_bytes(rgb))},
                },
                mask_reference,
            ],
        }
        parameters: dict[str, Any] = {"editMode": mode, "sampleCount": n}
        if options.base_steps is not None:
            parameters["editConfig"] = {"baseSteps": options.base_steps}
        seed = getattr(request, "seed", None)
        if seed is not None:
            parameters.update(seed=seed, addWatermark=False)  # a seed needs no watermark
        try:
            answer = client.request(
                "POST", f"{path}:predict", json={"instances": [instance], "parameters": parameters}
            ).json()
        except InvalidRequest as exc:
            if options.model in DISCONTINUED and "(404)" in str(exc):
                raise InvalidRequest(
                    f"{NAME}: {options.model} is discontinued by Google (update before "
                    f"2026-06-30) and this project no longer has it; use {MODEL} (the default): "
                    f"{exc}",
                    param="model",
                ) from exc
            raise
        predictions = answer.get("predictions") or []
        if not predictions:
            raise ContentPolicy(
                "no image came back (Imagen filters some prompts without saying why); try "
                "another prompt",
                provider=NAME,
            )
        return [
            decode_rgb(base64.b64decode(p["bytesBase64Encoded"]), provider=NAME)[:, :, :3]
            for p in predictions
        ]


def _gemini_image(answer: dict[str, Any]) -> NDArray[np.uint8]:
    """The image part of the first candidate; blocks and text-only answers as errors."""
    feedback = answer.get("promptFeedback") or {}
    if feedback.get("blockReason"):
        raise ContentPolicy(f"the prompt was blocked ({feedback['blockReason']})", provider=NAME)
    candidates = answer.get("candidates") or []
    if not candidates:
        raise ServerError("the answer has no candidate", provider=NAME)
    candidate = candidates[0]
    texts = []
    for part in (candidate.get("content") or {}).get("parts") or []:
        inline = part.get("inlineData")
        if inline and str(inline.get("mimeType", "")).startswith("image/"):
            return decode_rgb(base64.b64decode(inline["data"]), provider=NAME)[:, :, :3]
        if part.get("text"):
            texts.append(str(part["text"]))
    reason = candidate.get("finishReason")
    if reason in BLOCKED:
        raise ContentPolicy(f"the model refused ({reason})", provider=NAME)
    said = " ".join(texts)[:200] or "nothing"
    raise ServerError(
        f"the model answered without an image (finishReason {reason}; it said: {said})",
        provider=NAME,
    )
