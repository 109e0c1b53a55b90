"""OpenAI's images API with the GPT image models: inpaint, edit, outpaint and variations, all
through ``POST /v1/images/edits``.

Contract (openai-python ``src/openai/types/image_edit_params.py``, August 2026):

- models: ``gpt-image-2`` (default here), ``gpt-image-2-2026-04-21``, ``gpt-image-1.5``,
  ``gpt-image-1``, ``gpt-image-1-mini``, ``chatgpt-image-latest``. DALL-E 2 and 3 were
  retired from the API on 2026-05-12 (developers.openai.com/api/docs/models/dall-e-2:
  "deprecated and removed from the API"); naming them is refused here, before any request,
  with the replacement. ``/v1/images/variations`` served only dall-e-2, so **variations**
  are ``n`` edits of the whole image (no mask) by a GPT image model with the prompt
  ``VARIATION_PROMPT`` (the request's prompt, when given, is added to it).
- image: png, webp or jpg under 50 MB; mask: a PNG **under 4 MB**, the image's size, whose
  alpha 0 marks what to edit. retouch sends an alpha-only mask (black colours, alpha =
  keep): tens of KB where the photo's colours plus alpha took 2 MB at 1024 px and 7 MB at
  2048 px (``retouch.remote.alpha_mask_png``).
- size: ``1024x1024``, ``1536x1024``, ``1024x1536`` or ``auto`` for every GPT image model;
  the gpt-image-2 family also takes any ``WIDTHxHEIGHT`` with both sides divisible by 16,
  aspect 1:3 to 3:1, at most 3840x2160. retouch asks for the size it needs (the work size,
  or the requested width/height) rounded to 16 on gpt-image-2, else the standard size
  nearest in aspect, and resizes the answer when the service could not make it exactly
  (``usage["output_size"]`` says which).
- ``background=transparent`` needs ``output_format`` png or webp; the answer's alpha is kept.
- GPT image models may regenerate the whole picture: the Toolkit pastes the original back
  outside the mask. Outpaint pads the canvas (edge pixels stretched outwards) and edits the
  new area through the mask.
- Timeout 600 s (openai-python ``DEFAULT_TIMEOUT``): complex edits take minutes. A create
  that times out is never sent again (it may have run and been billed).

Key: OPENAI_API_KEY; base URL: OPENAI_BASE_URL (default https://api.openai.com/v1).
"""

from __future__ import annotations

import base64
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from retouch.compose import output_size
from retouch.errors import InvalidRequest, UnsupportedOperation
from retouch.remote import (
    RemoteClient,
    alpha_mask_png,
    decode_rgb,
    encode_within,
    env,
    form_fields,
    missing,
    outpaint_work,
    sized,
    unknown_model,
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
    VariationsRequest,
    parse_options,
)

NAME = "openai"
DEFAULT_BASE_URL = "https://api.openai.com/v1"
DEFAULT_MODEL = "gpt-image-2"
MODELS = (
    "gpt-image-2",
    "gpt-image-2-2026-04-21",
    "gpt-image-1.5",
    "gpt-image-1",
    "gpt-image-1-mini",
    "chatgpt-image-latest",
)
RETIRED = {"dall-e-2": "2026-05-12", "dall-e-3": "2026-05-12"}
STANDARD_SIZES = ((1024, 1024), (1536, 1024), (1024, 1536))
FREE_SIZE_MULTIPLE = 16
FREE_SIZE_MAX = (3840, 2160)
FREE_SIZE_ASPECT = 3.0
IMAGE_MAX_BYTES = 50 * 10**6
MASK_MAX_BYTES = 4 * 10**6
PROMPT_MAX = 32_000
WORKING_SIZE = 2048
TIMEOUT_S = 600.0
VARIATION_PROMPT = (
    "Make a variation of this image: keep its subject, composition, style and colours, and "
    "vary the details."
)
OUTPAINT_PROMPT = (
    "Extend the picture into the empty border: continue its content, light and style seamlessly."
)


@dataclass(frozen=True)
class OpenAIOptions:
    model: str = DEFAULT_MODEL
    size: str | None = None
    """The size asked of the service (``WIDTHxHEIGHT`` or ``auto``); default: the size the
    result needs, as near as the model allows."""
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
        if self.background == "transparent" and self.output_format == "jpeg":
            raise ValueError("background=transparent needs output_format png or webp, not jpeg")


