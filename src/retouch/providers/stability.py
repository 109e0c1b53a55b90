"""Stability AI's v2beta image API: inpaint, erase, outpaint, search-and-replace,
search-and-recolor, remove-background, and upscale (fast, conservative, creative).

Requests are multipart with ``accept: image/*``; answers are the image's bytes with ``seed``
and ``finish-reason`` headers. Creative upscale answers an id and is polled at
``/v2beta/results/{id}`` (202 while working), never faster than every 10 s against the real
service. Stability's mask is ours (white = full strength), sent as a grey PNG. Inpaint and
erase answer about 4 MP whatever went in: the output is resized back.
Key: STABILITY_API_KEY; base URL: STABILITY_BASE_URL (default https://api.stability.ai).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from retouch.errors import ContentPolicy, InvalidRequest, ProviderTimeout, UnsupportedOperation
from retouch.remote import (
    RemoteClient,
    decode_rgb,
    env,
    fit,
    form_fields,
    grey_png,
    missing,
    png_bytes,
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
    parse_options,
)

NAME = "stability"
DEFAULT_BASE_URL = "https://api.stability.ai"
EDIT = "/v2beta/stable-image/edit"
MIN_PIXELS, MAX_PIXELS = 4_096, 9_437_184
REMOVE_BG_MAX_PIXELS = 4_194_304
REAL_SERVICE_MIN_POLL_S = 10.0
MAX_SEED = 4_294_967_294
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
    grow_mask: int | None = None
    style_preset: str | None = None
    output_format: str = "png"
    creativity: float | None = None
    mode: str | None = None
    """edit: search-and-replace or search-and-recolor; upscale: fast, conservative or creative."""
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
        description="Stability AI v2beta: inpaint, erase, outpaint, search-and-replace/recolor, remove-background, upscale",
        operations={
            "inpaint": OperationSpec(
                min_side=64,
                working_size=3072,
                honours=frozenset({"prompt", "negative_prompt", "seed"}),
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
                honours=frozenset({"prompt", "negative_prompt", "seed"}),
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

    def _client(self) -> RemoteClient:
        key = env("STABILITY_API_KEY")
        if key is None:
            raise missing("the Stability API key", "STABILITY_API_KEY", NAME)
        return RemoteClient(
            NAME,
            self._base(),
            headers={"authorization": f"Bearer {key}", "accept": "image/*"},
            transport=self.transport,
            is_moderation=is_moderation,
        )

    def status(self) -> ProviderStatus:
        if env("STABILITY_API_KEY") is None:
            error = missing("the Stability API key", "STABILITY_API_KEY", NAME)
            return ProviderStatus(False, str(error), error)
        return ProviderStatus(True, f"key set; {self._base()}")

    def run(self, request: Request, progress: ProgressCallback) -> ImageResult:
        options = parse_options(StabilityOptions, request.options, provider=NAME)
        rgb = request.image.rgb8()
        height, width = rgb.shape[:2]
        seed = getattr(request, "seed", None)
        if seed is not None and not 0 <= seed <= MAX_SEED:
            raise InvalidRequest(f"{NAME}: seed must be 0..{MAX_SEED}")
        fields: dict[str, Any] = {"output_format": options.output_format, "seed": seed}
        files: dict[str, Any] = {"image": ("image.png", png_bytes(rgb), "image/png")}
        if isinstance(request, InpaintRequest):
            path = f"{EDIT}/inpaint"
            _grow(options, 100)
            files["mask"] = ("mask.png", grey_png(request.mask.array), "image/png")
            fields.update(
                prompt=_prompt(request.prompt),
                negative_prompt=request.negative_prompt,
                grow_mask=options.grow_mask,
                style_preset=options.style_preset,
            )
        elif isinstance(request, EraseRequest):
            path = f"{EDIT}/erase"
            _grow(options, 20)
            files["mask"] = ("mask.png", grey_png(request.mask.array), "image/png")
            fields.update(grow_mask=options.grow_mask)
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
                raise UnsupportedOperation(
                    f"{NAME} edits by search: set the option mode=search-and-replace or search-and-recolor"
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
        elif isinstance(request, UpscaleRequest):
            return self._upscale(request, options, files, progress)
        else:
            raise UnsupportedOperation(f"{NAME} does not do {request.operation}")
        client = self._client()
        progress(Progress(request.operation, 0, 1))
        response = client.request("POST", path, files=files, data=form_fields(fields))
        progress(Progress(request.operation, 1, 1))
        return self._result(
            response, (width, height), keep_alpha=isinstance(request, RemoveBackgroundRequest)
        )

    def _result(
        self, response: Any, size: tuple[int, int], *, keep_alpha: bool = False
    ) -> ImageResult:
        if response.headers.get("finish-reason") == "CONTENT_FILTERED":
            raise ContentPolicy("the service filtered the result", provider=NAME)
        pixels = decode_rgb(response.content, provider=NAME)
        if not keep_alpha:
            pixels = pixels[:, :, :3]
        seed_header = response.headers.get("seed")
        seed = int(seed_header) if seed_header and seed_header.isdigit() else None
        return ImageResult(
            images=[OutputImage(pixels=fit(pixels, size), seed=seed)], provider=NAME, model="v2beta"
        )

    def _upscale(
        self,
        request: UpscaleRequest,
        options: StabilityOptions,
        files: dict[str, Any],
        progress: ProgressCallback,
    ) -> ImageResult:
        from retouch.compose import scaled_size

        width, height = request.image.size
        target = scaled_size(
            (width, height), scale=request.scale, width=request.width, height=request.height
        )
        mode = options.mode or "fast"
        client = self._client()
        base_fields: dict[str, Any] = {"output_format": options.output_format}
        if mode == "fast":
            if not (32 <= width <= 1536 and 32 <= height <= 1536):
                raise InvalidRequest(
                    f"{NAME}: fast upscale takes sides of 32-1536 px; this image is {width} x {height}"
                )
            progress(Progress("upscale", 0, 1))
            response = client.request(
                "POST",
                "/v2beta/stable-image/upscale/fast",
                files=files,
                data=form_fields(base_fields),
            )
            progress(Progress("upscale", 1, 1))
            return self._result(response, target)
        if mode not in ("conservative", "creative"):
            raise InvalidRequest(
                f"{NAME}: upscale mode must be fast, conservative or creative, not {mode!r}"
            )
        fields = form_fields(
            {
                **base_fields,
                "prompt": _prompt(options.prompt or "high quality, detailed photo"),
                "creativity": options.creativity,
            }
        )
        if mode == "conservative":
            _aspect(width, height)
            progress(Progress("upscale", 0, 1))
            response = client.request(
                "POST", "/v2beta/stable-image/upscale/conservative", files=files, data=fields
            )
            progress(Progress("upscale", 1, 1))
            return self._result(response, target)
        json_client = RemoteClient(
            NAME,
            client.base_url,
            headers={**client.headers, "accept": "application/json"},
            transport=self.transport,
            is_moderation=is_moderation,
        )
        job = json_client.request(
            "POST", "/v2beta/stable-image/upscale/creative", files=files, data=fields
        ).json()
        interval = options.poll_interval
        if self._base().rstrip("/") == DEFAULT_BASE_URL:
            interval = max(
                interval, REAL_SERVICE_MIN_POLL_S
            )  # the service asks for no faster polling
        deadline = time.monotonic() + options.poll_timeout
        polls = 0
        while True:
            response = client.request("GET", f"/v2beta/results/{job['id']}")
            if response.status_code == 200:
                progress(Progress("upscale", 1, 1))
                return self._result(response, target)
            polls += 1
            progress(Progress("upscale", 0, 1))
            if time.monotonic() + interval > deadline:
                raise ProviderTimeout(
                    f"creative upscale {job['id']} not ready after {options.poll_timeout:g} s",
                    provider=NAME,
                )
            time.sleep(interval)


def _prompt(prompt: str) -> str:
    if not 1 <= len(prompt) <= 10000:
        raise InvalidRequest(f"{NAME}: the prompt must be 1-10000 characters")
    return prompt


def _grow(options: StabilityOptions, limit: int) -> None:
    if options.grow_mask is not None and not 0 <= options.grow_mask <= limit:
        raise InvalidRequest(f"{NAME}: grow_mask must be 0..{limit} here")


def _aspect(width: int, height: int) -> None:
    ratio = width / height
    if not 1 / 2.5 <= ratio <= 2.5:
        raise InvalidRequest(
            f"{NAME}: this endpoint takes aspect ratios from 1:2.5 to 2.5:1; the image is {width} x {height}"
        )
    if not MIN_PIXELS <= width * height <= MAX_PIXELS:
        raise InvalidRequest(
            f"{NAME}: the image must have {MIN_PIXELS}-{MAX_PIXELS} pixels; it has {width * height}"
        )
