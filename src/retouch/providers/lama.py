"""Learned object removal: LaMa and MI-GAN ONNX models from the model store.

The Toolkit hands this provider a crop around the mask scaled to fit 512 px and padded to a
multiple of 8 (crop-and-stitch), and pastes the result back so pixels outside the mask stay
exact. Fixed-size exports (LaMa at 512 x 512) get the crop reflect-padded to their size.

Input conventions differ between exports and come from the catalog's ``io`` (or, for a file
added under another name, from the model's own input types): LaMa takes float images in 0..1
and a float mask with 1 = hole; MI-GAN's pipeline takes uint8 images and a uint8 mask with
0 = hole.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from retouch.engines import default_threads
from retouch.engines.onnx_session import create_session
from retouch.errors import InvalidRequest, ModelNotAvailable, UnsupportedOperation
from retouch.results import ImageResult, OutputImage
from retouch.types import (
    EraseRequest,
    OperationSpec,
    Progress,
    ProgressCallback,
    ProviderInfo,
    ProviderStatus,
    Request,
    parse_options,
)

NAME = "lama"
PREFERRED = ("lama", "migan")
WORKING_SIZE = 512


@dataclass(frozen=True)
class EraseModelIO:
    size: int | None
    """Fixed input side, or None when the model takes any size."""
    dtype: str
    """float32 or uint8"""
    image_range: float
    output_range: float | None
    """255 or 1; None: decide from the output's values."""
    mask_hole: int
    """The mask value that marks the hole: 1 (float masks) or 0 (MI-GAN's uint8 masks)."""


@dataclass(frozen=True)
class LamaOptions:
    model: str | None = None
    """A store name (lama, migan, or one added with `retouch models add NAME PATH --task erase`)
    or a path to an .onnx file; default: the first erase model on this machine."""
    threads: int | None = None


def io_from_catalog(raw: dict[str, Any]) -> EraseModelIO:
    return EraseModelIO(
        size=int(raw["size"]) if raw.get("fixed_size", True) and raw.get("size") else None,
        dtype=str(raw.get("dtype", "float32")),
        image_range=float(raw.get("image_range", 1.0)),
        output_range=float(raw["output_range"]) if raw.get("output_range") else None,
        mask_hole=int(raw.get("mask_hole", 1)),
    )


def io_from_session(session: Any) -> EraseModelIO:
    """Conventions read off the model itself, for files the catalog does not describe."""
    image = session.get_inputs()[0]
    uint8 = image.type == "tensor(uint8)"
    dims = image.shape[2:] if len(image.shape) == 4 else []
    fixed = (
        dims[0] if dims and all(isinstance(d, int) for d in dims) and dims[0] == dims[1] else None
    )
    return EraseModelIO(
        size=fixed,
        dtype="uint8" if uint8 else "float32",
        image_range=255.0 if uint8 else 1.0,
        output_range=255.0 if uint8 else None,
        mask_hole=0 if uint8 else 1,
    )


