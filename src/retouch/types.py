"""The data that flows between layers: pictures, requests, results, and the provider contract.

Requests are typed per operation and frozen; a misspelt field is a TypeError at construction,
never ignored. Provider-specific knobs travel in ``options`` (a mapping or the provider's own
options dataclass), which the provider parses strictly with ``parse_options``.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
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
from numpy.typing import NDArray

from retouch.errors import InvalidRequest

if TYPE_CHECKING:
    from pathlib import Path

    from PIL import Image

Pixels = NDArray[Any]
"""HxWxC array, C in (3, 4), uint8 or uint16, RGB(A) order. Never BGR outside an engine."""

Mask = NDArray[np.uint8]
"""HxW uint8: 255 = edit, 0 = keep exactly, grey = partial."""

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
    "mask",
)


@dataclass
class Picture:
    """A decoded image plus what is needed to write it back faithfully."""

    pixels: Pixels
    icc_profile: bytes | None = None
    exif: bytes | None = None
    """EXIF block with the orientation already applied to ``pixels`` and reset to 1."""
    source_mode: str = "RGB"
    """The file's own mode (``L``, ``CMYK``, ``I;16``...) so that saving can restore it."""
    name: str = "<image>"
    """Where it came from, for error messages."""
    format: str | None = None

    def __post_init__(self) -> None:
        p = self.pixels
        if p.ndim != 3 or p.shape[2] not in (3, 4) or p.dtype not in (np.uint8, np.uint16):
            raise InvalidRequest(
                f"{self.name}: pixels must be HxWx3 or HxWx4 uint8/uint16, "
                f"got shape {p.shape} {p.dtype}"
            )

    @property
    def width(self) -> int:
        return int(self.pixels.shape[1])

    @property
    def height(self) -> int:
        return int(self.pixels.shape[0])

    @property
    def size(self) -> tuple[int, int]:
        """(width, height), PIL's order."""
        return self.width, self.height

    @property
    def has_alpha(self) -> bool:
        return int(self.pixels.shape[2]) == 4

    @property
    def is_16bit(self) -> bool:
        return bool(self.pixels.dtype == np.uint16)

    @property
    def rgb(self) -> Pixels:
        """The colour channels at the picture's own bit depth."""
        return self.pixels[:, :, :3]

    @property
    def alpha(self) -> Pixels | None:
        return self.pixels[:, :, 3] if self.has_alpha else None

    def rgb8(self) -> NDArray[np.uint8]:
        """Colour channels as 8-bit RGB: what a provider that needs 8-bit gets."""
        return to_uint8(self.rgb)

    def with_pixels(self, pixels: Pixels) -> Picture:
        """The same metadata around new pixels."""
        return dataclasses.replace(self, pixels=pixels)


def to_uint8(pixels: Pixels) -> NDArray[np.uint8]:
    if pixels.dtype == np.uint8:
        return np.ascontiguousarray(pixels)
    # Rounded 16 -> 8 bit: 65535 -> 255, 257 * k -> k exactly.
    return ((pixels.astype(np.uint32) + 128) // 257).astype(np.uint8)


def to_uint16(pixels: Pixels) -> NDArray[np.uint16]:
    if pixels.dtype == np.uint16:
        return np.ascontiguousarray(pixels)
    return pixels.astype(np.uint16) * 257


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


# --- requests -----------------------------------------------------------------------------

Options = Union[Mapping[str, Any], object, None]  # noqa: UP007 - a runtime alias


@dataclass(frozen=True, kw_only=True)
class EraseRequest:
    """Remove what the mask covers and fill it from the surroundings (no prompt)."""

    operation: ClassVar[Operation] = "erase"
    image: Picture
    mask: Mask
    seed: int | None = None
    options: Options = None


@dataclass(frozen=True, kw_only=True)
class InpaintRequest:
    """Repaint what the mask covers, guided by a prompt."""

    operation: ClassVar[Operation] = "inpaint"
    image: Picture
    mask: Mask
    prompt: str
    negative_prompt: str | None = None
    seed: int | None = None
    n: int = 1
    strength: float = 1.0
    steps: int | None = None
    guidance: float | None = None
    options: Options = None


@dataclass(frozen=True, kw_only=True)
class OutpaintRequest:
    """Extend the canvas by the given pixels per side and fill the new area."""

    operation: ClassVar[Operation] = "outpaint"
    image: Picture
    left: int = 0
    right: int = 0
    top: int = 0
    bottom: int = 0
    prompt: str | None = None
    seed: int | None = None
    options: Options = None


@dataclass(frozen=True, kw_only=True)
class EditRequest:
    """Image-to-image edit by prompt; ``strength`` 0 returns the input."""

    operation: ClassVar[Operation] = "edit"
    image: Picture
    prompt: str
    mask: Mask | None = None
    negative_prompt: str | None = None
    strength: float = 0.6
    seed: int | None = None
    n: int = 1
    options: Options = None


@dataclass(frozen=True, kw_only=True)
class VariationsRequest:
    operation: ClassVar[Operation] = "variations"
    image: Picture
    n: int = 1
    strength: float = 0.6
    prompt: str | None = None
    seed: int | None = None
    options: Options = None


@dataclass(frozen=True, kw_only=True)
class UpscaleRequest:
    """Enlarge by ``scale`` (any factor > 0), or to ``width``/``height``."""

    operation: ClassVar[Operation] = "upscale"
    image: Picture
    scale: float = 4.0
    width: int | None = None
    height: int | None = None
    model: str | None = None
    options: Options = None


@dataclass(frozen=True, kw_only=True)
class ResizeRequest:
    """Lanczos resize so the longest side is at most ``max_size``, or to ``width``/``height``."""

    operation: ClassVar[Operation] = "resize"
    image: Picture
    max_size: int | None = None
    width: int | None = None
    height: int | None = None
    options: Options = None


@dataclass(frozen=True, kw_only=True)
class RemoveBackgroundRequest:
    operation: ClassVar[Operation] = "remove-background"
    image: Picture
    only_mask: bool = False
    model: str | None = None
    options: Options = None


@dataclass(frozen=True, kw_only=True)
class RestoreFacesRequest:
    operation: ClassVar[Operation] = "restore-faces"
    image: Picture
    fidelity: float = 0.5
    model: str | None = None
    options: Options = None


@dataclass(frozen=True, kw_only=True)
class StylizeRequest:
    operation: ClassVar[Operation] = "stylize"
    image: Picture
    style: str | None = None
    style_image: Picture | None = None
    strength: float = 1.0
    options: Options = None


@dataclass(frozen=True, kw_only=True)
class MaskRequest:
    """Make a mask: ``kind`` is e.g. "subject", "background" or "box"."""

    operation: ClassVar[Operation] = "mask"
    image: Picture
    kind: str
    box: tuple[int, int, int, int] | None = None
    points: tuple[tuple[int, int], ...] = ()
    options: Options = None


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
    MaskRequest,
]


