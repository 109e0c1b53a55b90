"""Local face restoration: GFPGAN 1.4, CodeFormer, GPEN-BFR-512, RestoreFormer++ (ONNX).

For each face found (``retouch.faces``: YuNet from the store, else OpenCV's Haar cascades
that need no download): the five landmarks are aligned to the FFHQ template at the
restorer's size (512), the crop is restored, its colour shift taken out, and it is warped
back through the inverse transform and blended through a feathered square, so no box or
seam shows and every pixel outside the pasted faces is returned unchanged. Faces smaller
than ``min_face`` are left alone.

The ONNX exports (facefusion's, from ``retouch models pull gfpgan-1.4`` etc.) share one
convention: input ``input``, 1 x 3 x 512 x 512 RGB scaled to -1..1, output the same. The
CodeFormer export has a second input ``weight``, a float64 tensor of shape [1]: its
fidelity ``w`` (0 = strongest restoration, 1 = closest to the input). The other models have
no such input, so a fidelity other than the default is refused for them (``blend`` softens
any model's result).
"""

from __future__ import annotations

import dataclasses
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from retouch import faces as face_ops
from retouch._modules import module_available
from retouch.engines import default_threads
from retouch.engines.onnx_session import create_session
from retouch.errors import (
    DependencyMissing,
    InvalidRequest,
    ModelNotAvailable,
    UnsupportedOperation,
)
from retouch.results import ImageResult, OutputImage
from retouch.types import (
    OperationSpec,
    Progress,
    ProgressCallback,
    ProviderInfo,
    ProviderStatus,
    Request,
    RestoreFacesRequest,
    param,
    parse_options,
)

NAME = "faces"
TASK: Literal["restore-faces"] = "restore-faces"
PREFERRED = ("gfpgan-1.4", "codeformer", "restoreformer-plus-plus", "gpen-bfr-512")
DEFAULT_SIZE = 512
DEFAULT_FIDELITY: float = next(
    f.default for f in dataclasses.fields(RestoreFacesRequest) if f.name == "fidelity"
)  # type: ignore[assignment]


@dataclass(frozen=True)
class FacesOptions:
    detector: str = param(
        "auto",
        kind="text",
        choices=face_ops.DETECTORS,
        help="face detector: yunet (`retouch models pull yunet`), haar (no download), or "
        "auto: yunet when it is here, else haar (default)",
    )
    min_face: int = param(
        32, low=0, high=100_000, metavar="PX", help="leave faces smaller than PX alone (default 32)"
    )
    only_center_face: bool = param(False, help="restore only the face nearest the centre")
    blend: float = param(
        1.0,
        low=0.0,
        high=1.0,
        help="how much of the restored face to keep: 1 all of it (default), 0.5 half, 0 none",
    )
    color_match: bool = param(
        True,
        flag="--no-color-match",
        help="keep the restorer's own colours (default: its colour shift is taken out)",
    )
    threads: int | None = None

    def __post_init__(self) -> None:
        if self.detector not in face_ops.DETECTORS:
            raise ValueError(f"detector must be one of {', '.join(face_ops.DETECTORS)}")
        if self.min_face < 0 or not 0.0 <= self.blend <= 1.0:
            raise ValueError("min_face must be >= 0 and blend 0..1")
        if self.threads is not None and self.threads < 1:
            raise ValueError("threads must be >= 1")


@dataclass
class Restorer:
    """One ONNX face restorer and the names of its inputs."""

    name: str
    session: Any
    image_input: str
    weight_input: str | None
    weight_dtype: Any
    size: int
    lock: threading.Lock

    def restore(self, face: NDArray[np.uint8], fidelity: float) -> NDArray[np.uint8]:
        """An aligned ``size`` x ``size`` RGB face in, the restored face out."""
        x = face.astype(np.float32) * (2.0 / 255.0) - 1.0
        feed: dict[str, Any] = {self.image_input: np.ascontiguousarray(x.transpose(2, 0, 1)[None])}
        if self.weight_input is not None:
            feed[self.weight_input] = np.array([fidelity], dtype=self.weight_dtype)
        with self.lock:
            out = self.session.run(None, feed)[0]
        result = np.asarray(out, np.float32)
        if result.ndim != 4 or result.shape[1] != 3:
            raise InvalidRequest(
                f"{self.name}: expected a 1 x 3 x H x W output, got {list(result.shape)}"
            )
        rgb = (np.clip(result[0].transpose(1, 2, 0), -1.0, 1.0) + 1.0) * 127.5
        if rgb.shape[:2] != face.shape[:2]:
            import cv2

            rgb = cv2.resize(rgb, (face.shape[1], face.shape[0]), interpolation=cv2.INTER_AREA)
        restored: NDArray[np.uint8] = np.clip(np.rint(rgb), 0, 255).astype(np.uint8)
        return restored


