"""Decoded pixels and what it takes to write them back faithfully: the lowest data layer.

Nothing here does I/O; ``retouch.imageio`` turns files into a ``Picture`` and back.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from retouch.errors import InvalidRequest

Pixels = NDArray[Any]
"""HxWxC array, C in (3, 4), uint8 or uint16, RGB(A) order. Never BGR outside an engine."""

Mask = NDArray[np.uint8]
"""HxW uint8: 255 = edit, 0 = keep exactly, grey = partial."""


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
