"""OpenAI's images API: edits (gpt-image models and dall-e-2) and variations (dall-e-2).

retouch's mask (255 = edit) becomes OpenAI's (a PNG whose alpha is 0 where to edit) in
``openai_mask``. dall-e-2 takes square images of 256, 512 or 1024 px: the crop is padded to a
square, sized, and cropped back. gpt-image models may regenerate the whole image and change
its size; the Toolkit resizes back and restores every pixel outside the mask.
Key: OPENAI_API_KEY; base URL: OPENAI_BASE_URL (default https://api.openai.com/v1).
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from retouch import compose
from retouch.errors import InvalidRequest, UnsupportedOperation
from retouch.remote import RemoteClient, decode_rgb, env, fit, form_fields, missing, png_bytes
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
    VariationsRequest,
    parse_options,
)

NAME = "openai"
DEFAULT_BASE_URL = "https://api.openai.com/v1"
DALLE2_SIZES = (256, 512, 1024)
GPT_IMAGE_SIZES = ("1024x1024", "1536x1024", "1024x1536", "auto")
DALLE2_MAX_BYTES = 4 * 2**20
GPT_IMAGE_MAX_BYTES = 50 * 2**20


@dataclass(frozen=True)
class OpenAIOptions:
    model: str = "gpt-image-1"
    size: str | None = None
    quality: str | None = None
    background: str | None = None
    input_fidelity: str | None = None
    output_format: str | None = None

    def __post_init__(self) -> None:
        if self.quality not in (None, "standard", "low", "medium", "high", "auto"):
            raise ValueError(
                f"quality must be standard, low, medium, high or auto, not {self.quality!r}"
            )
        if self.background not in (None, "transparent", "opaque", "auto"):
            raise ValueError(
                f"background must be transparent, opaque or auto, not {self.background!r}"
            )
        if self.input_fidelity not in (None, "high", "low"):
            raise ValueError(f"input_fidelity must be high or low, not {self.input_fidelity!r}")
        if self.output_format not in (None, "png", "jpeg", "webp"):
            raise ValueError(f"output_format must be png, jpeg or webp, not {self.output_format!r}")


def openai_mask(rgb: NDArray[np.uint8], mask: NDArray[np.uint8]) -> bytes:
    """OpenAI's convention: an RGBA PNG, the image's colours, alpha 0 where to edit."""
    return png_bytes(np.dstack([rgb, (255 - mask).astype(np.uint8)]))


def is_moderation(response: Any) -> bool:
    try:
        error = response.json().get("error", {})
    except (ValueError, AttributeError):
        return False
    return isinstance(error, dict) and (
        error.get("code") in ("moderation_blocked", "content_policy_violation")
        or "safety system" in str(error.get("message", ""))
    )


class OpenAIProvider:
    info = ProviderInfo(
        name=NAME,
        kind="remote",
        description="OpenAI images API: edits (gpt-image, dall-e-2) and variations (dall-e-2)",
        operations={
            "inpaint": OperationSpec(
                min_side=16,
                working_size=1024,
                honours=frozenset({"prompt", "n"}),
                options=OpenAIOptions,
            ),
            "edit": OperationSpec(
                min_side=16,
                max_side=4096,
                honours=frozenset({"prompt", "n"}),
                options=OpenAIOptions,
            ),
            "variations": OperationSpec(
                min_side=16, max_side=4096, honours=frozenset({"n"}), options=OpenAIOptions
            ),
        },
        priority=-10,
    )

    def __init__(self, transport: Any = None) -> None:
        self.transport = transport

    def _client(self) -> RemoteClient:
        key = env("OPENAI_API_KEY")
        if key is None:
            raise missing("the OpenAI API key", "OPENAI_API_KEY", NAME)
        return RemoteClient(
            NAME,
            env("OPENAI_BASE_URL", DEFAULT_BASE_URL) or DEFAULT_BASE_URL,
            headers={"Authorization": f"Bearer {key}"},
            transport=self.transport,
            is_moderation=is_moderation,
        )

    def status(self) -> ProviderStatus:
        if env("OPENAI_API_KEY") is None:
            error = missing("the OpenAI API key", "OPENAI_API_KEY", NAME)
            return ProviderStatus(False, str(error), error)
        return ProviderStatus(True, f"key set; {env('OPENAI_BASE_URL', DEFAULT_BASE_URL)}")

    def run(self, request: Request, progress: ProgressCallback) -> ImageResult:
        if not isinstance(request, (InpaintRequest, EditRequest, VariationsRequest)):
            raise UnsupportedOperation(f"{NAME} does not do {request.operation}")
        options = parse_options(OpenAIOptions, request.options, provider=NAME)
        model = "dall-e-2" if isinstance(request, VariationsRequest) else options.model
        if isinstance(request, VariationsRequest) and options.model not in (
            "gpt-image-1",
            "dall-e-2",
        ):
            raise UnsupportedOperation(f"{NAME} variations need dall-e-2, not {options.model!r}")
        rgb = request.image.rgb8()
        height, width = rgb.shape[:2]
        mask = (
            request.mask.array
            if isinstance(request, (InpaintRequest, EditRequest)) and request.mask is not None
            else None
        )
        side = 0
        size = options.size
        if model == "dall-e-2":
            rgb, mask, side = _square(rgb, mask)
            size = f"{side}x{side}"
        elif size not in (None, *GPT_IMAGE_SIZES):
            raise InvalidRequest(
                f"{NAME}: size for {model} must be one of {', '.join(GPT_IMAGE_SIZES)}"
            )
        image_png = png_bytes(rgb)
        limit = DALLE2_MAX_BYTES if model == "dall-e-2" else GPT_IMAGE_MAX_BYTES
        if len(image_png) > limit:
            raise InvalidRequest(
                f"{NAME}: the image is {len(image_png)} bytes as PNG, over {model}'s {limit} byte limit; resize it first"
            )
        files: dict[str, Any] = {"image": ("image.png", image_png, "image/png")}
        if mask is not None:
            files["mask"] = ("mask.png", openai_mask(rgb, mask), "image/png")
        fields = form_fields(
            {
                "model": model,
                "n": getattr(request, "n", 1),
                "size": size,
                "prompt": getattr(request, "prompt", None),
                "quality": options.quality,
                "background": options.background,
                "input_fidelity": options.input_fidelity,
                "output_format": options.output_format,
                "response_format": "b64_json" if model == "dall-e-2" else None,
            }
        )
        if "prompt" in fields and len(fields["prompt"]) > (1000 if model == "dall-e-2" else 32000):
            raise InvalidRequest(f"{NAME}: the prompt is over {model}'s length limit")
        path = "/images/variations" if isinstance(request, VariationsRequest) else "/images/edits"
        client = self._client()
        progress(Progress(request.operation, 0, 1))
        answer = client.request("POST", path, files=files, data=fields).json()
        images = []
        for item in answer.get("data", []):
            data = (
                base64.b64decode(item["b64_json"])
                if item.get("b64_json")
                else client.get_bytes(item["url"])
            )
            pixels = decode_rgb(data, provider=NAME)[:, :, :3]
            if side:
                pixels = fit(pixels, (side, side))
                scale = side / max(width, height)
                pixels = fit(
                    pixels[: round(height * scale), : round(width * scale)], (width, height)
                )
            images.append(OutputImage(pixels=fit(pixels, (width, height))))
        if not images:
            raise InvalidRequest(f"{NAME}: the service returned no image")
        progress(Progress(request.operation, 1, 1))
        return ImageResult(
            images=images, provider=NAME, model=model, usage=dict(answer.get("usage") or {})
        )


def _square(
    rgb: NDArray[np.uint8], mask: NDArray[np.uint8] | None
) -> tuple[NDArray[np.uint8], NDArray[np.uint8] | None, int]:
    """Scale to the smallest dall-e-2 side that holds the long side, pad to square."""
    height, width = rgb.shape[:2]
    side = next((s for s in DALLE2_SIZES if s >= max(height, width)), DALLE2_SIZES[-1])
    scale = side / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    scaled = compose.resize_pixels(rgb, size)
    pad = ((0, side - size[1]), (0, side - size[0]), (0, 0))
    squared = np.pad(scaled, pad, mode="edge")
    if mask is None:
        return squared, None, side
    scaled_mask = compose.resize_pixels(mask[:, :, None], size, smooth=True)[:, :, 0]
    return squared, np.pad(scaled_mask, pad[:2], mode="constant").astype(np.uint8), side
