"""A self-hosted AUTOMATIC1111 web UI, started with ``--api``.

Contract (AUTOMATIC1111/stable-diffusion-webui ``modules/api/api.py`` and
``modules/api/models.py``):

- inpaint, outpaint, edit and variations go to ``POST /sdapi/v1/img2img`` (A1111's mask is
  ours: white = repaint; ``inpainting_fill`` 0 fill, 1 original, 2 latent noise, 3 latent
  nothing); upscale and restore-faces to ``POST /sdapi/v1/extra-single-image``; upscaler
  names come from ``GET /sdapi/v1/upscalers``.
- img2img runs under the server's ``queue_lock``: jobs run one at a time, so **an img2img is
  never sent twice**. After a read timeout the first job is still queued or running on the
  user's GPU; the error says so (and how to look: ``/sdapi/v1/progress``, ``/interrupt``)
  instead of queueing a duplicate.
- While a request runs, ``GET /sdapi/v1/progress`` is polled into the progress callback; a
  cancel from that callback sends ``POST /sdapi/v1/interrupt``.
- Outpaint pads the canvas (edge pixels stretched outwards) and inpaints the new area from
  latent noise; variations are one img2img with ``batch_size`` n (A1111 gives seeds seed,
  seed + 1, ...); edit's width/height are asked of A1111 (``resize_mode`` 0).

Base URL: A1111_BASE_URL, or STABLE_DIFFUSION_LOCAL_BASE_URL when it points at an A1111
(probed: ``GET /sdapi/v1/options``); HTTP basic auth from A1111_AUTH=user:password when the
server uses ``--api-auth``.
"""

from __future__ import annotations

import base64
import json
import threading
from dataclasses import dataclass
from typing import Any

from retouch.compose import output_size, scaled_size
from retouch.errors import Cancelled, InvalidRequest, UnsupportedOperation
from retouch.remote import (
    LOCAL_SD_ENV,
    RemoteClient,
    decode_rgb,
    env,
    local_base_url,
    outpaint_work,
    png_bytes,
    sized,
)
from retouch.results import ImageResult, OutputImage
from retouch.types import (
    EditRequest,
    InpaintRequest,
    OperationSpec,
    OutpaintRequest,
    Progress,
    ProgressCallback,
    ProviderInfo,
    ProviderStatus,
    Request,
    RestoreFacesRequest,
    UpscaleRequest,
    VariationsRequest,
    parse_options,
)

NAME = "automatic1111"
ENV = "A1111_BASE_URL"
FILL = {"fill": 0, "original": 1, "latent noise": 2, "latent nothing": 3}
WORKING_SIZE = 1024
VARIATION_PROMPT = "a variation of this picture"


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
    timeout: float = 600.0
    """Seconds to wait for a job's answer; the job is never sent twice."""

    def __post_init__(self) -> None:
        if self.inpainting_fill not in FILL:
            raise ValueError(f"inpainting_fill must be one of {', '.join(FILL)}")
        if self.face_restorer not in ("gfpgan", "codeformer"):
            raise ValueError("face_restorer must be gfpgan or codeformer")
        if self.mask_blur < 0:
            raise ValueError("mask_blur must be >= 0")
        if self.timeout <= 0:
            raise ValueError("timeout must be positive")


def _b64(pixels: Any) -> str:
    return base64.b64encode(png_bytes(pixels)).decode("ascii")


