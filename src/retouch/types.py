"""The declaration: one request dataclass per operation, and the provider contract.

Every field a user can set is a field of a request dataclass, and its ``param(...)``
metadata (help, range or choices, CLI flag, whether a provider must declare support for it)
is the one place it is described. The CLI subcommands, the HTTP request models and OpenAPI,
``GET /v1/operations`` and ``retouch.operations()`` are generated from these classes
(``retouch.declaration`` walks them), so a field added here appears everywhere.

Requests are frozen; a misspelt field is a TypeError at construction, never ignored.
Provider-specific knobs travel in ``options`` (a mapping or the provider's own options
dataclass), parsed strictly with ``parse_options``; an options field that carries
``param(...)`` metadata is also offered as a flag / form field of its operations.

This module holds data only: no I/O imports (``retouch.results`` holds the result types,
which can save themselves).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import (
    TYPE_CHECKING,
    Any,
    ClassVar,
    Literal,
    Protocol,
    TypeVar,
    Union,
    runtime_checkable,
)

import numpy as np

from retouch.errors import ConfigurationError, InvalidRequest
from retouch.picture import Mask, Picture, Pixels, to_uint8, to_uint16

if TYPE_CHECKING:
    from retouch.results import ImageResult, OutputImage, ResultImage

__all__ = [
    "GUIDES",
    "OPERATIONS",
    "REQUEST_TYPES",
    "AdjustRequest",
    "EditRequest",
    "EraseRequest",
    "ImageResult",
    "InpaintRequest",
    "Mask",
    "MaskInput",
    "MaskRequest",
    "Operation",
    "OperationSpec",
    "OutpaintRequest",
    "OutputImage",
    "Param",
    "Picture",
    "Pixels",
    "Progress",
    "ProgressCallback",
    "Provider",
    "ProviderInfo",
    "ProviderStatus",
    "RemoveBackgroundRequest",
    "Request",
    "ResizeRequest",
    "RestoreFacesRequest",
    "ResultImage",
    "StylizeRequest",
    "UpscaleRequest",
    "VariationsRequest",
    "no_progress",
    "param",
    "parse_options",
    "to_uint8",
    "to_uint16",
]

Operation = Literal[
    "erase",
    "inpaint",
    "outpaint",
    "edit",
    "variations",
    "upscale",
    "resize",
    "remove-background",
    "restore-faces",
    "stylize",
    "adjust",
    "mask",
]
OPERATIONS: tuple[Operation, ...] = (
    "erase",
    "inpaint",
    "outpaint",
    "edit",
    "variations",
    "upscale",
    "resize",
    "remove-background",
    "restore-faces",
    "stylize",
    "adjust",
    "mask",
)


# --- progress -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Progress:
    """One report of work done: ``step`` of ``total`` within ``stage``."""

    stage: str
    step: int
    total: int

    @property
    def fraction(self) -> float:
        return self.step / self.total if self.total else 0.0


ProgressCallback = Callable[[Progress], None]
"""Called as work advances; raise ``retouch.errors.Cancelled`` inside it to stop the work."""


def no_progress(_: Progress) -> None:
    """A progress callback that ignores reports."""


# --- field metadata -----------------------------------------------------------------------

Kind = Literal[
    "image", "mask", "text", "int", "float", "bool", "ratio", "bytes", "box", "points", "options"
]
"""How a front end reads a field. Derived from the annotation unless ``param(kind=...)``."""


@dataclass(frozen=True)
class Param:
    """What every front end needs to know about one field (carried as field metadata)."""

    help: str
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    """``low`` itself is not allowed (a value must be above it)."""
    choices: tuple[str, ...] = ()
    kind: Kind | None = None
    name: str | None = None
    """The field's flat name over HTTP, in recipes and in metadata (default: its own name).
    ``MaskInput`` fields use it (``grow`` is ``grow_mask``)."""
    flag: str | None = None
    """The CLI's long option (default: ``--`` + the flat name with dashes)."""
    aliases: tuple[str, ...] = ()
    """More CLI spellings, e.g. ``("-n",)`` or ``("--mask-blur",)``."""
    metavar: str | None = None
    needs_support: bool = False
    """A provider must list the field in ``OperationSpec.honours`` to be given a value other
    than the default; otherwise the request is refused before any work (never ignored)."""
    max_by_image: Literal["diagonal"] | None = None
    """A ceiling that scales with the image: at most its diagonal in pixels."""
    max_length: int = 32_000
    """Longest text accepted (text fields)."""
    cli: bool = True
    """False: not offered as a CLI flag (the command has its own way to set it)."""
    only_for: tuple[str, ...] = ()
    """Used only with these values of the request's ``kind`` (empty: always)."""
    required_for: tuple[str, ...] = ()
    """Required with these values of the request's ``kind``."""
    separator: str | None = None
    """Text fields with ``choices``: several of them may be given, joined by this
    (``canny,depth``); each one is checked."""
    aligned: bool = False
    """Image fields: a picture laid over the main image (a ControlNet guide), of the same
    aspect ratio; masked work crops it with the image, so the provider sees the same area."""


