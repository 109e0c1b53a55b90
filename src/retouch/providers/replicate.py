"""Replicate: inpaint, outpaint, img2img edit, variations and upscale with known models.

Contract (Replicate HTTP API reference and OpenAPI schema, api.replicate.com/openapi.json;
replicate-python ``replicate/model.py``, ``prediction.py``, ``file.py``, ``helpers.py``):

- **Official models** (e.g. ``black-forest-labs/flux-fill-pro``) run through
  ``POST /v1/models/{owner}/{name}/predictions``. **Community models** (the defaults here:
  ``stability-ai/stable-diffusion-inpainting``, ``stability-ai/stable-diffusion-img2img``,
  ``nightmareai/real-esrgan``) answer 404 there: they run through ``POST /v1/predictions``
  with a ``version``, looked up once per model with ``GET /v1/models/{owner}/{name}`` ->
  ``latest_version.id`` and cached (a model with no published version runs by its model
  route). The option ``version`` pins one.
- **File inputs**: a data URI only for files up to 256 KB ("Use a data URL when you have a
  small file <= 256kb"); larger files are uploaded with ``POST /v1/files`` (multipart
  ``content``) and passed by their ``urls.get``.
- ``Prefer: wait=N`` holds the create up to 60 s (the read timeout is N + 10 s, as
  replicate-python gives N + 0.5); after that ``urls.get`` is polled. ``Cancel-After`` (the
  option ``timeout``) ends a prediction at its deadline: ``aborted`` if it had not started
  (not charged), ``canceled`` if it was running (replicate.com/changelog/
  2025-10-16-prediction-deadlines); both are reported as timeouts unless retouch cancelled
  it. A cancel from the progress callback, or our own deadline, posts ``urls.cancel``.
- Status: starting, processing, succeeded, failed, canceled, aborted. Outputs are file URLs
  (one string or a list), fetched at once (deleted after an hour).
- A create is never re-sent after a read timeout: the prediction may be running (and billed).

Each known model has an input mapping (its "family"); ``--option family=...`` runs another
model with one of them. Masks are ours (white = repaint). Variations are ``n`` img2img runs
at the requested strength with seeds seed, seed + 1, ...; outpaint pads the canvas and
inpaints the new area.
Token: REPLICATE_API_TOKEN; base URL: REPLICATE_BASE_URL (default https://api.replicate.com).
"""

from __future__ import annotations

import hashlib
import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from retouch.compose import output_size, scaled_size
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
    grey_png,
    missing,
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
    UpscaleRequest,
    VariationsRequest,
    parse_options,
)

NAME = "replicate"
DEFAULT_BASE_URL = "https://api.replicate.com"
DATA_URI_MAX_BYTES = 256 * 1024
WORKING_SIZE = 1024
MAX_SEED = 2**32 - 1
FAMILIES = ("sd-inpaint", "sd-img2img", "real-esrgan", "flux-fill")
MODELS: dict[str, str] = {
    "stability-ai/stable-diffusion-inpainting": "sd-inpaint",
    "stability-ai/stable-diffusion-img2img": "sd-img2img",
    "nightmareai/real-esrgan": "real-esrgan",
    "black-forest-labs/flux-fill-pro": "flux-fill",
    "black-forest-labs/flux-fill-dev": "flux-fill",
}
OFFICIAL = frozenset({"black-forest-labs/flux-fill-pro", "black-forest-labs/flux-fill-dev"})
"""Models Replicate runs on the official-model route (no version needed)."""
DEFAULT_MODELS = {
    "inpaint": "stability-ai/stable-diffusion-inpainting",
    "outpaint": "stability-ai/stable-diffusion-inpainting",
    "edit": "stability-ai/stable-diffusion-img2img",
    "variations": "stability-ai/stable-diffusion-img2img",
    "upscale": "nightmareai/real-esrgan",
}
OPERATION_FAMILIES = {
    "inpaint": ("sd-inpaint", "flux-fill"),
    "outpaint": ("sd-inpaint", "flux-fill"),
    "edit": ("sd-img2img",),
    "variations": ("sd-img2img",),
    "upscale": ("real-esrgan",),
}
VARIATION_PROMPT = "a variation of this picture, same subject and style"
OUTPAINT_PROMPT = "continue the picture seamlessly into the border"


