"""Replicate: run a model (owner/name, or a version id) with our inputs mapped.

A prediction is created with ``Prefer: wait`` (the service holds the answer up to 60 s); if it
is not finished then, ``urls.get`` is polled; past ``timeout`` it is cancelled at
``urls.cancel``. Outputs are file URLs, fetched at once (Replicate deletes them after an hour).
Inputs go as data URIs; masks are ours (white = repaint), as SD inpainting models on
Replicate expect. ``extra_input`` carries model-specific fields the mapping does not know.
Token: REPLICATE_API_TOKEN; base URL: REPLICATE_BASE_URL (default https://api.replicate.com).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from retouch.errors import (
    Cancelled,
    InvalidRequest,
    ProviderTimeout,
    ServerError,
    UnsupportedOperation,
)
from retouch.remote import (
    RemoteClient,
    data_uri,
    decode_rgb,
    env,
    fit,
    grey_png,
    missing,
    png_bytes,
)
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
    UpscaleRequest,
    parse_options,
)

NAME = "replicate"
DEFAULT_BASE_URL = "https://api.replicate.com"
DEFAULT_MODELS = {
    "inpaint": "stability-ai/stable-diffusion-inpainting",
    "edit": "stability-ai/stable-diffusion-img2img",
    "upscale": "nightmareai/real-esrgan",
}


@dataclass(frozen=True)
class ReplicateOptions:
    model: str | None = None
    """owner/name; the default depends on the operation."""
    version: str | None = None
    """A version id, to pin one (then ``model`` is not used)."""
    extra_input: dict[str, Any] = field(default_factory=dict)
    wait: int = 60
    timeout: float = 600.0
    poll_interval: float = 1.0

    def __post_init__(self) -> None:
        if not 1 <= self.wait <= 60:
            raise ValueError("wait must be 1..60 seconds (Prefer: wait)")
        if self.model is not None and self.model.count("/") != 1:
            raise ValueError(f"model must be owner/name, got {self.model!r}")


class ReplicateProvider:
    info = ProviderInfo(
        name=NAME,
        kind="remote",
        description="Replicate predictions: inpaint, img2img edit, upscale with any model",
        operations={
            "inpaint": OperationSpec(
                min_side=64,
                working_size=1024,
                size_multiple=8,
                honours=frozenset({"prompt", "negative_prompt", "seed", "n", "steps", "guidance"}),
                options=ReplicateOptions,
            ),
            "edit": OperationSpec(
                min_side=64,
                max_side=2048,
                honours=frozenset({"prompt", "negative_prompt", "seed", "n", "strength"}),
                options=ReplicateOptions,
            ),
            "upscale": OperationSpec(min_side=8, options=ReplicateOptions),
        },
        priority=-10,
    )

    def __init__(self, transport: Any = None) -> None:
        self.transport = transport

    def _client(self) -> RemoteClient:
        token = env("REPLICATE_API_TOKEN")
        if token is None:
            raise missing("the Replicate API token", "REPLICATE_API_TOKEN", NAME)
        return RemoteClient(
            NAME,
            env("REPLICATE_BASE_URL", DEFAULT_BASE_URL) or DEFAULT_BASE_URL,
            headers={"Authorization": f"Bearer {token}"},
            transport=self.transport,
            timeout=90.0,
        )

    def status(self) -> ProviderStatus:
        if env("REPLICATE_API_TOKEN") is None:
            error = missing("the Replicate API token", "REPLICATE_API_TOKEN", NAME)
            return ProviderStatus(False, str(error), error)
        return ProviderStatus(True, "token set")

    def run(self, request: Request, progress: ProgressCallback) -> ImageResult:
        options = parse_options(ReplicateOptions, request.options, provider=NAME)
        rgb = request.image.rgb8()
        height, width = rgb.shape[:2]
        size = (width, height)
        inputs: dict[str, Any] = {"image": data_uri(png_bytes(rgb))}
        if isinstance(request, InpaintRequest):
            inputs.update(
                mask=data_uri(grey_png(request.mask.array)),
                prompt=request.prompt,
                num_outputs=request.n,
            )
            _put(
                inputs,
                negative_prompt=request.negative_prompt,
                seed=request.seed,
                num_inference_steps=request.steps,
                guidance_scale=request.guidance,
            )
        elif isinstance(request, EditRequest):
            inputs.update(
                prompt=request.prompt, prompt_strength=request.strength, num_outputs=request.n
            )
            _put(inputs, negative_prompt=request.negative_prompt, seed=request.seed)
        elif isinstance(request, UpscaleRequest):
            from retouch.compose import scaled_size

            size = scaled_size(
                size, scale=request.scale, width=request.width, height=request.height
            )
            inputs.update(scale=round(size[0] / width, 3))
        else:
            raise UnsupportedOperation(f"{NAME} does not do {request.operation}")
        inputs.update(options.extra_input)
        client = self._client()
        prediction = self._create(client, request.operation, options, inputs)
        prediction = self._finish(client, prediction, options, progress)
        outputs = prediction.get("output")
        urls = [outputs] if isinstance(outputs, str) else list(outputs or [])
        if not urls:
            raise ServerError("the prediction succeeded without an output", provider=NAME)
        images = [
            OutputImage(
                pixels=fit(decode_rgb(client.get_bytes(url), provider=NAME)[:, :, :3], size),
                seed=getattr(request, "seed", None),
            )
            for url in urls
        ]
        model = options.version or options.model or DEFAULT_MODELS[request.operation]
        return ImageResult(
            images=images, provider=NAME, model=model, usage=dict(prediction.get("metrics") or {})
        )

    def _create(
        self,
        client: RemoteClient,
        operation: str,
        options: ReplicateOptions,
        inputs: dict[str, Any],
    ) -> dict[str, Any]:
        headers = {"Prefer": f"wait={options.wait}", "Cancel-After": f"{int(options.timeout)}s"}
        if options.version:
            body = {"version": options.version, "input": inputs}
            response = client.request("POST", "/v1/predictions", json=body, headers=headers)
        else:
            owner, _, name = (options.model or DEFAULT_MODELS[operation]).partition("/")
            response = client.request(
                "POST",
                f"/v1/models/{owner}/{name}/predictions",
                json={"input": inputs},
                headers=headers,
            )
        prediction: dict[str, Any] = response.json()
        return prediction

    def _finish(
        self,
        client: RemoteClient,
        prediction: dict[str, Any],
        options: ReplicateOptions,
        progress: ProgressCallback,
    ) -> dict[str, Any]:
        deadline = time.monotonic() + options.timeout
        polls = 0
        while prediction.get("status") in ("starting", "processing"):
            try:
                progress(Progress("replicate", 0, 1))
            except Cancelled:
                self._cancel(client, prediction)
                raise
            if time.monotonic() + options.poll_interval > deadline:
                self._cancel(client, prediction)
                raise ProviderTimeout(
                    f"prediction {prediction.get('id')} did not finish in {options.timeout:g} s; it was cancelled",
                    provider=NAME,
                )
            time.sleep(options.poll_interval)
            polls += 1
            prediction = client.request("GET", prediction["urls"]["get"]).json()
        status = prediction.get("status")
        if status == "failed":
            raise ServerError(f"the prediction failed: {prediction.get('error')}", provider=NAME)
        if status == "canceled":
            raise Cancelled(f"{NAME}: the prediction was cancelled")
        if status != "succeeded":
            raise InvalidRequest(f"{NAME}: unexpected prediction status {status!r}")
        progress(Progress("replicate", 1, 1))
        return prediction

    @staticmethod
    def _cancel(client: RemoteClient, prediction: dict[str, Any]) -> None:
        cancel_url = (prediction.get("urls") or {}).get("cancel")
        if cancel_url:
            client.request("POST", cancel_url)


def _put(target: dict[str, Any], **values: Any) -> None:
    target.update({k: v for k, v in values.items() if v is not None})