_WEIGHT_TYPES = {"tensor(double)": np.float64, "tensor(float)": np.float32}


def restorer_from_session(name: str, session: Any, size_hint: int | None) -> Restorer:
    """Read a restorer's conventions off its inputs: one 1 x 3 x S x S image, and optionally
    CodeFormer's ``weight``."""
    inputs = list(session.get_inputs())
    images = [i for i in inputs if len(i.shape) == 4]
    others = [i for i in inputs if len(i.shape) != 4]
    output = session.get_outputs()[0].shape
    if (
        len(images) != 1
        or images[0].type != "tensor(float)"
        or len(others) > 1
        or len(output) != 4
        or (output[1] not in (3, None) and not isinstance(output[1], str))
    ):
        raise InvalidRequest(
            f"{name} is not a face restorer: it should take one float 1 x 3 x 512 x 512 image "
            f"(and optionally a fidelity weight) and answer one; it takes "
            f"{', '.join(f'{i.name} {i.type} {i.shape}' for i in inputs)} and answers {output}"
        )
    image = images[0]
    dims = image.shape[2:]
    size = dims[0] if all(isinstance(d, int) and d > 0 for d in dims) else None
    weight = others[0] if others else None
    if weight is not None and weight.type not in _WEIGHT_TYPES:
        raise InvalidRequest(
            f"{name}: its second input {weight.name} is {weight.type}, not a number"
        )
    return Restorer(
        name=name,
        session=session,
        image_input=image.name,
        weight_input=weight.name if weight is not None else None,
        weight_dtype=_WEIGHT_TYPES[weight.type] if weight is not None else np.float64,
        size=int(size or size_hint or DEFAULT_SIZE),
        lock=threading.Lock(),
    )


def _face_weight(size: int) -> NDArray[np.float32]:
    """1 inside the face oval of the aligned crop: where colours are compared."""
    import cv2

    (cx, cy), (ax, ay) = face_ops.face_ellipse_in_template()
    k = size / 512.0
    weight = np.zeros((size, size), np.float32)
    cv2.ellipse(
        weight, (round(cx * k), round(cy * k)), (round(ax * k), round(ay * k)), 0, 0, 360, 1.0, -1
    )
    return weight