@dataclass(frozen=True)
class ReplicateOptions:
    model: str | None = None
    """owner/name; the default depends on the operation."""
    version: str | None = None
    """A version id, to pin one (no lookup)."""
    family: str | None = None
    """How to map inputs for a model retouch does not know: one of FAMILIES."""
    official: bool | None = None
    """Run ``model`` on the official-model route (default: known official models only)."""
    extra_input: dict[str, Any] = field(default_factory=dict)
    wait: int = 60
    timeout: float = 600.0
    poll_interval: float = 1.0

    def __post_init__(self) -> None:
        if not 1 <= self.wait <= 60:
            raise ValueError("wait must be 1..60 seconds (Prefer: wait)")
        if self.model is not None and self.model.count("/") != 1:
            raise ValueError(f"model must be owner/name, got {self.model!r}")
        if self.family is not None and self.family not in FAMILIES:
            raise ValueError(f"family must be one of {', '.join(FAMILIES)}")


def _files_cache_key(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class ReplicateProvider:
    info = ProviderInfo(
        name=NAME,
        kind="remote",
        description="Replicate predictions: inpaint, outpaint (SD inpainting, FLUX Fill), "
        "img2img edit, variations, upscale (Real-ESRGAN)",
        operations={
            "inpaint": OperationSpec(
                min_side=64,
                working_size=WORKING_SIZE,
                size_multiple=8,
                honours=frozenset({"prompt", "negative_prompt", "seed", "n", "steps", "guidance"}),
                options=ReplicateOptions,
            ),
            "outpaint": OperationSpec(
                min_side=64, honours=frozenset({"prompt", "seed"}), options=ReplicateOptions
            ),
            "edit": OperationSpec(
                min_side=64,
                max_side=2048,
                honours=frozenset({"prompt", "negative_prompt", "seed", "n", "strength"}),
                options=ReplicateOptions,
            ),
            "variations": OperationSpec(
                min_side=64,
                max_side=2048,
                honours=frozenset({"prompt", "seed", "n", "strength"}),
                options=ReplicateOptions,
            ),
            "upscale": OperationSpec(min_side=8, options=ReplicateOptions),
        },
        priority=-10,
    )

    def __init__(self, transport: Any = None) -> None:
        self.transport = transport
        self._versions: dict[str, str | None] = {}
        """owner/name -> latest version id (None: none published, run by model route)."""

    def _client(self, options: ReplicateOptions | None = None) -> RemoteClient:
        token = env("REPLICATE_API_TOKEN")
        if token is None:
            raise missing("the Replicate API token", "REPLICATE_API_TOKEN", NAME)
        wait = options.wait if options is not None else 60
        return RemoteClient(
            NAME,
            env("REPLICATE_BASE_URL", DEFAULT_BASE_URL) or DEFAULT_BASE_URL,
            headers={"Authorization": f"Bearer {token}"},
            transport=self.transport,
            timeout=wait + 10.0,
            still_running="see https://replicate.com/predictions before trying again",
        )

    def status(self) -> ProviderStatus:
        if env("REPLICATE_API_TOKEN") is None:
            error = missing("the Replicate API token", "REPLICATE_API_TOKEN", NAME)
            return ProviderStatus(False, str(error), error)
        return ProviderStatus(True, "token set")

    def run(self, request: Request, progress: ProgressCallback) -> ImageResult:
        if request.operation not in OPERATION_FAMILIES:
            raise UnsupportedOperation(f"{NAME} does not do {request.operation}")
        options = parse_options(ReplicateOptions, request.options, provider=NAME)
        model = options.model or DEFAULT_MODELS[request.operation]
        family = options.family or MODELS.get(model)
        if family is None:
            raise InvalidRequest(
                f"{NAME} does not know the model {model!r}; known: {', '.join(MODELS)} "
                f"(or give --option family=one of {', '.join(FAMILIES)} to map its inputs)",
                param="model",
            )
        if family not in OPERATION_FAMILIES[request.operation]:
            raise InvalidRequest(
                f"{NAME}: {model} ({family}) does not do {request.operation}; use one of "
                + ", ".join(
                    m for m, f in MODELS.items() if f in OPERATION_FAMILIES[request.operation]
                ),
                param="model",
            )
        client = self._client(options)
        uploads: dict[str, str] = {}

        def file_input(data: bytes, name: str) -> str:
            return self._file(client, data, name, uploads)

        rgb = request.image.rgb8()
        size = (rgb.shape[1], rgb.shape[0])
        runs: list[dict[str, Any]]
        seeds: list[int | None]
        if isinstance(request, (InpaintRequest, OutpaintRequest)):
            if isinstance(request, InpaintRequest):
                mask, prompt, n = request.mask.array, request.prompt, request.n
            else:
                rgb, mask, size = outpaint_work(
                    request,
                    rgb,
                    max_side=WORKING_SIZE,
                    multiple=8,
                )
                prompt, n = request.prompt or OUTPAINT_PROMPT, 1
            runs, seeds = self._inpaint_runs(request, family, rgb, mask, prompt, n, file_input)
        elif isinstance(request, (EditRequest, VariationsRequest)):
            if isinstance(request, EditRequest) and request.mask is not None:
                raise UnsupportedOperation(f"{NAME}: edit with a mask is inpaint; use inpaint")
            image = file_input(png_bytes(rgb), "image.png")
            size = output_size(request)
            if isinstance(request, EditRequest):
                prompt, negative = request.prompt, request.negative_prompt
            else:
                prompt, negative = request.prompt or VARIATION_PROMPT, None
            seeds = _seeds(request.seed, request.n)
            runs = [
                _without_none(
                    {
                        "image": image,
                        "prompt": prompt,
                        "negative_prompt": negative,
                        "prompt_strength": request.strength,
                        "num_outputs": 1,
                        "seed": seed,
                    }
                )
                for seed in seeds
            ]
        else:
            assert isinstance(request, UpscaleRequest)
            size = scaled_size(
                size, scale=request.scale, width=request.width, height=request.height
            )
            factor = size[0] / rgb.shape[1]
            if not 0 < factor <= 10:
                raise InvalidRequest(f"{NAME}: Real-ESRGAN scales by up to 10, not {factor:g}")
            runs = [{"image": file_input(png_bytes(rgb), "image.png"), "scale": round(factor, 3)}]
            seeds = [None]
        outputs: list[NDArray[np.uint8]] = []
        output_seeds: list[int | None] = []
        metrics: dict[str, Any] = {}
        for index, (inputs, seed) in enumerate(zip(runs, seeds, strict=True)):
            progress(Progress(request.operation, index, len(runs)))
            prediction = self._create(client, model, options, {**inputs, **options.extra_input})
            prediction = self._finish(client, prediction, options, progress)
            found = prediction.get("output")
            urls = [found] if isinstance(found, str) else list(found or [])
            if not urls:
                raise ServerError("the prediction succeeded without an output", provider=NAME)
            for url in urls:
                outputs.append(decode_rgb(client.get_bytes(url), provider=NAME)[:, :, :3])
                output_seeds.append(seed)
            metrics = dict(prediction.get("metrics") or metrics)
        progress(Progress(request.operation, len(runs), len(runs)))
        outputs, report = sized(outputs, size)
        return ImageResult(
            images=[
                OutputImage(pixels=p, seed=s) for p, s in zip(outputs, output_seeds, strict=True)
            ],
            provider=NAME,
            model=options.version or model,
            usage={**metrics, "output_size": report},
        )

    def _inpaint_runs(
        self,
        request: InpaintRequest | OutpaintRequest,
        family: str,
        rgb: NDArray[np.uint8],
        mask: NDArray[np.uint8],
        prompt: str,
        n: int,
        file_input: Any,
    ) -> tuple[list[dict[str, Any]], list[int | None]]:
        image = file_input(png_bytes(rgb), "image.png")
        mask_url = file_input(grey_png(mask), "mask.png")
        steps = getattr(request, "steps", None)
        guidance = getattr(request, "guidance", None)
        negative = getattr(request, "negative_prompt", None)
        if family == "sd-inpaint":
            # One prediction makes all n (num_outputs 1-4), from one seed.
            if n > 4:
                raise InvalidRequest(f"{NAME}: SD inpainting makes 1-4 images per prediction")
            inputs = _without_none(
                {
                    "image": image,
                    "mask": mask_url,
                    "prompt": prompt,
                    "negative_prompt": negative,
                    "num_outputs": n,
                    "seed": request.seed,
                    "num_inference_steps": steps,
                    "guidance_scale": guidance,
                }
            )
            return [inputs], [request.seed]
        # FLUX Fill: one image per prediction; steps 1-50, guidance 2-5 (flux-fill-pro schema).
        if negative:
            raise InvalidRequest(
                f"{NAME}: FLUX Fill takes no negative_prompt", param="negative_prompt"
            )
        if steps is not None and not 1 <= steps <= 50:
            raise InvalidRequest(f"{NAME}: FLUX Fill takes 1-50 steps", param="steps")
        if guidance is not None and not 2 <= guidance <= 5:
            raise InvalidRequest(f"{NAME}: FLUX Fill takes guidance 2-5", param="guidance")
        seeds = _seeds(request.seed, n)
        runs = [
            _without_none(
                {
                    "image": image,
                    "mask": mask_url,
                    "prompt": prompt,
                    "seed": seed,
                    "steps": steps,
                    "guidance": guidance,
                    "output_format": "png",
                }
            )
            for seed in seeds
        ]
        return runs, list(seeds)

    def _file(self, client: RemoteClient, data: bytes, name: str, uploads: dict[str, str]) -> str:
        """A data URI for a file up to 256 KB, else the ``urls.get`` of an upload."""
        if len(data) <= DATA_URI_MAX_BYTES:
            return data_uri(data)
        key = _files_cache_key(data)
        if key not in uploads:
            answer = client.request(
                "POST",
                "/v1/files",
                files={"content": (name, data, "image/png")},
                data={"filename": name, "content_type": "image/png"},
                resend=True,  # an upload is not billed work: safe to repeat
            ).json()
            uploads[key] = str(answer["urls"]["get"])
        return uploads[key]

    def _version(self, client: RemoteClient, model: str) -> str | None:
        if model not in self._versions:
            owner, _, name = model.partition("/")
            found = client.request("GET", f"/v1/models/{owner}/{name}").json()
            latest = found.get("latest_version") or {}
            self._versions[model] = str(latest["id"]) if latest.get("id") else None
        return self._versions[model]

    def _create(
        self,
        client: RemoteClient,
        model: str,
        options: ReplicateOptions,
        inputs: dict[str, Any],
    ) -> dict[str, Any]:
        deadline = max(1, math.ceil(options.timeout))  # whole seconds, at least one
        headers = {"Prefer": f"wait={options.wait}", "Cancel-After": f"{deadline}s"}
        official = options.official if options.official is not None else model in OFFICIAL
        version = options.version or (None if official else self._version(client, model))
        if version:
            body = {"version": version, "input": inputs}
            response = client.request("POST", "/v1/predictions", json=body, headers=headers)
        else:
            owner, _, name = model.partition("/")
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
        while prediction.get("status") in ("starting", "processing"):
            try:
                progress(Progress("replicate", 0, 1))
            except Cancelled:
                self._cancel(client, prediction)
                raise
            if time.monotonic() + options.poll_interval > deadline:
                self._cancel(client, prediction)
                raise ProviderTimeout(
                    f"prediction {prediction.get('id')} did not finish in {options.timeout:g} s; "
                    "it was cancelled",
                    provider=NAME,
                )
            time.sleep(options.poll_interval)
            prediction = client.request("GET", prediction["urls"]["get"]).json()
        status = prediction.get("status")
        if status == "failed":
            raise ServerError(f"the prediction failed: {prediction.get('error')}", provider=NAME)
        if status == "aborted":
            raise ProviderTimeout(
                f"prediction {prediction.get('id')} was aborted at its Cancel-After deadline "
                f"({options.timeout:g} s) before it started (not charged); raise "
                "--option timeout=... to give it longer",
                provider=NAME,
            )
        if status == "canceled":
            # retouch cancels only on a Cancelled from the progress callback (re-raised above)
            # or at its own deadline (a ProviderTimeout above): this one was not ours.
            raise ProviderTimeout(
                f"prediction {prediction.get('id')} was canceled while running, at its "
                f"Cancel-After deadline ({options.timeout:g} s) or from the Replicate dashboard; "
                "raise --option timeout=... to give it longer",
                provider=NAME,
            )
        if status != "succeeded":
            raise ServerError(f"unexpected prediction status {status!r}", provider=NAME)
        return prediction

    @staticmethod
    def _cancel(client: RemoteClient, prediction: dict[str, Any]) -> None:
        cancel_url = (prediction.get("urls") or {}).get("cancel")
        if cancel_url:
            client.request("POST", cancel_url, resend=True)


def _seeds(seed: int | None, n: int) -> list[int | None]:
    """Distinct seeds for n runs: seed, seed + 1, ... (random start when none is given)."""
    first = seed if seed is not None else int(np.random.default_rng().integers(0, MAX_SEED - n))
    return [(first + i) % (MAX_SEED + 1) for i in range(n)]


def _without_none(values: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None}