META_KEY = "retouch"


def param(default: Any = dataclasses.MISSING, **meta: Any) -> Any:
    """A request field with its metadata: ``seed: int | None = param(None, help=...)``."""
    return field(default=default, metadata={META_KEY: Param(**meta)})


def _param_of(f: dataclasses.Field[Any]) -> Param | None:
    found = f.metadata.get(META_KEY)
    return found if isinstance(found, Param) else None


# --- masks --------------------------------------------------------------------------------

MaskFrom = Literal["auto", "luminance", "alpha"]
DEFAULT_CROP_MARGIN = 128
"""Context around the mask's box for masked work (IOPaint's crop margin)."""
MASK_WORDS = ("subject", "background", "faces")
"""Mask sources made from the image itself by a mask provider, named by a word alone."""
MASK_PREFIXES = ("click", "text")
"""Mask sources that take arguments: ``click:X,Y;-X,Y;box=L,T,R,B``, ``text:the red car``
(``retouch.masks.parse_mask_word`` reads them)."""


def mask_word(source: object) -> str | None:
    """The mask kind a mask source names (``"subject"``, ``"click:10,20"`` -> ``"click"``),
    or None when it is not one of the words (a file, bytes, an array...)."""
    if not isinstance(source, str) or len(source) > 10_000:
        return None
    if source.strip() in MASK_WORDS:
        return source.strip()
    word, colon, _ = source.partition(":")
    return word if colon and word in MASK_PREFIXES else None


MASK_KINDS: dict[str, str] = {
    "subject": "mask of the photo's subject (white = subject), made by a segmentation model",
    "background": "mask of the photo's background (white = background), by a segmentation model",
    "rect": "a filled rectangle",
    "ellipse": "a filled ellipse inside a box",
    "polygon": "a filled polygon",
    "grow": "grow (dilate) a mask",
    "shrink": "shrink (erode) a mask",
    "feather": "soften a mask's edge with a Gaussian",
    "invert": "swap edit and keep",
    "threshold": "make a grey mask pure black/white",
    "from-alpha": "mask from transparency (transparent = edit), as OpenAI/ComfyUI masks are",
    "faces": "the faces in a photo: ovals turned with each face, or boxes (OpenCV, no download; "
    "YuNet from the store)",
    "click": "the object under clicked points and/or inside a box (Segment Anything from the "
    "store; GrabCut with no weights)",
    "text": "the area a phrase names, e.g. 'the red car' (CLIPSeg from the store)",
}
"""What the mask operation makes, by ``kind``; providers say which kinds they do
(``OperationSpec.choices``)."""


