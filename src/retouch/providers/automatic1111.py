"""A self-hosted AUTOMATIC1111 web UI, started with ``--api``.

inpaint and edit go to ``/sdapi/v1/img2img`` (A1111's mask is ours: white = repaint);
upscale and restore-faces to ``/sdapi/v1/extra-single-image``. While a request runs,
``/sdapi/v1/progress`` is polled into the progress callback; a cancel from that callback
sends ``/sdapi/v1/interrupt``. Base URL: A1111_BASE_URL (default http://127.0.0.1:7860);
HTTP basic auth from A1111_AUTH=user:password when the server uses ``--api-auth``.
"""

from __future__ import annotations

import base64
import json
import threading
from dataclasses import dataclass
from typing import Any

from retouch.errors import Cancelled, UnsupportedOperation
from retouch.remote import RemoteClient, decode_rgb, env, fit, png_bytes
from retouch.results import ImageResult, OutputImage
from retouch.types import (
    EditRequest,
    InpaintRequest,
    OperationSpec,
    Progress,
    ProgressCallback,
    ProviderInfo,
    ProviderStatus,
    Request,
    RestoreFacesRequest,
    UpscaleRequest,
    parse_options,
)

NAME = "automatic1111"
DEFAULT_BASE_URL = "http://127.0.0.1:7860"
FILL = {"fill": 0, "original": 1, "latent noise": 2, "latent nothing": 3}


@dataclass(frozen=True)
class A1111Options:
    sampler_name: str | None = None
    mask_blur: int = 4
    inpainting_fill: str = "original"
    inpaint_full_res: bool = False
    inpaint_full_res_padding: int = 32
    upscaler: str = "R-ESRGAN 4x+"
    face_restorer: str = "gfpgan"
    poll_interval: float = 0.5

    def __post_init__(self) -> None:
        if self.inpainting_fill not in FILL:
            raise ValueError(f"inpainting_fill must be one of {', '.join(FILL)}")
        if self.face_restorer not in ("gfpgan", "codeformer"):
            raise ValueError("face_restorer must be gfpgan or codeformer")
        if self.mask_blur < 0:
            raise ValueError("mask_blur must be >= 0")


def _b64(pixels: Any) -> str:
    return base64.b64encode(png_bytes(pixels)).decode("ascii")