class FacesProvider:
    info = ProviderInfo(
        name=NAME,
        kind="local",
        description="face restoration: GFPGAN / CodeFormer / GPEN / RestoreFormer++ ONNX from the "
        "store, aligned to the FFHQ template and pasted back seamlessly",
        operations={
            TASK: OperationSpec(
                min_side=8,
                accepts_16bit=True,  # pasted into the 16-bit picture: the rest keeps its bits
                honours=frozenset({"model", "fidelity"}),
                options=FacesOptions,
            )
        },
        priority=10,
    )

    def __init__(self) -> None:
        self._cache: dict[tuple[str, int], Restorer] = {}
        self._cache_lock = threading.Lock()
        self.detectors = face_ops.Detectors()

    def _store(self) -> Any:
        from retouch.models.store import ModelStore

        return ModelStore()

    def _available(self) -> list[str]:
        names = self._store().names_for(TASK)
        order = {n: i for i, n in enumerate(PREFERRED)}
        return sorted(names, key=lambda n: (order.get(n, len(order)), n))

    def status(self) -> ProviderStatus:
        error: Exception
        if not module_available("onnxruntime"):
            error = DependencyMissing("onnxruntime", purpose="face restoration")
            return ProviderStatus(False, str(error), error)
        available = self._available()
        detector = "yunet" if self.detectors.yunet_path() else "haar (no download)"
        if available:
            return ProviderStatus(
                True, f"restorers here: {', '.join(available)}; detector {detector}"
            )
        error = ModelNotAvailable(
            PREFERRED[0],
            "add --trust: only CRC32s are published for it; or codeformer, "
            "restoreformer-plus-plus, gpen-bfr-512. Faces are found with no download, "
            "restoring them needs one of these",
        )
        return ProviderStatus(False, str(error), error, needs_model=True)

    def run(self, request: Request, progress: ProgressCallback) -> ImageResult:
        if not isinstance(request, RestoreFacesRequest):
            raise UnsupportedOperation(f"{NAME} does not do {request.operation}")
        options = parse_options(FacesOptions, request.options, provider=NAME)
        restorer = self.load(request.model, threads=options.threads or default_threads())
        if restorer.weight_input is None and request.fidelity != DEFAULT_FIDELITY:
            raise InvalidRequest(
                f"fidelity is CodeFormer's weight; {restorer.name} takes none: leave fidelity "
                f"out or use --model codeformer (--option blend=0.5 softens any model)",
                param="fidelity",
            )
        detector = self.detectors.get(options.detector)
        rgb = request.image.rgb8()
        height, width = rgb.shape[:2]
        progress(Progress(TASK, 0, 1))
        found = detector.detect(rgb)
        work, skipped = face_ops.select(
            found,
            (width, height),
            min_size=options.min_face,
            only_center=options.only_center_face,
        )
        canvas = np.ascontiguousarray(request.image.pixels[:, :, :3]).copy()
        soft = face_ops.crop_mask(restorer.size)
        weight = _face_weight(restorer.size)
        for index, face in enumerate(work):
            progress(Progress(TASK, index, len(work) + 1))
            matrix = face_ops.alignment(face.landmarks, restorer.size)
            aligned = face_ops.crop(rgb, matrix, restorer.size)
            restored = restorer.restore(aligned, request.fidelity)
            if options.color_match:
                restored = face_ops.match_colours(restored, aligned, weight)
            if options.blend < 1.0:
                mixed = aligned.astype(np.float32) + options.blend * (
                    restored.astype(np.float32) - aligned.astype(np.float32)
                )
                restored = np.clip(np.rint(mixed), 0, 255).astype(np.uint8)
            face_ops.paste_back(canvas, restored, matrix, soft)
        progress(Progress(TASK, len(work) + 1, len(work) + 1))
        warnings = []
        if not found:
            warnings.append(
                f"no face found (detector {detector.name}); the image is returned unchanged"
            )
        elif skipped:
            warnings.append(
                f"{len(skipped)} face(s) left alone (smaller than {options.min_face} px"
                + (" or not the centre face)" if options.only_center_face else ")")
            )
        described = [{**f.describe(), "restored": True} for f in work] + [
            {**f.describe(), "restored": False} for f in skipped
        ]
        return ImageResult(
            images=[OutputImage(pixels=canvas)],
            provider=NAME,
            model=restorer.name,
            usage={"faces": described, "restored": len(work), "detector": detector.name},
            warnings=warnings,
        )

    def load(self, name: str | None, *, threads: int) -> Restorer:
        if name is None:
            available = self._available()
            if not available:
                raise ModelNotAvailable(PREFERRED[0])
            name = available[0]
        key = (name, threads)
        with self._cache_lock:
            if key not in self._cache:
                self._cache[key] = self._load_uncached(name, threads)
            return self._cache[key]

    def _load_uncached(self, name: str, threads: int) -> Restorer:
        store = self._store()
        if name.endswith(".onnx"):
            path, entry = Path(name).expanduser(), None
        else:
            path, entry = store.path(name), store.entry_for(name)
        session = create_session(path, threads=threads)
        size_hint = int(entry.io["size"]) if entry is not None and entry.io.get("size") else None
        return restorer_from_session(name, session, size_hint)