@dataclass(frozen=True, kw_only=True)
class MaskInput:
    """How a masked operation gets its mask: the source and how to read and prepare it.

    Shared by every masked operation. ``source`` is a mask image in any form ``imageio``
    reads, an HxW array, or a word (``subject`` / ``background``) that makes one from the
    image. Providers receive a resolved ``MaskInput`` (``.array``: HxW uint8, 255 = edit).
    """

    source: Any = param(
        kind="mask",
        name="mask",
        flag="--mask",
        aliases=("-m",),
        help="mask image (white = area to change), or make one: 'subject', 'background', "
        "'faces', 'click:X,Y;X,Y' (points on the object; -X,Y not on it; box=L,T,R,B), "
        "'text:the red car'",
    )
    mask_from: MaskFrom = param(
        "auto",
        choices=("auto", "luminance", "alpha"),
        help="how to read the mask: brightness (white = edit), alpha (transparent = edit), or "
        "auto: alpha when the mask has transparency (default)",
    )
    invert: bool = param(False, name="invert_mask", help="edit the black part instead")
    resize: bool = param(
        False, name="resize_mask", help="stretch a mask of another size to the image"
    )
    grow: int = param(
        0,
        low=0,
        max_by_image="diagonal",
        name="grow_mask",
        metavar="PX",
        help="grow the mask by PX pixels first",
    )
    crop_margin: int | None = param(
        DEFAULT_CROP_MARGIN,
        low=0,
        high=1_000_000,  # a margin past the image's edges is clipped to them: no cost
        metavar="PX",
        help="context around the mask given to the provider, in pixels (default 128; "
        "none: the whole image)",
    )

    @classmethod
    def of(cls, mask: Mask) -> MaskInput:
        """A resolved mask: already in retouch's convention, nothing left to do."""
        return cls(source=mask, mask_from="luminance")

    @property
    def array(self) -> Mask:
        """The mask (HxW uint8, 255 = edit) once the Toolkit has resolved it."""
        source = self.source
        if (
            isinstance(source, np.ndarray)
            and source.ndim == 2
            and source.dtype == np.uint8
            and self.mask_from != "alpha"
            and not self.invert
            and not self.grow
        ):
            return source
        raise ConfigurationError(
            "this mask has not been resolved: run requests through retouch.Toolkit.run"
        )


def _coerce_mask(request: Any) -> None:
    """Let a request be built with a bare mask (array, path...) as well as a MaskInput."""
    mask = request.mask
    if mask is not None and not isinstance(mask, MaskInput):
        object.__setattr__(request, "mask", MaskInput(source=mask))


# --- shared fields ------------------------------------------------------------------------


def _image() -> Any:
    return param(kind="image", help="the image: a file (PNG, JPEG, WebP, TIFF...)")


def _seed() -> Any:
    return param(
        None,
        low=0,
        high=2**32 - 1,
        needs_support=True,
        help="seed for reproducible results (default: random; the one used is returned)",
    )


def _model(help: str = "model name in the store, or a path (providers with models)") -> Any:
    return param(None, needs_support=True, metavar="NAME", help=help)


def _provider() -> Any:
    return param(
        None,
        metavar="NAME",
        help="provider name (default: the best ready one; see `retouch providers`)",
    )


def _options() -> Any:
    return param(
        None,
        kind="options",
        help="provider options (checked by the chosen provider), e.g. fast=true",
    )


def _prompt(required: bool, help: str) -> Any:
    if required:
        return param(kind="text", help=help)
    return param(None, needs_support=True, help=help)


def _negative_prompt() -> Any:
    return param(None, needs_support=True, help="what to keep out of the picture")


def _n() -> Any:
    return param(
        1, low=1, high=10, aliases=("-n",), needs_support=True, help="how many images (default 1)"
    )


def _strength(default: float, help: str) -> Any:
    return param(default, low=0.0, high=1.0, needs_support=True, help=help)


def _feather(default: int, help: str) -> Any:
    return param(
        default,
        low=0,
        max_by_image="diagonal",
        aliases=("--mask-blur",),
        metavar="PX",
        help=f"{help} (default {default})",
    )


def _steps() -> Any:
    return param(
        None, low=1, high=150, needs_support=True, help="sampling steps (providers that use them)"
    )


def _guidance() -> Any:
    return param(
        None,
        low=1.0,
        high=20.0,
        needs_support=True,
        help="guidance scale: how closely to follow the prompt (providers that use it)",
    )


def _size(what: str) -> Any:
    return param(None, low=1, metavar="PX", help=what)


def _output_side(side: str) -> Any:
    return _size(
        f"output {side} (default: the input's; alone keeps the aspect ratio); made by the "
        "provider when it can, else the result is resized (the result says which)"
    )


GUIDES = (
    "canny",
    "depth",
    "lineart",
    "softedge",
    "scribble",
    "openpose",
    "segmentation",
    "tile",
    "none",
)
"""What a ControlNet can be guided by. Edges, lines, scribbles and tiles are made from the
image without weights; depth, pose and segmentation maps by a model from the store, or
given as ``control_image``."""