class Automatic1111Provider:
    info = ProviderInfo(
        name=NAME,
        kind="remote",
        description="a self-hosted AUTOMATIC1111 web UI (--api): img2img inpaint/edit, upscale, face restore",
        operations={
            "inpaint": OperationSpec(
                min_side=64,
                working_size=1024,
                size_multiple=8,
                honours=frozenset(
                    {"prompt", "negative_prompt", "seed", "n", "strength", "steps", "guidance"}
                ),
                options=A1111Options,
            ),
            "edit": OperationSpec(
                min_side=64,
                max_side=2048,
                size_multiple=8,
                honours=frozenset({"prompt", "negative_prompt", "seed", "n", "strength"}),
                options=A1111Options,
            ),
            "upscale": OperationSpec(
                min_side=8, honours=frozenset({"model"}), options=A1111Options
            ),
            "restore-faces": OperationSpec(
                min_side=8, honours=frozenset({"fidelity"}), options=A1111Options
            ),
        },
        priority=-10,
    )

    def __init__(self, transport: Any = None) -> None:
        self.transport = transport

    def _client(self, timeout: float = 600.0) -> RemoteClient:
        auth = None
        credentials = env("A1111_AUTH")
        if credentials:
            import httpx

            user, _, password = credentials.partition(":")
            auth = httpx.BasicAuth(user, password)
        return RemoteClient(
            NAME,
            env("A1111_BASE_URL", DEFAULT_BASE_URL) or DEFAULT_BASE_URL,
            transport=self.transport,
            timeout=timeout,
            auth=auth,
        )

    def status(self) -> ProviderStatus:
        if env("A1111_BASE_URL") is None:
            return ProviderStatus(
                False,
                "set A1111_BASE_URL to your web UI started with --api (e.g. http://127.0.0.1:7860)",
            )
        return ProviderStatus(True, f"{env('A1111_BASE_URL')}")

    def run(self, request: Request, progress: ProgressCallback) -> ImageResult:
        options = parse_options(A1111Options, request.options, provider=NAME)
        rgb = request.image.rgb8()
        height, width = rgb.shape[:2]
        if isinstance(request, (InpaintRequest, EditRequest)):
            payload: dict[str, Any] = {
                "init_images": [_b64(rgb)],
                "prompt": request.prompt,
                "negative_prompt": request.negative_prompt or "",
                "seed": -1 if request.seed is None else request.seed,
                "denoising_strength": request.strength,
                "batch_size": request.n,
                "n_iter": 1,
                "width": width,
                "height": height,
            }
            if options.sampler_name:
                payload["sampler_name"] = options.sampler_name
            if isinstance(request, InpaintRequest):
                payload.update(
                    mask=_b64(request.mask.array[:, :, None].repeat(3, axis=2)),
                    mask_blur=options.mask_blur,
                    inpainting_fill=FILL[options.inpainting_fill],
                    inpaint_full_res=options.inpaint_full_res,
                    inpaint_full_res_padding=options.inpaint_full_res_padding,
                    inpainting_mask_invert=0,
                )
                if request.steps is not None:
                    payload["steps"] = request.steps
                if request.guidance is not None:
                    payload["cfg_scale"] = request.guidance
            answer = self._with_progress("POST", "/sdapi/v1/img2img", payload, options, progress)
            info = _info(answer)
            seeds = info.get("all_seeds") or [info.get("seed")] * len(answer.get("images", []))
            images = [
                OutputImage(
                    pixels=fit(
                        decode_rgb(base64.b64decode(data), provider=NAME)[:, :, :3], (width, height)
                    ),
                    seed=int(seed) if seed is not None else None,
                )
                for data, seed in zip(answer.get("images", [])[: request.n], seeds, strict=False)
            ]
            return ImageResult(
                images=images, provider=NAME, model=str(info.get("sd_model_name") or "") or None
            )
        if isinstance(request, (UpscaleRequest, RestoreFacesRequest)):
            payload = {"image": _b64(rgb), "resize_mode": 0, "upscaling_resize": 1}
            size = (width, height)
            if isinstance(request, UpscaleRequest):
                from retouch.compose import scaled_size

                size = scaled_size(
                    (width, height), scale=request.scale, width=request.width, height=request.height
                )
                payload.update(
                    upscaler_1=request.model or options.upscaler, upscaling_resize=size[0] / width
                )
            else:
                visibility = (
                    "gfpgan_visibility"
                    if options.face_restorer == "gfpgan"
                    else "codeformer_visibility"
                )
                payload.update({visibility: 1.0, "codeformer_weight": request.fidelity})
            answer = self._with_progress(
                "POST", "/sdapi/v1/extra-single-image", payload, options, progress
            )
            pixels = decode_rgb(base64.b64decode(answer["image"]), provider=NAME)[:, :, :3]
            return ImageResult(images=[OutputImage(pixels=fit(pixels, size))], provider=NAME)
        raise UnsupportedOperation(f"{NAME} does not do {request.operation}")

    def _with_progress(
        self,
        method: str,
        path: str,
        payload: dict[str, Any],
        options: A1111Options,
        progress: ProgressCallback,
    ) -> dict[str, Any]:
        """Send the job in a thread and poll /sdapi/v1/progress until it answers."""
        client = self._client()
        outcome: dict[str, Any] = {}

        def send() -> None:
            try:
                outcome["answer"] = client.request(method, path, json=payload).json()
            except Exception as exc:  # handed to the caller's thread below
                outcome["error"] = exc

        worker = threading.Thread(target=send, daemon=True)
        worker.start()
        poller = self._client(timeout=10.0)
        poller.retries = 0
        while worker.is_alive():
            worker.join(options.poll_interval)
            if not worker.is_alive():
                break
            try:
                state = poller.request("GET", "/sdapi/v1/progress").json()
                progress(Progress("a1111", round(float(state.get("progress", 0.0)) * 100), 100))
            except Cancelled:
                client_interrupt = self._client(timeout=10.0)
                client_interrupt.request("POST", "/sdapi/v1/interrupt")
                worker.join(30)
                raise
            except Exception:  # a progress poll that fails must not fail the job
                continue
        if "error" in outcome:
            raise outcome["error"]
        progress(Progress("a1111", 100, 100))
        answer: dict[str, Any] = outcome["answer"]
        return answer


def _info(answer: dict[str, Any]) -> dict[str, Any]:
    raw = answer.get("info")
    if isinstance(raw, str):
        try:
            parsed = json.loads(raw)
            return parsed if isinstance(parsed, dict) else {}
        except json.JSONDecodeError:
            return {}
    return raw if isinstance(raw, dict) else {}