class Automatic1111Provider:
    info = ProviderInfo(
        name=NAME,
        kind="remote",
        description="a self-hosted AUTOMATIC1111 web UI (--api): img2img inpaint/outpaint/edit/"
        "variations, upscale, face restore",
        operations={
            "inpaint": OperationSpec(
                min_side=64,
                working_size=WORKING_SIZE,
                size_multiple=8,
                honours=frozenset(
                    {"prompt", "negative_prompt", "seed", "n", "strength", "steps", "guidance"}
                ),
                options=A1111Options,
            ),
            "outpaint": OperationSpec(
                min_side=64, honours=frozenset({"prompt", "seed"}), options=A1111Options
            ),
            "edit": OperationSpec(
                min_side=64,
                max_side=2048,
                size_multiple=8,
                honours=frozenset({"prompt", "negative_prompt", "seed", "n", "strength"}),
                options=A1111Options,
            ),
            "variations": OperationSpec(
                min_side=64,
                max_side=2048,
                honours=frozenset({"prompt", "seed", "n", "strength"}),
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

    def _base(self) -> str | None:
        return local_base_url(ENV, NAME, transport=self.transport)

    def _client(self, timeout: float = 600.0, *, retries: int | None = None) -> RemoteClient:
        base = self._base()
        if base is None:
            raise InvalidRequest(f"{NAME}: set {ENV} to your web UI started with --api")
        auth = None
        credentials = env("A1111_AUTH")
        if credentials:
            import httpx

            user, _, password = credentials.partition(":")
            auth = httpx.BasicAuth(user, password)
        client = RemoteClient(
            NAME,
            base,
            transport=self.transport,
            timeout=timeout,
            auth=auth,
            still_running=f"the job may still be queued or running on your server ({base}): "
            "watch /sdapi/v1/progress, or POST /sdapi/v1/interrupt, before trying again",
        )
        if retries is not None:
            client.retries = retries
        return client

    def status(self) -> ProviderStatus:
        base = self._base()
        if base is None:
            return ProviderStatus(
                False,
                f"set {ENV} (or {LOCAL_SD_ENV}) to your web UI started with --api "
                "(e.g. http://127.0.0.1:7860)",
            )
        return ProviderStatus(True, base)

    def run(self, request: Request, progress: ProgressCallback) -> ImageResult:
        options = parse_options(A1111Options, request.options, provider=NAME)
        rgb = request.image.rgb8()
        height, width = rgb.shape[:2]
        if isinstance(request, (InpaintRequest, EditRequest, VariationsRequest, OutpaintRequest)):
            size = (width, height)
            payload: dict[str, Any] = {
                "seed": -1 if request.seed is None else request.seed,
                "n_iter": 1,
                "batch_size": 1,
                "width": width,
                "height": height,
                "resize_mode": 0,
            }
            if options.sampler_name:
                payload["sampler_name"] = options.sampler_name
            if isinstance(request, OutpaintRequest):
                canvas, mask, size = outpaint_work(
                    request,
                    rgb,
                    max_side=WORKING_SIZE,
                    multiple=8,
                )
                payload.update(
                    init_images=[_b64(canvas)],
                    prompt=request.prompt or "",
                    negative_prompt="",
                    denoising_strength=1.0,
                    width=canvas.shape[1],
                    height=canvas.shape[0],
                    mask=_b64(mask[:, :, None].repeat(3, axis=2)),
                    mask_blur=options.mask_blur,
                    inpainting_fill=FILL["latent noise"],
                    inpaint_full_res=False,
                    inpainting_mask_invert=0,
                )
            else:
                payload.update(
                    init_images=[_b64(rgb)],
                    prompt=(request.prompt or VARIATION_PROMPT)
                    if isinstance(request, VariationsRequest)
                    else request.prompt,
                    negative_prompt=getattr(request, "negative_prompt", None) or "",
                    denoising_strength=request.strength,
                    batch_size=request.n,
                )
            if isinstance(request, (EditRequest, VariationsRequest)):
                if isinstance(request, EditRequest) and request.mask is not None:
                    self._mask(payload, request.mask.array, options)
                else:
                    # A1111 makes the asked size itself (resize_mode 0: just resize).
                    size = output_size(request)
                    payload.update(width=_round8(size[0]), height=_round8(size[1]))
            if isinstance(request, InpaintRequest):
                self._mask(payload, request.mask.array, options)
                if request.steps is not None:
                    payload["steps"] = request.steps
                if request.guidance is not None:
                    payload["cfg_scale"] = request.guidance
            answer = self._with_progress("/sdapi/v1/img2img", payload, options, progress)
            info = _info(answer)
            images_b64 = answer.get("images", [])[: payload["batch_size"]]
            seeds = info.get("all_seeds") or [info.get("seed")] * len(images_b64)
            outputs = [
                decode_rgb(base64.b64decode(data), provider=NAME)[:, :, :3] for data in images_b64
            ]
            outputs, report = sized(outputs, size)
            return ImageResult(
                images=[
                    OutputImage(pixels=p, seed=int(s) if s is not None else None)
                    for p, s in zip(outputs, seeds, strict=False)
                ],
                provider=NAME,
                model=str(info.get("sd_model_name") or "") or None,
                usage={"output_size": report},
            )
        if isinstance(request, (UpscaleRequest, RestoreFacesRequest)):
            payload = {"image": _b64(rgb), "resize_mode": 0, "upscaling_resize": 1}
            size = (width, height)
            if isinstance(request, UpscaleRequest):
                size = scaled_size(
                    (width, height), scale=request.scale, width=request.width, height=request.height
                )
                upscaler = request.model or options.upscaler
                self._check_upscaler(upscaler)
                payload.update(upscaler_1=upscaler, upscaling_resize=size[0] / width)
            else:
                visibility = (
                    "gfpgan_visibility"
                    if options.face_restorer == "gfpgan"
                    else "codeformer_visibility"
                )
                payload.update({visibility: 1.0, "codeformer_weight": request.fidelity})
            answer = self._with_progress("/sdapi/v1/extra-single-image", payload, options, progress)
            pixels = decode_rgb(base64.b64decode(answer["image"]), provider=NAME)[:, :, :3]
            [pixels], report = sized([pixels], size)
            return ImageResult(
                images=[OutputImage(pixels=pixels)],
                provider=NAME,
                model=payload.get("upscaler_1"),
                usage={"output_size": report},
            )
        raise UnsupportedOperation(f"{NAME} does not do {request.operation}")

    @staticmethod
    def _mask(payload: dict[str, Any], mask: Any, options: A1111Options) -> None:
        payload.update(
            mask=_b64(mask[:, :, None].repeat(3, axis=2)),
            mask_blur=options.mask_blur,
            inpainting_fill=FILL[options.inpainting_fill],
            inpaint_full_res=options.inpaint_full_res,
            inpaint_full_res_padding=options.inpaint_full_res_padding,
            inpainting_mask_invert=0,
        )

    def _check_upscaler(self, name: str) -> None:
        """Refuse an upscaler the server does not have, naming those it has."""
        known = [
            str(u.get("name"))
            for u in self._client(timeout=30.0).request("GET", "/sdapi/v1/upscalers").json()
        ]
        if name not in known:
            raise InvalidRequest(
                f"{NAME}: the server has no upscaler {name!r}; it has: {', '.join(known)}",
                param="model",
            )

    def _with_progress(
        self,
        path: str,
        payload: dict[str, Any],
        options: A1111Options,
        progress: ProgressCallback,
    ) -> dict[str, Any]:
        """Send the job (once) in a thread and poll /sdapi/v1/progress until it answers."""
        client = self._client(timeout=options.timeout)
        outcome: dict[str, Any] = {}

        def send() -> None:
            try:
                outcome["answer"] = client.request("POST", path, json=payload).json()
            except Exception as exc:  # handed to the caller's thread below
                outcome["error"] = exc

        worker = threading.Thread(target=send, daemon=True)
        worker.start()
        poller = self._client(timeout=10.0, retries=0)
        while worker.is_alive():
            worker.join(options.poll_interval)
            if not worker.is_alive():
                break
            try:
                state = poller.request("GET", "/sdapi/v1/progress").json()
                progress(Progress("a1111", round(float(state.get("progress", 0.0)) * 100), 100))
            except Cancelled:
                self._client(timeout=10.0).request("POST", "/sdapi/v1/interrupt", resend=True)
                worker.join(30)
                raise
            except Exception:  # a progress poll that fails must not fail the job
                continue
        if "error" in outcome:
            raise outcome["error"]
        progress(Progress("a1111", 100, 100))
        answer: dict[str, Any] = outcome["answer"]
        return answer


def _round8(value: int) -> int:
    return max(8, round(value / 8) * 8)


def _info(answer: dict[str, Any]) -> dict[str, Any]:
    raw = answer.get("info")
    if isinstance(raw, str):
        try:
            parsed = json.loads(raw)
            return parsed if isinstance(parsed, dict) else {}
        except json.JSONDecodeError:
            return {}
    return raw if isinstance(raw, dict) else {}