def _control() -> Any:
    return param(
        None,
        choices=GUIDES,
        separator=",",
        needs_support=True,
        metavar="GUIDE[,GUIDE]",
        help="guide the result with ControlNets: canny, depth, lineart, softedge, scribble, "
        "openpose, segmentation or tile, several joined by commas (canny,depth); none: no guide",
    )


def _control_image() -> Any:
    return param(
        None,
        kind="image",
        aligned=True,
        needs_support=True,
        metavar="FILE",
        help="your own guide for the first --control guide instead of one made from the "
        "image: a sketch, a pose skeleton, a colour-coded segmentation map (the image's "
        "aspect ratio, any size)",
    )


def _control_scale() -> Any:
    return param(
        1.0,
        low=0.0,
        high=2.0,
        needs_support=True,
        help="how strongly the guides steer (0: not at all; default 1)",
    )


def _control_start() -> Any:
    return param(
        0.0,
        low=0.0,
        high=1.0,
        needs_support=True,
        help="fraction of the steps after which the guides start steering (default 0)",
    )


def _control_end() -> Any:
    return param(
        1.0,
        low=0.0,
        high=1.0,
        needs_support=True,
        help="fraction of the steps after which the guides stop steering (default 1)",
    )


# --- requests -----------------------------------------------------------------------------

Options = Union[Mapping[str, Any], object, None]  # noqa: UP007 - a runtime alias


@dataclass(frozen=True, kw_only=True)
class EraseRequest:
    operation: ClassVar[Operation] = "erase"
    summary: ClassVar[str] = (
        "Remove what the mask covers (white = remove) and fill it from the surroundings; "
        "pixels outside the mask stay exactly as they were."
    )
    image: Picture = _image()
    mask: MaskInput = param(kind="mask", help="the area to remove")
    feather: int = _feather(0, "soften the mask edge inwards by PX")
    seed: int | None = _seed()
    model: str | None = _model()
    provider: str | None = _provider()
    options: Options = _options()

    def __post_init__(self) -> None:
        _coerce_mask(self)


@dataclass(frozen=True, kw_only=True)
class InpaintRequest:
    operation: ClassVar[Operation] = "inpaint"
    summary: ClassVar[str] = (
        "Repaint what the mask covers (white = repaint) following a prompt; pixels outside "
        "the mask stay exactly as they were."
    )
    image: Picture = _image()
    mask: MaskInput = param(kind="mask", help="the area to repaint")
    prompt: str = _prompt(True, "what to paint in the masked area")
    negative_prompt: str | None = _negative_prompt()
    strength: float = _strength(
        1.0, "how much the masked area may change: 0 keeps it, 1 repaints it"
    )
    steps: int | None = _steps()
    guidance: float | None = _guidance()
    n: int = _n()
    seed: int | None = _seed()
    feather: int = _feather(8, "soften (blur) the mask edge inwards by PX, so the fill blends in")
    control: str | None = _control()
    control_image: Picture | None = _control_image()
    control_scale: float = _control_scale()
    control_start: float = _control_start()
    control_end: float = _control_end()
    model: str | None = _model()
    provider: str | None = _provider()
    options: Options = _options()

    def __post_init__(self) -> None:
        _coerce_mask(self)


@dataclass(frozen=True, kw_only=True)
class OutpaintRequest:
    operation: ClassVar[Operation] = "outpaint"
    summary: ClassVar[str] = (
        "Extend the canvas and fill the new area: pixels per side, or a target width/height "
        "or aspect ratio (the canvas grows evenly)."
    )
    image: Picture = _image()
    left: int = param(0, low=0, metavar="PX", help="pixels to add on the left")
    right: int = param(0, low=0, metavar="PX", help="pixels to add on the right")
    top: int = param(0, low=0, metavar="PX", help="pixels to add on the top")
    bottom: int = param(0, low=0, metavar="PX", help="pixels to add on the bottom")
    width: int | None = _size("target canvas width")
    height: int | None = _size("target canvas height")
    aspect: float | None = param(
        None,
        low=0.05,
        high=20.0,
        kind="ratio",
        help="target aspect ratio (width / height), e.g. 16:9 or 1.5",
    )
    prompt: str | None = _prompt(
        False, "what to paint in the new area (providers that use prompts)"
    )
    seed: int | None = _seed()
    feather: int = _feather(16, "seam blend width")
    model: str | None = _model()
    provider: str | None = _provider()
    options: Options = _options()