def openai_mask(mask: NDArray[np.uint8]) -> bytes:
    """OpenAI's convention: a PNG whose alpha is 0 where to edit (colours unused: black)."""
    return alpha_mask_png(mask)


def is_moderation(response: Any) -> bool:
    try:
        error = response.json().get("error", {})
    except (ValueError, AttributeError):
        return False
    return isinstance(error, dict) and (
        error.get("code") in ("moderation_blocked", "content_policy_violation")
        or "safety system" in str(error.get("message", ""))
    )


def check_model(model: str) -> str:
    """The model, if it is a GPT image model this provider knows (or a snapshot of one)."""
    if model in RETIRED:
        raise UnsupportedOperation(
            f"{NAME}: {model} was retired from the OpenAI API on {RETIRED[model]}; use a GPT "
            f"image model instead ({DEFAULT_MODEL} is the default; known: {', '.join(MODELS)})",
            param="model",
        )
    if model in MODELS or model.startswith(("gpt-image-", "chatgpt-image-")):
        return model
    raise unknown_model(NAME, model, MODELS)


def free_sizes(model: str) -> bool:
    """Whether the model takes any WIDTHxHEIGHT (the gpt-image-2 family)."""
    return model.startswith("gpt-image-2")


def service_size(model: str, wanted: tuple[int, int], given: str | None) -> str:
    """The ``size`` field: ``given`` (checked), else the nearest the model can make to
    ``wanted``."""
    if given is not None:
        check_size(model, given)
        return given
    width, height = wanted
    if not free_sizes(model):
        aspect = math.log(width / height)
        best = min(STANDARD_SIZES, key=lambda s: abs(math.log(s[0] / s[1]) - aspect))
        return f"{best[0]}x{best[1]}"
    ratio = min(max(width / height, 1 / FREE_SIZE_ASPECT), FREE_SIZE_ASPECT)
    # Fit the long edge and the pixel count, keeping the (clamped) aspect.
    scale = min(
        1.0,
        FREE_SIZE_MAX[0] / max(width, height),
        math.sqrt(FREE_SIZE_MAX[0] * FREE_SIZE_MAX[1] / (width * height)),
    )
    area = width * height * scale * scale
    w = math.sqrt(area * ratio)
    h = w / ratio
    m = FREE_SIZE_MULTIPLE
    size = (max(m, round(w / m) * m), max(m, round(h / m) * m))
    if max(size) > FREE_SIZE_MAX[0] or size[0] * size[1] > FREE_SIZE_MAX[0] * FREE_SIZE_MAX[1]:
        size = (max(m, int(w // m) * m), max(m, int(h // m) * m))
    return f"{size[0]}x{size[1]}"


def check_size(model: str, size: str) -> None:
    if size == "auto" or tuple(_parse(size)) in STANDARD_SIZES:
        return
    if not free_sizes(model):
        raise InvalidRequest(
            f"{NAME}: {model} makes 1024x1024, 1536x1024, 1024x1536 or auto, not {size}; "
            "gpt-image-2 takes other sizes",
            param="size",
        )
    width, height = _parse(size)
    m = FREE_SIZE_MULTIPLE
    if width % m or height % m:
        raise InvalidRequest(f"{NAME}: {model} sizes must be multiples of {m}, not {size}")
    if not 1 / FREE_SIZE_ASPECT <= width / height <= FREE_SIZE_ASPECT:
        raise InvalidRequest(f"{NAME}: {model} sizes must be 1:3 to 3:1, not {size}")
    if (
        max(width, height) > FREE_SIZE_MAX[0]
        or width * height > FREE_SIZE_MAX[0] * FREE_SIZE_MAX[1]
    ):
        raise InvalidRequest(f"{NAME}: {model} makes at most 3840x2160, not {size}")


def _parse(size: str) -> tuple[int, int]:
    try:
        width, height = (int(v) for v in size.lower().split("x"))
    except ValueError:
        raise InvalidRequest(f"{NAME}: size must be WIDTHxHEIGHT or auto, not {size!r}") from None
    if width < 1 or height < 1:
        raise InvalidRequest(f"{NAME}: size must be positive, not {size!r}")
    return width, height


class OpenAIProvider:
    info = ProviderInfo(
        name=NAME,
        kind="remote",
        description="OpenAI images API (GPT image models): inpaint, edit, outpaint, variations",
        operations={
            "inpaint": OperationSpec(
                min_side=16,
                working_size=WORKING_SIZE,
                honours=frozenset({"prompt", "n"}),
                options=OpenAIOptions,
            ),
            "edit": OperationSpec(
                min_side=16,
                working_size=WORKING_SIZE,
                honours=frozenset({"prompt", "n"}),
                options=OpenAIOptions,
            ),
            "outpaint": OperationSpec(
                min_side=16, honours=frozenset({"prompt"}), options=OpenAIOptions
            ),
            "variations": OperationSpec(
                min_side=16, honours=frozenset({"prompt", "n"}), options=OpenAIOptions
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
            timeout=TIMEOUT_S,
            still_running="check https://platform.openai.com/usage before trying again",
        )

    def status(self) -> ProviderStatus:
        if env("OPENAI_API_KEY") is None:
            error = missing("the OpenAI API key", "OPENAI_API_KEY", NAME)
            return ProviderStatus(False, str(error), error)
        return ProviderStatus(True, f"key set; {env('OPENAI_BASE_URL', DEFAULT_BASE_URL)}")

    def run(self, request: Request, progress: ProgressCallback) -> ImageResult:
        if not isinstance(
            request, (InpaintRequest, EditRequest, VariationsRequest, OutpaintRequest)
        ):
            raise UnsupportedOperation(f"{NAME} does not do {request.operation}")
        options = parse_options(OpenAIOptions, request.options, provider=NAME)
        model = check_model(options.model)
        if options.input_fidelity is not None and model == "gpt-image-1-mini":
            raise InvalidRequest(f"{NAME}: input_fidelity is not supported by {model}")
        rgb = request.image.rgb8()
        mask: NDArray[np.uint8] | None = None
        wanted = (rgb.shape[1], rgb.shape[0])
        n = 1
        if isinstance(request, InpaintRequest):
            mask, prompt, n = request.mask.array, request.prompt, request.n
        elif isinstance(request, EditRequest):
            prompt, n = request.prompt, request.n
            if request.mask is not None:
                mask = request.mask.array
            else:
                wanted = output_size(request)
        elif isinstance(request, VariationsRequest):
            # The whole image is editable: no mask.
            prompt = VARIATION_PROMPT + (f" {request.prompt}" if request.prompt else "")
            n, wanted = request.n, output_size(request)
        else:
            rgb, mask, wanted = outpaint_work(
                request,
                rgb,
                max_side=WORKING_SIZE,
            )
            prompt = request.prompt or OUTPAINT_PROMPT
        if not 1 <= len(prompt) <= PROMPT_MAX:
            raise InvalidRequest(f"{NAME}: the prompt must be 1-{PROMPT_MAX} characters")
        if not 1 <= n <= 10:
            raise InvalidRequest(f"{NAME}: n must be 1-10")
        image = encode_within(rgb, IMAGE_MAX_BYTES - 1, lossy=("webp", "jpeg"))
        files: dict[str, Any] = {"image": (image.filename, image.data, image.mime)}
        if mask is not None:
            mask_png = openai_mask(mask)
            if len(mask_png) >= MASK_MAX_BYTES:  # an alpha-only PNG: not for any real size
                raise InvalidRequest(f"{NAME}: the mask is {len(mask_png)} bytes, over 4 MB")
            files["mask"] = ("mask.png", mask_png, "image/png")
        size = service_size(model, wanted, options.size)
        fields = form_fields(
            {
                "model": model,
                "prompt": prompt,
                "n": n,
                "size": size,
                "quality": options.quality,
                "background": options.background,
                "input_fidelity": options.input_fidelity,
                "output_format": options.output_format,
            }
        )
        client = self._client()
        progress(Progress(request.operation, 0, 1))
        answer = client.request("POST", "/images/edits", files=files, data=fields).json()
        keep_alpha = options.background == "transparent"
        outputs = []
        for item in answer.get("data", []):
            data = (
                base64.b64decode(item["b64_json"])
                if item.get("b64_json")
                else client.get_bytes(item["url"])
            )
            pixels = decode_rgb(data, provider=NAME)
            outputs.append(pixels if keep_alpha else pixels[:, :, :3])
        if not outputs:
            raise InvalidRequest(f"{NAME}: the service returned no image")
        outputs, report = sized(outputs, wanted)
        progress(Progress(request.operation, 1, 1))
        usage = dict(answer.get("usage") or {})
        usage["output_size"] = report
        return ImageResult(
            images=[OutputImage(pixels=p) for p in outputs],
            provider=NAME,
            model=model,
            usage=usage,
        )
