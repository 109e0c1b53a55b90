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

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from retouch.engines.descriptor import (
    ImageModel,
    InputRange,
    MaskInput,
    ModelSpec,
    OutputRange,
    SizeRequirements,
    load_onnx,
)
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


def model_spec(io: EraseModelIO) -> ModelSpec:
    """The engine's description of an erase export: image + mask in, image out at 1x, padded
    (reflect) to its fixed size when it has one."""
    uint8 = io.dtype == "uint8"
    hole = (255.0 if uint8 else 1.0) if io.mask_hole else 0.0
    keep = (255.0 if uint8 else 1.0) - hole
    return ModelSpec(
        size=SizeRequirements(fixed=io.size, pad_mode="reflect-or-edge"),
        input=InputRange(white=255.0, dtype="uint8") if uint8 else InputRange(white=io.image_range),
        output=OutputRange(white=io.output_range),
        mask=MaskInput(hole=hole, keep=keep, dtype="uint8" if uint8 else "float32"),
    )


def spec_from_session(model: ImageModel) -> ModelSpec:
    return model_spec(io_from_session(model.session))


@dataclass
class EraseModel:
    name: str
    io: EraseModelIO
    model: ImageModel

    def run(
        self, rgb: NDArray[np.uint8], hole: NDArray[np.bool_], threads: int | None = None
    ) -> NDArray[np.uint8]:
        filled: NDArray[np.uint8] = self.model.run(
            rgb, mask=hole, threads=threads, out_dtype=np.uint8
        )
        return filled


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
        model = self.load(options.model, threads=options.threads)
        progress(Progress("erase", 0, 1))
        filled = model.run(request.image.rgb8(), request.mask.array > 0, options.threads)
        progress(Progress("erase", 1, 1))
        return ImageResult(
            images=[OutputImage(pixels=filled, seed=request.seed)],
            provider=NAME,
            model=model.name,
            usage={"work_size": [request.image.width, request.image.height]},
        )

    def load(self, name: str | None, *, threads: int | None = None) -> EraseModel:
        """The erase model by store name or .onnx path (default: the first one here)."""
        if name is None:
            available = self._available()
            if not available:
                raise ModelNotAvailable("lama")
            name = available[0]
        store = self._store()
        if name.endswith(".onnx"):
            path, entry = Path(name), None
        else:
            path, entry = store.path(name), store.entry_for(name)
        # A catalog name (also when the file was added by hand) means the catalog's export.
        io = io_from_catalog(entry.io) if entry is not None and entry.io else None
        model = load_onnx(
            path,
            name=name,
            spec=spec_from_session if io is None else model_spec(io),
            threads=threads,
        )
        if len(model.engine.inputs) != 2:
            raise InvalidRequest(
                f"{path} must take an image and a mask; it takes {len(model.engine.inputs)} inputs"
            )
        return EraseModel(name=name, io=io or io_from_session(model.session), model=model)