@dataclass(frozen=True, kw_only=True)
class EditRequest:
    operation: ClassVar[Operation] = "edit"
    summary: ClassVar[str] = (
        "Change a whole image following a prompt (img2img); strength 0 returns the input."
    )
    image: Picture = _image()
    prompt: str = _prompt(True, "what the picture should become")
    mask: MaskInput | None = param(
        None, kind="mask", help="only change this area (white = change); the rest stays exact"
    )
    negative_prompt: str | None = _negative_prompt()
    strength: float = _strength(0.6, "0 keeps the input, 1 ignores it")
    n: int = _n()
    seed: int | None = _seed()
    feather: int = _feather(8, "with a mask: soften the mask edge inwards by PX")
    width: int | None = _output_side("width")
    height: int | None = _output_side("height")
    control: str | None = _control()
    control_image: Picture | None = _control_image()
    control_scale: float = _control_scale()
    control_start: float = _control_start()
    control_end: float = _control_end()
    model: str | None = _model()
    provider: str | None = _provider()
    options: Options = _options()

    def __post_init__(self) -> None:
        _coerce_mask(self)


@dataclass(frozen=True, kw_only=True)
class VariationsRequest:
    operation: ClassVar[Operation] = "variations"
    summary: ClassVar[str] = "Make variations of an image."
    image: Picture = _image()
    n: int = _n()
    strength: float = _strength(0.6, "how far each variation may move from the input (0..1)")
    prompt: str | None = _prompt(False, "steer the variations (providers that take prompts)")
    seed: int | None = _seed()
    width: int | None = _output_side("width")
    height: int | None = _output_side("height")
    model: str | None = _model()
    provider: str | None = _provider()
    options: Options = _options()


@dataclass(frozen=True, kw_only=True)
class UpscaleRequest:
    operation: ClassVar[Operation] = "upscale"
    summary: ClassVar[str] = (
        "Enlarge by a scale (any factor up to 16) or to a width/height; alpha and 16 bit kept."
    )
    image: Picture = _image()
    scale: float = param(
        4.0, low=0.0, low_open=True, high=16.0, help="factor, above 0 up to 16 (default 4)"
    )
    width: int | None = _size("target width (alone: keeps the aspect ratio)")
    height: int | None = _size("target height (alone: keeps the aspect ratio)")
    face_enhance: bool = param(
        False,
        aliases=("--face_enhance",),
        help="then restore the faces in the enlarged picture with the best restore-faces "
        "provider (Real-ESRGAN's --face_enhance)",
    )
    detail: bool = param(
        False,
        needs_support=True,
        help="add detail after enlarging: a tiled Stable Diffusion pass guided by a tile "
        "ControlNet (diffusion providers; slow)",
    )
    seed: int | None = _seed()
    model: str | None = _model("model name or path (default: the provider's)")
    provider: str | None = _provider()
    options: Options = _options()


@dataclass(frozen=True, kw_only=True)
class ResizeRequest:
    operation: ClassVar[Operation] = "resize"
    summary: ClassVar[str] = (
        "Lanczos resize: shrink-only bounds (max_size for the longest side, max_width, "
        "max_height; combine them freely), or an exact width/height (one alone keeps the "
        "aspect ratio)."
    )
    image: Picture = _image()
    max_size: int | None = param(
        None, low=1, metavar="PX", help="longest side in pixels (never enlarges)"
    )
    max_width: int | None = param(
        None,
        low=1,
        metavar="PX",
        help="shrink only if wider than PX, keeping the aspect ratio (ImageMagick's 1920x>)",
    )
    max_height: int | None = param(
        None,
        low=1,
        metavar="PX",
        help="shrink only if taller than PX, keeping the aspect ratio (ImageMagick's x1080>)",
    )
    width: int | None = _size("target width")
    height: int | None = _size("target height")
    provider: str | None = _provider()
    options: Options = _options()


