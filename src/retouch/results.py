"""What every operation returns: ``ImageResult`` (the whole answer) holding ``OutputImage``s
(one picture each). They can save themselves, so they live here and not in ``types``."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from retouch import imageio
from retouch.picture import Pixels


@dataclass
class OutputImage:
    """One output picture. Metadata from the input rides along so saving is faithful."""

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
        return imageio.to_pil(self.pixels)


ResultImage = OutputImage
"""The earlier name of ``OutputImage`` (kept for providers written against it)."""


@dataclass
class ImageResult:
    """What every operation returns; enough to save, inspect and replay it."""

    images: list[OutputImage]
    provider: str
    model: str | None = None
    timings: dict[str, float] = field(default_factory=dict)
    usage: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    parameters: dict[str, Any] = field(default_factory=dict)

    @property
    def image(self) -> OutputImage:
        """The first image (most operations return exactly one)."""
        return self.images[0]

    def save(
        self, path: str | Path, *, overwrite: bool = False, quality: int | None = None
    ) -> list[Path]:
        """Write the images (``name.png``, then ``name-1.png``... when there are several)."""
        return imageio.save_result(self, path, overwrite=overwrite, quality=quality)

    def encode(self, format: str = "png", *, index: int = 0, quality: int | None = None) -> bytes:
        """One image as file bytes (``png``, ``jpeg``, ``webp``...), parameters inside."""
        return imageio.encode_result(self, index, format, quality=quality)

    def to_base64(self, format: str = "png", *, index: int = 0, quality: int | None = None) -> str:
        """One image as base64 text (what JSON APIs carry)."""
        import base64

        return base64.b64encode(self.encode(format, index=index, quality=quality)).decode("ascii")

    def to_data_uri(
        self, format: str = "png", *, index: int = 0, quality: int | None = None
    ) -> str:
        """One image as a ``data:image/...;base64,`` URI (for HTML, notebooks and JSON)."""
        return imageio.data_uri(self.encode(format, index=index, quality=quality), format)

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