def request_parameters(request: Request) -> dict[str, Any]:
    """The request's parameters as plain data (images described, not embedded): for replay."""
    out: dict[str, Any] = {"operation": request.operation}
    for f in dataclasses.fields(request):
        value = getattr(request, f.name)
        if isinstance(value, Picture):
            out[f.name] = {"name": value.name, "width": value.width, "height": value.height}
        elif isinstance(value, np.ndarray):
            out[f.name] = {"shape": list(value.shape), "selected": int((value > 0).sum())}
        elif dataclasses.is_dataclass(value) and not isinstance(value, type):
            out[f.name] = dataclasses.asdict(value)
        elif isinstance(value, Mapping):
            out[f.name] = dict(value)
        else:
            out[f.name] = value
    return out


OptionsT = TypeVar("OptionsT")


def parse_options(cls: type[OptionsT], options: Options, *, provider: str) -> OptionsT:
    """Turn ``options`` into the provider's options dataclass; unknown keys are an error."""
    if options is None:
        return cls()
    if isinstance(options, cls):
        return options
    if not isinstance(options, Mapping):
        raise InvalidRequest(
            f"{provider}: options must be a mapping or {cls.__name__}, got {type(options).__name__}"
        )
    known = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(options) - known)
    if unknown:
        raise InvalidRequest(
            f"{provider}: unknown option(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
        )
    try:
        return cls(**options)
    except (TypeError, ValueError) as exc:
        raise InvalidRequest(f"{provider}: bad options: {exc}") from exc


# --- results ------------------------------------------------------------------------------


@dataclass
class ResultImage:
    """One output image. Metadata from the input rides along so saving is faithful."""

    pixels: Pixels
    seed: int | None = None
    icc_profile: bytes | None = None
    exif: bytes | None = None
    source_mode: str = "RGB"

    @property
    def width(self) -> int:
        return int(self.pixels.shape[1])

    @property
    def height(self) -> int:
        return int(self.pixels.shape[0])

    def to_pil(self) -> Image.Image:
        from retouch import imageio

        return imageio.to_pil(self.pixels)


@dataclass
class ImageResult:
    """What every operation returns; enough to save, inspect and replay it."""

    images: list[ResultImage]
    provider: str
    model: str | None = None
    timings: dict[str, float] = field(default_factory=dict)
    usage: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    parameters: dict[str, Any] = field(default_factory=dict)

    @property
    def image(self) -> ResultImage:
        """The first image (most operations return exactly one)."""
        return self.images[0]

    def save(
        self, path: str | Path, *, overwrite: bool = False, quality: int | None = None
    ) -> list[Path]:
        """Write the images (``name.png``, then ``name-1.png``... when there are several)."""
        from retouch import imageio

        return imageio.save_result(self, path, overwrite=overwrite, quality=quality)

    def metadata(self) -> dict[str, Any]:
        """JSON-ready description of the result (no pixels)."""
        return {
            "provider": self.provider,
            "model": self.model,
            "images": [{"width": i.width, "height": i.height, "seed": i.seed} for i in self.images],
            "timings": self.timings,
            "usage": self.usage,
            "warnings": self.warnings,
            "parameters": self.parameters,
        }

    @contextmanager
    def timed(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.timings[name] = round(self.timings.get(name, 0.0) + time.perf_counter() - start, 4)


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
    """Which of seed / negative_prompt / strength / n / prompt the provider uses."""
    options: type | None = None


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
    (options ``model``) can still run."""


@runtime_checkable
class Provider(Protocol):
    info: ProviderInfo

    def status(self) -> ProviderStatus:
        """Cheap readiness check: dependencies importable, weights present, key set."""
        ...

    def run(self, request: Request, progress: ProgressCallback) -> ImageResult:
        """Do the work. Raise UnsupportedOperation/InvalidRequest before doing any."""
        ...