@dataclass(frozen=True, kw_only=True)
class RemoveBackgroundRequest:
    operation: ClassVar[Operation] = "remove-background"
    summary: ClassVar[str] = (
        "Cut out the main subject (transparent background), return its mask, or put it on a "
        "new background: a colour, an image or a blur of the photo itself."
    )
    image: Picture = _image()
    only_mask: bool = param(False, help="return the mask (white = subject) instead of the cut-out")
    bg_color: str | None = param(
        None, metavar="COLOR", help="new background: #rrggbb, a name, or r,g,b[,a]"
    )
    bg_image: Picture | None = param(
        None, kind="image", metavar="FILE", help="new background image (scaled to cover)"
    )
    bg_blur: float | None = param(
        None,
        low=0.0,
        low_open=True,
        high=500.0,
        metavar="RADIUS",
        help="blur the photo's own background by RADIUS px (portrait style)",
    )
    model: str | None = _model("segmentation model: a store name or a path to an .onnx")
    provider: str | None = _provider()
    options: Options = _options()


@dataclass(frozen=True, kw_only=True)
class RestoreFacesRequest:
    operation: ClassVar[Operation] = "restore-faces"
    summary: ClassVar[str] = (
        "Find the faces and restore them (GFPGAN, CodeFormer, GPEN, RestoreFormer++ from the "
        "store, or a server's); pixels outside the faces stay exactly as they were."
    )
    image: Picture = _image()
    fidelity: float = param(
        0.5,
        low=0.0,
        high=1.0,
        needs_support=True,
        help="0 = strongest restoration, 1 = closest to the input (CodeFormer's w)",
    )
    upscale: float = param(
        1.0,
        low=1.0,
        high=16.0,
        help="first enlarge the whole picture by this factor with the best upscaler "
        "(Real-ESRGAN), then restore the faces at the new size (GFPGAN's --upscale; default 1)",
    )
    model: str | None = _model(
        "face restoration model: gfpgan-1.4, codeformer, gpen-bfr-512, restoreformer-plus-plus "
        "(a store name) or a path"
    )
    provider: str | None = _provider()
    options: Options = _options()


@dataclass(frozen=True, kw_only=True)
class StylizeRequest:
    operation: ClassVar[Operation] = "stylize"
    summary: ClassVar[str] = (
        "Restyle: a built-in style (0-25, style-N, or a blend N:W,M:W), any picture as the "
        "style, or a prompt with a diffusion provider. strength 0 returns the input."
    )
    image: Picture = _image()
    style: str | None = param(
        None,
        needs_support=True,
        help="built-in style: N, style-N, its name (--list-styles), or a blend N:W,M:W",
    )
    style_image: Picture | None = param(
        None,
        kind="image",
        needs_support=True,
        metavar="FILE",
        help="any picture to take the style from",
    )
    prompt: str | None = _prompt(
        False, "restyle by a prompt with a diffusion provider, e.g. 'a watercolour painting'"
    )
    strength: float = _strength(1.0, "0 keeps the input, 1 the full style (default 1)")
    model: str | None = _model()
    provider: str | None = _provider()
    options: Options = _options()


WHITE_BALANCES = ("none", "grey-world", "white-patch")


