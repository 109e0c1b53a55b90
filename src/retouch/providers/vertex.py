"""Google Imagen on Vertex AI: the capability model's edits (inpaint insertion and removal,
outpaint, background swap) with a user-provided mask and dilation.

``POST {base}/v1/projects/{project}/locations/{location}/publishers/google/models/{model}:predict``
with ``referenceImages`` (the raw image, and the mask with ``MASK_MODE_USER_PROVIDED``; white =
edit, as Google's samples use). Outpaint sends the image on the extended canvas and a mask of
the new area. Credentials: an explicit token (option ``token``), VERTEX_ACCESS_TOKEN or
GOOGLE_OAUTH_ACCESS_TOKEN, else Application Default Credentials through google-auth when it
is installed. Project: VERTEX_PROJECT or GOOGLE_CLOUD_PROJECT; location: VERTEX_LOCATION
(us-central1); base URL: VERTEX_BASE_URL (default https://{location}-aiplatform.googleapis.com).
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any

import numpy as np

from retouch import compose
from retouch.errors import AuthenticationError, InvalidRequest, UnsupportedOperation
from retouch.remote import RemoteClient, decode_rgb, env, fit, grey_png, png_bytes
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
MODEL = "imagen-3.0-capability-001"


@dataclass(frozen=True)
class VertexOptions:
    model: str = MODEL
    dilation: float = 0.01
    base_steps: int | None = None
    token: str | None = None
    mode: str | None = None
    """edit: "bgswap" (replace the background, keep the subject Imagen finds)."""

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


class VertexProvider:
    info = ProviderInfo(
        name=NAME,
        kind="remote",
        description="Google Imagen on Vertex AI: inpaint insertion/removal, outpaint, background swap",
        operations={
            "inpaint": OperationSpec(
                min_side=64,
                working_size=1536,
                honours=frozenset({"prompt", "seed", "n"}),
                options=VertexOptions,
            ),
            "erase": OperationSpec(
                min_side=64, working_size=1536, honours=frozenset({"seed"}), options=VertexOptions
            ),
            "outpaint": OperationSpec(
                min_side=64,
                max_side=4096,
                honours=frozenset({"prompt", "seed"}),
                options=VertexOptions,
            ),
            "edit": OperationSpec(
                min_side=64,
                max_side=4096,
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
        options = parse_options(VertexOptions, request.options, provider=NAME)
        project = env("VERTEX_PROJECT") or env("GOOGLE_CLOUD_PROJECT")
        if project is None:
            raise InvalidRequest(f"{NAME}: set VERTEX_PROJECT (or GOOGLE_CLOUD_PROJECT)")
        location = env("VERTEX_LOCATION", "us-central1") or "us-central1"
        base = env("VERTEX_BASE_URL", f"https://{location}-aiplatform.googleapis.com") or ""
        rgb = request.image.rgb8()
        height, width = rgb.shape[:2]
        mask_mode = "MASK_MODE_USER_PROVIDED"
        mask = None
        prompt = ""
        count = 1
        if isinstance(request, InpaintRequest):
            mode, mask, prompt, count = (
                "EDIT_MODE_INPAINT_INSERTION",
                request.mask.array,
                request.prompt,
                request.n,
            )
        elif isinstance(request, EraseRequest):
            mode, mask = "EDIT_MODE_INPAINT_REMOVAL", request.mask.array
        elif isinstance(request, OutpaintRequest):
            canvas, mask, _ = compose.outpaint_canvas(
                rgb,
                left=request.left,
                right=request.right,
                top=request.top,
                bottom=request.bottom,
                feather=0,
            )
            rgb, mode, prompt = canvas, "EDIT_MODE_OUTPAINT", request.prompt or ""
            height, width = rgb.shape[:2]
        elif isinstance(request, EditRequest):
            if options.mode != "bgswap":
                raise UnsupportedOperation(
                    f"{NAME} edits by background swap: set the option mode=bgswap"
                )
            mode, prompt, count, mask_mode = (
                "EDIT_MODE_BGSWAP",
                request.prompt,
                request.n,
                "MASK_MODE_BACKGROUND",
            )
        else:
            raise UnsupportedOperation(f"{NAME} does not do {request.operation}")
        if not 1 <= count <= 4:
            raise InvalidRequest(f"{NAME}: Imagen returns 1-4 images per request")
        mask_reference: dict[str, Any] = {
            "referenceType": "REFERENCE_TYPE_MASK",
            "referenceId": 2,
            "maskImageConfig": {"maskMode": mask_mode, "dilation": options.dilation},
        }
        if mask is not None:
            mask_reference["referenceImage"] = {
                "bytesBase64Encoded": _b64(grey_png(np.asarray(mask, np.uint8)))
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
        parameters: dict[str, Any] = {"editMode": mode, "sampleCount": count}
        if options.base_steps is not None:
            parameters["editConfig"] = {"baseSteps": options.base_steps}
        seed = getattr(request, "seed", None)
        if seed is not None:
            parameters.update(
                seed=seed, addWatermark=False
            )  # Imagen honours a seed only without its watermark
        client = RemoteClient(
            NAME,
            base,
            headers={"Authorization": f"Bearer {_token(options)}"},
            transport=self.transport,
        )
        path = f"/v1/projects/{project}/locations/{location}/publishers/google/models/{options.model}:predict"
        progress(Progress(request.operation, 0, 1))
        answer = client.request(
            "POST", path, json={"instances": [instance], "parameters": parameters}
        ).json()
        predictions = answer.get("predictions") or []
        if not predictions:
            raise InvalidRequest(
                f"{NAME}: no image came back (Imagen filters some prompts without saying why); try another prompt"
            )
        images = [
            OutputImage(
                pixels=fit(
                    decode_rgb(base64.b64decode(p["bytesBase64Encoded"]), provider=NAME)[:, :, :3],
                    (width, height),
                ),
                seed=seed,
            )
            for p in predictions
        ]
        progress(Progress(request.operation, 1, 1))
        return ImageResult(images=images, provider=NAME, model=options.model)
