"""Stability AI's v2beta image API: inpaint, erase, outpaint, img2img (SD3 image-to-image),
variations, search-and-replace/recolor, remove-background, and upscale (fast, conservative,
creative).

Contract (platform.stability.ai/docs/api-reference, as summarised in shared
REFERENCE-APIS.md; the fast-upscale bounds also in Comfy's router schema for
stability/upscale-fast):

- multipart with ``authorization: Bearer`` and ``accept: image/*``: the answer is the image's
  bytes with ``seed`` and ``finish-reason`` headers. Creative upscale answers an id, polled at
  ``/v2beta/results/{id}`` (202 while working), never faster than every 10 s.
- **a whole request is at most 10 MiB** (413 "Your request was larger than 10MiB"): the image
  part is sent as lossless PNG when it fits, else as WebP (then JPEG) at the highest quality
  that fits what the mask and fields leave; the mask is always lossless.
- edit endpoints take 4,096 to 9,437,184 pixels; outpaint, search-and-replace/recolor and
  conservative upscale also an aspect ratio from 1:2.5 to 2.5:1; remove-background at most
  4,194,304 pixels.
- **fast upscale**: sides 32-1536 px, 1,024 to 1,048,576 pixels, aspect 1:2.5 to 2.5:1;
  larger inputs are refused here with the advice to use ``mode=conservative``.
- **creative upscale**: input at most 1,048,576 pixels, creativity 0.1-0.5; **conservative**:
  creativity 0.2-0.5. Checked here before sending.
- img2img is SD3's ``/v2beta/stable-image/generate/sd3`` with ``mode=image-to-image`` and
  ``strength`` (models sd3.5-large, sd3.5-large-turbo, sd3.5-medium; output
  jpeg or png); variations are ``n`` such runs at the requested strength with distinct seeds.
- inpaint and erase answer about 4 MP whatever went in; answers are resized back.
- the mask is ours (white = full strength), sent as a grey PNG.
- a ``text:PHRASE`` mask (``honours`` lists ``mask_phrase``) is left to the service: inpaint
  becomes search-and-replace with the phrase as ``search_prompt``, edit becomes
  search-and-recolor with it as ``select_prompt``.

Key: STABILITY_API_KEY; base URL: STABILITY_BASE_URL (default https://api.stability.ai).
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from retouch.compose import output_size, scaled_size
from retouch.errors import ContentPolicy, InvalidRequest, ProviderTimeout, UnsupportedOperation
from retouch.remote import (
    RemoteClient,
    decode_rgb,
    encode_within,
    env,
    form_fields,
    grey_png,
    missing,
    sized,
    unknown_model,
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
    RemoveBackgroundRequest,
    Request,
    UpscaleRequest,
    VariationsRequest,
    parse_options,
)

NAME = "stability"
DEFAULT_BASE_URL = "https://api.stability.ai"
EDIT = "/v2beta/stable-image/edit"
SD3 = "/v2beta/stable-image/generate/sd3"
UPSCALE = "/v2beta/stable-image/upscale"
MAX_REQUEST_BYTES = 10 * 2**20
"""413 "Your request was larger than 10MiB"."""
FIELDS_ALLOWANCE = 32 * 1024
"""Room left in a request for the text fields and the multipart framing."""
MIN_PIXELS, MAX_PIXELS = 4_096, 9_437_184
REMOVE_BG_MAX_PIXELS = 4_194_304
FAST_SIDES, FAST_PIXELS = (32, 1536), (1_024, 1_048_576)
CREATIVE_MAX_PIXELS = 1_048_576
CREATIVITY = {"creative": (0.1, 0.5), "conservative": (0.2, 0.5)}
UPSCALE_MODES = ("fast", "conservative", "creative")
SD3_MODELS = ("sd3.5-large", "sd3.5-large-turbo", "sd3.5-medium")
EDIT_MODES = ("img2img", "search-and-replace", "search-and-recolor")
ASPECT = 2.5
REAL_SERVICE_MIN_POLL_S = 10.0
MAX_SEED = 4_294_967_294
TIMEOUT_S = 300.0
VARIATION_PROMPT = "a variation of this picture, same subject and style"
PRESETS = (
    "3d-model",
    "analog-film",
    "anime",
    "cinematic",
    "comic-book",
    "digital-art",
    "enhance",
    "fantasy-art",
    "isometric",
    "line-art",
    "low-poly",
    "modeling-compound",
    "neon-punk",
    "origami",
    "photographic",
    "pixel-art",
    "tile-texture",
)


@dataclass(frozen=True)
class StabilityOptions:
    model: str | None = None
    """img2img / variations: an SD3 model (default sd3.5-large); upscale: fast (default),
    conservative or creative (the same as ``mode``)."""
    grow_mask: int | None = None
    style_preset: str | None = None
    output_format: str = "png"
    creativity: float | None = None
    mode: str | None = None
    """edit: img2img (default), search-and-replace or search-and-recolor; upscale: fast,
    conservative or creative."""
    search_prompt: str | None = None
    select_prompt: str | None = None
    prompt: str | None = None
    """Upscale (conservative, creative): what the picture shows."""
    poll_interval: float = REAL_SERVICE_MIN_POLL_S
    poll_timeout: float = 600.0

    def __post_init__(self) -> None:
        if self.style_preset is not None and self.style_preset not in PRESETS:
            raise ValueError(f"style_preset must be one of {', '.join(PRESETS)}")
        if self.output_format not in ("png", "jpeg", "webp"):
            raise ValueError("output_format must be png, jpeg or webp")
        if self.creativity is not None and not 0 <= self.creativity <= 1:
            raise ValueError("creativity must be between 0 and 1")
        if self.poll_interval <= 0 or self.poll_timeout <= 0:
            raise ValueError("poll_interval and poll_timeout must be positive")


def is_moderation(response: Any) -> bool:
    try:
        return bool(response.json().get("name") == "content_moderation")
    except (ValueError, AttributeError):
        return False


class StabilityProvider:
    info = ProviderInfo(
        name=NAME,
        kind="remote",
        description="Stability AI v2beta: inpaint, erase, outpaint, img2img (SD3), variations, "
        "search-and-replace/recolor, remove-background, upscale",
        operations={
            "inpaint": OperationSpec(
                min_side=64,
                working_size=3072,
                honours=frozenset({"prompt", "negative_prompt", "seed", "mask_phrase"}),
                options=StabilityOptions,
            ),
            "erase": OperationSpec(
                min_side=64,
                working_size=3072,
                honours=frozenset({"seed"}),
                options=StabilityOptions,
            ),
            "outpaint": OperationSpec(
                min_side=64,
                max_pixels=MAX_PIXELS,
                honours=frozenset({"prompt", "seed"}),
                options=StabilityOptions,
            ),
            "edit": OperationSpec(
                min_side=64,
                max_pixels=MAX_PIXELS,
                working_size=3072,
                honours=frozenset(
                    {"prompt", "negative_prompt", "seed", "strength", "n", "mask_phrase"}
                ),
                options=StabilityOptions,
            ),
            "variations": OperationSpec(
                min_side=64,
                max_pixels=MAX_PIXELS,
                honours=frozenset({"prompt", "seed", "strength", "n"}),
                options=StabilityOptions,
            ),
            "remove-background": OperationSpec(
                min_side=64, max_pixels=REMOVE_BG_MAX_PIXELS, options=StabilityOptions
            ),
            "upscale": OperationSpec(min_side=32, max_pixels=MAX_PIXELS, options=StabilityOptions),
        },
        priority=-10,
    )

    def __init__(self, transport: Any = None) -> None:
        self.transport = transport

    def _base(self) -> str:
        return env("STABILITY_BASE_URL", DEFAULT_BASE_URL) or DEFAULT_BASE_URL

    def _client(self, accept: str = "image/*") -> RemoteClient:
        key = env("STABILITY_API_KEY")
        if key is None:
            raise missing("the Stability API key", "STABILITY_API_KEY", NAME)
        return RemoteClient(
            NAME,
            self._base(),
            headers={"authorization": f"Bearer {key}", "accept": accept},
            transport=self.transport,
            is_moderation=is_moderation,
            timeout=TIMEOUT_S,
            still_running="check your credits at https://platform.stability.ai/account/credits "
            "before trying again",
        )

    def status(self) -> ProviderStatus:
        if env("STABILITY_API_KEY") is None:
            error = missing("the Stability API key", "STABILITY_API_KEY", NAME)
            return ProviderStatus(False, str(error), error)
        return ProviderStatus(True, f"key set; {self._base()}")

    def run(self, request: Request, progress: ProgressCallback) -> ImageResult:
        options = parse_options(StabilityOptions, request.options, provider=NAME)
        seed = getattr(request, "seed", None)
        if seed is not None and not 0 <= seed <= MAX_SEED:
            raise InvalidRequest(f"{NAME}: seed must be 0..{MAX_SEED}", param="seed")
        if isinstance(request, UpscaleRequest):
            return self._upscale(request, options, progress)
        phrase = _mask_phrase(request)
        if phrase is not None:  # the service finds the area the phrase names
            replace = isinstance(request, InpaintRequest)
            mode = "search-and-replace" if replace else "search-and-recolor"
            key = "search_prompt" if replace else "select_prompt"
            if options.mode not in (None, mode) or getattr(options, key) not in (None, phrase):
                raise InvalidRequest(
                    f"{NAME}: the text: mask is sent as {mode}'s {key}; leave out mode and {key}",
                    param="mask",
                )
            if replace:
                options = dataclasses.replace(options, mode=mode, search_prompt=phrase)
            else:
                options = dataclasses.replace(options, mode=mode, select_prompt=phrase)
            if isinstance(request, EditRequest):  # the phrase stands for the mask
                request = dataclasses.replace(request, mask=None)
        if isinstance(request, (VariationsRequest, EditRequest)) and (
            isinstance(request, VariationsRequest) or (options.mode or "img2img") == "img2img"
        ):
            return self._img2img(request, options, progress)
        rgb = request.image.rgb8()
        height, width = rgb.shape[:2]
        fields: dict[str, Any] = {"output_format": options.output_format, "seed": seed}
        mask_png: bytes | None = None
        if options.model is not None:
            raise InvalidRequest(
                f"{NAME}: {request.operation} has no model to choose (model is for edit, "
                "variations and upscale)",
                param="model",
            )
        if isinstance(request, InpaintRequest) and phrase is not None:
            path = f"{EDIT}/search-and-replace"
            _aspect(width, height)
            _grow(options, 20)
            fields.update(
                prompt=_prompt(request.prompt),
                search_prompt=phrase,
                negative_prompt=request.negative_prompt,
                grow_mask=options.grow_mask,
            )
        elif isinstance(request, InpaintRequest):
            path = f"{EDIT}/inpaint"
            _grow(options, 100)
            mask_png = grey_png(request.mask.array)
            fields.update(
                prompt=_prompt(request.prompt),
                negative_prompt=request.negative_prompt,
                grow_mask=options.grow_mask,
                style_preset=options.style_preset,
            )
            _pixels(width, height)
        elif isinstance(request, EraseRequest):
            path = f"{EDIT}/erase"
            _grow(options, 20)
            mask_png = grey_png(request.mask.array)
            fields.update(grow_mask=options.grow_mask)
            _pixels(width, height)
        elif isinstance(request, OutpaintRequest):
            path = f"{EDIT}/outpaint"
            for side in (request.left, request.right, request.top, request.bottom):
                if side > 2000:
                    raise InvalidRequest(f"{NAME}: outpaint adds at most 2000 px per side")
            _aspect(width, height)
            fields.update(
                left=request.left,
                right=request.right,
                up=request.top,
                down=request.bottom,
                prompt=request.prompt,
                creativity=options.creativity,
                style_preset=options.style_preset,
            )
            width, height = (
                width + request.left + request.right,
                height + request.top + request.bottom,
            )
        elif isinstance(request, EditRequest):
            _aspect(width, height)
            if options.mode == "search-and-replace":
                if not options.search_prompt:
                    raise InvalidRequest(
                        f"{NAME}: search-and-replace needs the option search_prompt (what to replace)"
                    )
                fields.update(search_prompt=options.search_prompt)
            elif options.mode == "search-and-recolor":
                if not options.select_prompt:
                    raise InvalidRequest(
                        f"{NAME}: search-and-recolor needs the option select_prompt (what to recolor)"
                    )
                fields.update(select_prompt=options.select_prompt)
            else:
                raise InvalidRequest(
                    f"{NAME}: edit mode must be one of {', '.join(EDIT_MODES)}, not {options.mode!r}"
                )
            if request.strength != 0.6 or request.n != 1 or request.mask is not None:
                raise UnsupportedOperation(
                    f"{NAME}: {options.mode} takes no strength, n or mask; leave them out"
                )
            path = f"{EDIT}/{options.mode}"
            fields.update(
                prompt=_prompt(request.prompt),
                negative_prompt=request.negative_prompt,
                grow_mask=options.grow_mask,
            )
        elif isinstance(request, RemoveBackgroundRequest):
            if request.only_mask:
                raise UnsupportedOperation(
                    f"{NAME} returns cut-outs, not masks; use only_mask with u2net"
                )
            path = f"{EDIT}/remove-background"
            fields = {
                "output_format": "png" if options.output_format == "jpeg" else options.output_format
            }
        else:
            raise UnsupportedOperation(f"{NAME} does not do {request.operation}")
        files = _files(rgb, mask_png)
        client = self._client()
        progress(Progress(request.operation, 0, 1))
        response = client.request("POST", path, files=files, data=form_fields(fields))
        progress(Progress(request.operation, 1, 1))
        return self._result(
            [response], (width, height), keep_alpha=isinstance(request, RemoveBackgroundRequest)
        )

    def _img2img(
        self,
        request: EditRequest | VariationsRequest,
        options: StabilityOptions,
        progress: ProgressCallback,
    ) -> ImageResult:
        """SD3 image-to-image: one run per image, at the request's strength; variations get
        distinct seeds (seed, seed + 1, ...; random ones when no seed is given)."""
        model = options.model or SD3_MODELS[0]
        if model not in SD3_MODELS:
            raise unknown_model(NAME, model, SD3_MODELS)
        if options.output_format == "webp":
            raise InvalidRequest(f"{NAME}: SD3 answers jpeg or png, not webp")
        rgb = request.image.rgb8()
        height, width = rgb.shape[:2]
        _pixels(width, height)
        if isinstance(request, EditRequest):
            if request.mask is not None:
                raise UnsupportedOperation(
                    f"{NAME}: img2img with a mask is inpaint; use retouch inpaint"
                )
            prompt, negative = _prompt(request.prompt), request.negative_prompt
        else:
            prompt, negative = _prompt(request.prompt or VARIATION_PROMPT), None
        first = (
            request.seed
            if request.seed is not None
            else int(np.random.default_rng().integers(1, MAX_SEED - request.n))
        )
        seeds = [min(first + i, MAX_SEED) for i in range(request.n)]
        files = _files(rgb, None)
        client = self._client()
        responses = []
        for index, seed in enumerate(seeds):
            progress(Progress(request.operation, index, len(seeds)))
            fields = form_fields(
                {
                    "mode": "image-to-image",
                    "prompt": prompt,
                    "negative_prompt": negative,
                    "strength": request.strength,
                    "model": model,
                    "seed": seed,
                    "output_format": options.output_format,
                }
            )
            responses.append(client.request("POST", SD3, files=files, data=fields))
        progress(Progress(request.operation, len(seeds), len(seeds)))
        return self._result(responses, output_size(request), model=model)

    def _result(
        self,
        responses: list[Any],
        size: tuple[int, int],
        *,
        keep_alpha: bool = False,
        model: str = "v2beta",
    ) -> ImageResult:
        outputs, seeds = [], []
        for response in responses:
            if response.headers.get("finish-reason") == "CONTENT_FILTERED":
                raise ContentPolicy("the service filtered the result", provider=NAME)
            pixels = decode_rgb(response.content, provider=NAME)
            outputs.append(pixels if keep_alpha else pixels[:, :, :3])
            seed_header = response.headers.get("seed")
            seeds.append(int(seed_header) if seed_header and seed_header.isdigit() else None)
        outputs, report = sized(outputs, size)
        return ImageResult(
            images=[OutputImage(pixels=p, seed=s) for p, s in zip(outputs, seeds, strict=True)],
            provider=NAME,
            model=model,
            usage={"output_size": report},
        )

    def _upscale(
        self, request: UpscaleRequest, options: StabilityOptions, progress: ProgressCallback
    ) -> ImageResult:
        rgb = request.image.rgb8()
        height, width = rgb.shape[:2]
        target = scaled_size(
            (width, height), scale=request.scale, width=request.width, height=request.height
        )
        if options.model is not None and options.mode is not None and options.model != options.mode:
            raise InvalidRequest(
                f"{NAME}: model {options.model!r} and mode {options.mode!r} disagree"
            )
        mode = options.model or options.mode or "fast"
        if mode not in UPSCALE_MODES:
            raise unknown_model(NAME, mode, UPSCALE_MODES)
        pixels = width * height
        if mode == "fast":
            side_ok = FAST_SIDES[0] <= min(width, height) and max(width, height) <= FAST_SIDES[1]
            if (
                not side_ok
                or not FAST_PIXELS[0] <= pixels <= FAST_PIXELS[1]
                or not _aspect_ok(width, height)
            ):
                raise InvalidRequest(
                    f"{NAME}: fast upscale takes sides of {FAST_SIDES[0]}-{FAST_SIDES[1]} px, "
                    f"{FAST_PIXELS[0]:,}-{FAST_PIXELS[1]:,} pixels and an aspect ratio from 1:2.5 "
                    f"to 2.5:1; this image is {width} x {height} ({pixels:,} pixels). Use "
                    "--option mode=conservative (up to 9.4 MP) instead",
                    param="mode",
                )
            fields: dict[str, Any] = {"output_format": options.output_format}
        else:
            low, high = CREATIVITY[mode]
            creativity = (
                options.creativity
                if options.creativity is not None
                else 0.3
                if mode == "creative"
                else 0.35
            )
            if not low <= creativity <= high:
                raise InvalidRequest(
                    f"{NAME}: {mode} upscale takes creativity {low}-{high}, not {creativity}",
                    param="creativity",
                )
            if mode == "creative" and not MIN_PIXELS <= pixels <= CREATIVE_MAX_PIXELS:
                raise InvalidRequest(
                    f"{NAME}: creative upscale takes {MIN_PIXELS:,}-{CREATIVE_MAX_PIXELS:,} pixels "
                    f"(1 MP); this image has {pixels:,}. Use --option mode=conservative, or "
                    "resize it first"
                )
            if mode == "conservative":
                _aspect(width, height)
            fields = {
                "output_format": options.output_format,
                "prompt": _prompt(options.prompt or "high quality, detailed photo"),
                "creativity": creativity,
            }
        files = _files(rgb, None)
        if mode in ("fast", "conservative"):
            client = self._client()
            progress(Progress("upscale", 0, 1))
            response = client.request(
                "POST", f"{UPSCALE}/{mode}", files=files, data=form_fields(fields)
            )
            progress(Progress("upscale", 1, 1))
            return self._result([response], target, model=mode)
        job = (
            self._client(accept="application/json")
            .request("POST", f"{UPSCALE}/creative", files=files, data=form_fields(fields))
            .json()
        )
        client = self._client()
        interval = options.poll_interval
        if self._base().rstrip("/") == DEFAULT_BASE_URL:
            interval = max(interval, REAL_SERVICE_MIN_POLL_S)  # the service asks for no faster
        deadline = time.monotonic() + options.poll_timeout
        while True:
            response = client.request("GET", f"/v2beta/results/{job['id']}")
            if response.status_code == 200:
                progress(Progress("upscale", 1, 1))
                return self._result([response], target, model=mode)
            progress(Progress("upscale", 0, 1))
            if time.monotonic() + interval > deadline:
                raise ProviderTimeout(
                    f"creative upscale {job['id']} not ready after {options.poll_timeout:g} s; "
                    f"its result stays at /v2beta/results/{job['id']} for 24 h",
                    provider=NAME,
                )
            time.sleep(interval)


def _files(rgb: np.ndarray, mask_png: bytes | None) -> dict[str, Any]:
    """The multipart files, within the 10 MiB a request may hold: the mask lossless, the image
    lossless when it fits in what is left, else WebP/JPEG at the best quality that fits."""
    files: dict[str, Any] = {}
    budget = MAX_REQUEST_BYTES - FIELDS_ALLOWANCE
    if mask_png is not None:
        files["mask"] = ("mask.png", mask_png, "image/png")
        budget -= len(mask_png)
    try:
        image = encode_within(rgb, budget, lossy=("webp", "jpeg"))
    except InvalidRequest as exc:
        raise InvalidRequest(f"{NAME}: {exc} (a request is at most 10 MiB)") from exc
    files["image"] = (image.filename, image.data, image.mime)
    return dict(sorted(files.items()))  # image first


def _prompt(prompt: str) -> str:
    if not 1 <= len(prompt) <= 10000:
        raise InvalidRequest(f"{NAME}: the prompt must be 1-10000 characters")
    return prompt


def _grow(options: StabilityOptions, limit: int) -> None:
    if options.grow_mask is not None and not 0 <= options.grow_mask <= limit:
        raise InvalidRequest(f"{NAME}: grow_mask must be 0..{limit} here")


def _pixels(width: int, height: int) -> None:
    if not MIN_PIXELS <= width * height <= MAX_PIXELS:
        raise InvalidRequest(
            f"{NAME}: the image must have {MIN_PIXELS:,}-{MAX_PIXELS:,} pixels; it has "
            f"{width * height:,}"
        )


def _aspect_ok(width: int, height: int) -> bool:
    return 1 / ASPECT <= width / height <= ASPECT


def _aspect(width: int, height: int) -> None:
    if not _aspect_ok(width, height):
        raise InvalidRequest(
            f"{NAME}: this endpoint takes aspect ratios from 1:2.5 to 2.5:1; the image is {width} x {height}"
        )
    _pixels(width, height)


def _mask_phrase(request: Request) -> str | None:
    """The phrase of a ``text:PHRASE`` mask the Toolkit left for this service to find."""
    mask = getattr(request, "mask", None)
    source = getattr(mask, "source", None)
    if isinstance(source, str) and source.startswith("text:") and source[5:].strip():
        return source[5:].strip()
    return None