@dataclass(frozen=True, kw_only=True)
class AdjustRequest:
    operation: ClassVar[Operation] = "adjust"
    summary: ClassVar[str] = (
        "Colour and tone: white balance, auto levels or auto contrast, match the colours of a "
        "reference picture, then brightness, contrast, saturation and gamma (in that order). "
        "Alpha and 16 bit kept; statistics use the visible pixels only."
    )
    image: Picture = _image()
    white_balance: str = param(
        "none",
        choices=WHITE_BALANCES,
        help="remove a colour cast: grey-world (the average becomes neutral) or white-patch "
        "(the brightest pixels become white)",
    )
    auto_levels: bool = param(
        False, help="stretch each channel to the full range (also removes a cast)"
    )
    auto_contrast: bool = param(
        False, help="stretch all channels together to the full range (keeps the hues)"
    )
    clip: float = param(
        0.5,
        low=0.0,
        high=10.0,
        metavar="PERCENT",
        help="with auto levels/contrast: percent of pixels clipped at each end (default 0.5)",
    )
    match_image: Picture | None = param(
        None,
        kind="image",
        metavar="FILE",
        help="match the colours (mean and spread in Lab) of this reference picture",
    )
    brightness: float = param(
        0.0, low=-1.0, high=1.0, help="add this fraction of full white: -1..1 (default 0)"
    )
    contrast: float = param(
        1.0, low=0.0, high=4.0, help="scale around mid-grey: 0 flat grey, 1 unchanged (default)"
    )
    saturation: float = param(
        1.0, low=0.0, high=4.0, help="0 grey, 1 unchanged (default), 2 twice as vivid"
    )
    gamma: float = param(
        1.0,
        low=0.1,
        high=10.0,
        help="above 1 brightens the mid-tones, below 1 darkens them (out = in^(1/gamma))",
    )
    provider: str | None = _provider()
    options: Options = _options()

    def __post_init__(self) -> None:
        # Refused when built (CLI, HTTP, recipes alike), before any image is read.
        if self.auto_levels and self.auto_contrast:
            raise InvalidRequest(
                "choose auto_levels (per channel) or auto_contrast (all channels together), "
                "not both",
                param="auto_contrast",
            )
        unchanged = (
            self.white_balance == "none"
            and not (self.auto_levels or self.auto_contrast)
            and self.match_image is None
            and (self.brightness, self.contrast, self.saturation, self.gamma) == (0, 1, 1, 1)
        )
        if unchanged:
            raise InvalidRequest(
                "adjust has nothing to do: set white_balance, auto_levels, auto_contrast, "
                "match_image, brightness, contrast, saturation or gamma",
                param="white_balance",
            )


@dataclass(frozen=True, kw_only=True)
class MaskRequest:
    operation: ClassVar[Operation] = "mask"
    summary: ClassVar[str] = (
        "Make or change a mask (white = edit): the photo's subject or background, its faces, "
        "the object under clicked points, the area a phrase names, a shape the size of the "
        "image, or a mask grown, shrunk, feathered, inverted or thresholded."
    )
    image: Picture = param(
        kind="image", help="the image (its subject, or its size for a shape), or the mask to change"
    )
    kind: str = param(
        "subject",
        choices=tuple(MASK_KINDS),
        cli=False,
        help="what to make: " + ", ".join(MASK_KINDS),
    )
    box: tuple[int, int, int, int] | None = param(
        None,
        kind="box",
        only_for=("rect", "ellipse", "click"),
        required_for=("rect", "ellipse"),
        help="LEFT,TOP,RIGHT,BOTTOM (right and bottom exclusive); click: a box around the object",
    )
    points: tuple[tuple[int, int], ...] = param(
        (),
        kind="points",
        aliases=("--point",),
        only_for=("polygon", "click"),
        required_for=("polygon",),
        help="the polygon's corners, or click: points on the object: 'X,Y X,Y ...' "
        "(--point X,Y, repeatable)",
    )
    negative_points: tuple[tuple[int, int], ...] = param(
        (),
        kind="points",
        flag="--negative",
        only_for=("click",),
        help="click: points on what is not the object, 'X,Y X,Y ...' (repeatable)",
    )
    text: str | None = param(
        None,
        kind="text",
        max_length=500,
        only_for=("text",),
        required_for=("text",),
        help="the phrase naming what to select, e.g. 'the red car'",
    )
    px: int | None = param(
        None,
        low=1,
        max_by_image="diagonal",
        metavar="PX",
        only_for=("grow", "shrink", "feather"),
        required_for=("grow", "shrink", "feather"),
        help="pixels to grow, shrink or feather by",
    )
    level: int = param(
        127,
        low=0,
        high=254,
        only_for=("threshold",),
        help="grey level above which a pixel is selected (default 127)",
    )
    model: str | None = _model()
    provider: str | None = _provider()
    options: Options = _options()

    def __post_init__(self) -> None:
        if self.kind == "click" and not self.points and self.box is None:
            raise InvalidRequest(
                "mask click needs points on the object (--point X,Y) or a box around it "
                "(--box L,T,R,B)",
                param="points",
            )