@dataclass
class EraseModel:
    name: str
    session: Any
    io: EraseModelIO
    lock: threading.Lock

    def run(self, rgb: NDArray[np.uint8], hole: NDArray[np.bool_]) -> NDArray[np.uint8]:
        height, width = rgb.shape[:2]
        if self.io.size is not None:
            if max(height, width) > self.io.size:
                raise InvalidRequest(
                    f"{self.name} takes at most {self.io.size} px; got {width} x {height}"
                )
            pad = ((0, self.io.size - height), (0, self.io.size - width))
            mode = "reflect" if height > pad[0][1] and width > pad[1][1] else "edge"
            rgb = np.pad(rgb, (*pad, (0, 0)), mode=mode)  # type: ignore[call-overload]
            hole = np.pad(hole, pad, mode="edge")
        image: NDArray[Any]
        mask: NDArray[Any]
        if self.io.dtype == "uint8":
            hole_value = 255 if self.io.mask_hole else 0
            image = rgb.transpose(2, 0, 1)[None].astype(np.uint8)
            mask = np.where(hole, hole_value, 255 - hole_value)[None, None].astype(np.uint8)
        else:
            image = (rgb.astype(np.float32) * (self.io.image_range / 255.0)).transpose(2, 0, 1)[
                None
            ]
            hole_value = 1 if self.io.mask_hole else 0
            mask = np.where(hole, hole_value, 1 - hole_value)[None, None].astype(np.float32)
        names = [i.name for i in self.session.get_inputs()]
        with self.lock:
            (out,) = self.session.run(
                None, {names[0]: np.ascontiguousarray(image), names[1]: np.ascontiguousarray(mask)}
            )
        result = np.asarray(out)[0].transpose(1, 2, 0)[:height, :width]
        if result.dtype != np.uint8:
            scale = self.io.output_range or (255.0 if float(result.max()) > 1.5 else 1.0)
            result = np.clip(np.rint(result.astype(np.float32) * (255.0 / scale)), 0, 255)
        return np.ascontiguousarray(result, dtype=np.uint8)


class LamaProvider:
    info = ProviderInfo(
        name=NAME,
        kind="local",
        description="LaMa / MI-GAN object removal (ONNX weights from `retouch models pull lama|migan`)",
        operations={
            "erase": OperationSpec(
                min_side=8, working_size=WORKING_SIZE, size_multiple=8, options=LamaOptions
            )
        },
        priority=20,
    )

    def __init__(self) -> None:
        self._cache: dict[tuple[str, int], EraseModel] = {}
        self._cache_lock = threading.Lock()

    def _store(self) -> Any:
        from retouch.models.store import ModelStore

        return ModelStore()

    def _available(self) -> list[str]:
        names = self._store().names_for("erase")
        return sorted(
            names, key=lambda n: (PREFERRED.index(n) if n in PREFERRED else len(PREFERRED), n)
        )

    def status(self) -> ProviderStatus:
        available = self._available()
        if available:
            return ProviderStatus(True, f"models here: {', '.join(available)}")
        error = ModelNotAvailable(
            "lama", "or `retouch models pull migan`; until then erase uses classic"
        )
        return ProviderStatus(False, str(error), error)

    def run(self, request: Request, progress: ProgressCallback) -> ImageResult:
        if not isinstance(request, EraseRequest):
            raise UnsupportedOperation(f"{NAME} does not do {request.operation}")
        options = parse_options(LamaOptions, request.options, provider=NAME)
        model = self.load(options.model, threads=options.threads or default_threads())
        progress(Progress("erase", 0, 1))
        filled = model.run(request.image.rgb8(), request.mask.array > 0)
        progress(Progress("erase", 1, 1))
        return ImageResult(
            images=[OutputImage(pixels=filled, seed=request.seed)],
            provider=NAME,
            model=model.name,
            usage={"work_size": [request.image.width, request.image.height]},
        )

    def load(self, name: str | None, *, threads: int) -> EraseModel:
        if name is None:
            available = self._available()
            if not available:
                raise ModelNotAvailable("lama")
            name = available[0]
        key = (name, threads)
        with self._cache_lock:
            if key not in self._cache:
                self._cache[key] = self._load_uncached(name, threads)
            return self._cache[key]

    def _load_uncached(self, name: str, threads: int) -> EraseModel:
        store = self._store()
        if name.endswith(".onnx"):
            path, entry = Path(name), None
        else:
            path, entry = store.path(name), store.entry_for(name)
        session = create_session(path, threads=threads)
        if len(session.get_inputs()) != 2:
            raise InvalidRequest(
                f"{path} must take an image and a mask; it takes {len(session.get_inputs())} inputs"
            )
        # A catalog name (also when the file was added by hand) means the catalog's export.
        io = (
            io_from_catalog(entry.io)
            if entry is not None and entry.io
            else io_from_session(session)
        )
        return EraseModel(name=name, session=session, io=io, lock=threading.Lock())