Request = Union[  # noqa: UP007 - a runtime alias
    EraseRequest,
    InpaintRequest,
    OutpaintRequest,
    EditRequest,
    VariationsRequest,
    UpscaleRequest,
    ResizeRequest,
    RemoveBackgroundRequest,
    RestoreFacesRequest,
    StylizeRequest,
    AdjustRequest,
    MaskRequest,
]

REQUEST_TYPES: dict[Operation, type[Any]] = {
    cls.operation: cls
    for cls in (
        EraseRequest,
        InpaintRequest,
        OutpaintRequest,
        EditRequest,
        VariationsRequest,
        UpscaleRequest,
        ResizeRequest,
        RemoveBackgroundRequest,
        RestoreFacesRequest,
        StylizeRequest,
        AdjustRequest,
        MaskRequest,
    )
}
"""Each operation's request class: the one declaration every front end is generated from."""


OptionsT = TypeVar("OptionsT")


def parse_options(cls: type[OptionsT], options: Options, *, provider: str) -> OptionsT:
    """Turn ``options`` into the provider's options dataclass; unknown keys are an error."""
    if options is None:
        return cls()
    if isinstance(options, cls):
        return options
    if not isinstance(options, Mapping):
        raise InvalidRequest(
            f"{provider}: options must be a mapping or {cls.__name__}, got {type(options).__name__}",
            param="options",
        )
    known = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(options) - known)
    if unknown:
        raise InvalidRequest(
            f"{provider}: unknown option(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}",
            param=unknown[0],
        )
    try:
        return cls(**options)
    except (TypeError, ValueError) as exc:
        raise InvalidRequest(f"{provider}: bad options: {exc}", param="options") from exc


# --- the provider contract ----------------------------------------------------------------


@dataclass(frozen=True)
class OperationSpec:
    """What one provider accepts for one operation; checked before any work is done."""

    min_side: int = 1
    max_side: int | None = None
    max_pixels: int | None = None
    size_multiple: int = 1
    accepts_alpha: bool = False
    """False: the provider gets RGB and retouch re-attaches the alpha afterwards."""
    accepts_16bit: bool = False
    """False: the provider gets 8-bit and retouch restores the bit depth afterwards."""
    working_size: int | None = None
    """Masked operations run on a crop around the mask scaled so its long side fits this."""
    honours: frozenset[str] = frozenset()
    """Which of the request's ``needs_support`` fields (seed, prompt, steps, ...) it uses."""
    choices: Mapping[str, frozenset[str]] = field(default_factory=dict)
    """Values it takes for choice fields, where it takes fewer than declared: the mask kinds
    it makes (``{"kind": frozenset({"subject", "background"})}``)."""
    options: type | None = None
    priority: int | None = None
    """Overrides the provider's priority for this operation (None: the provider's)."""


@dataclass(frozen=True)
class ProviderInfo:
    name: str
    kind: Literal["local", "remote"]
    description: str
    operations: Mapping[Operation, OperationSpec]
    extra: str | None = None
    """The pip extra it needs, e.g. ``diffusion`` for ``pip install 'retouch[diffusion]'``."""
    priority: int = 0
    """Higher wins when no provider is named and several are ready for an operation."""


@dataclass(frozen=True)
class ProviderStatus:
    ready: bool
    detail: str = ""
    error: Exception | None = None
    """What to raise when the provider is asked to run while not ready."""
    needs_model: bool = False
    """Not ready only because no default model is set up: a request that names its model
    can still run."""
    model: str | None = None
    """The model it runs when a request names none (what /sd-inpaint/health reports)."""


@runtime_checkable
class Provider(Protocol):
    info: ProviderInfo

    def status(self) -> ProviderStatus:
        """Cheap readiness check: dependencies importable, weights present, key set."""
        ...

    def run(self, request: Request, progress: ProgressCallback) -> ImageResult:
        """Do the work. Raise UnsupportedOperation/InvalidRequest before doing any."""
        ...


_MOVED = {"ImageResult", "OutputImage", "ResultImage"}


def __getattr__(name: str) -> Any:
    # The result types do I/O (they save themselves), so they live in retouch.results; these
    # names stay importable from here for providers written against the earlier layout.
    if name in _MOVED:
        from retouch import results

        return getattr(results, name)
    raise AttributeError(f"module 'retouch.types' has no attribute {name!r}")
