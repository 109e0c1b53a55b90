"""Face masks: ``retouch mask faces``, ``--mask faces`` anywhere, ``retouch faces --json``.

Faces are found by ``retouch.faces``: YuNet when ``retouch models pull yunet`` has been run
(boxes, five detected landmarks, scores), else OpenCV's Haar cascades, which ship inside the
OpenCV wheel retouch already depends on (no download; frontal faces, eyes found by cascade,
nose and mouth placed from the template). The mask is each face's oval turned with the
face, feathered inwards, or its box. The faces themselves (box, landmarks, score) are in the
result's ``usage["faces"]``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from retouch import faces as face_ops
from retouch._modules import module_available
from retouch.errors import DependencyMissing, UnsupportedOperation
from retouch.results import ImageResult, OutputImage
from retouch.types import (
    MaskRequest,
    OperationSpec,
    Progress,
    ProgressCallback,
    ProviderInfo,
    ProviderStatus,
    Request,
    param,
    parse_options,
)

NAME = "facedetect"
SHAPES = ("ellipse", "box")


@dataclass(frozen=True)
class FaceMaskOptions:
    detector: str = param(
        "auto",
        kind="text",
        choices=face_ops.DETECTORS,
        help="face detector: yunet (`retouch models pull yunet`), haar (no download), or "
        "auto: yunet when it is here, else haar (default)",
    )
    shape: str = param(
        "ellipse",
        kind="text",
        choices=SHAPES,
        help="each face as its oval (default, feathered) or its box",
    )
    feather: float | None = param(
        None,
        low=0.0,
        max_by_image="diagonal",
        metavar="PX",
        help="soft edge in pixels (default: a tenth of each face for ovals, none for boxes)",
    )
    min_face: int = param(
        0, low=0, high=100_000, metavar="PX", help="leave out faces smaller than PX (default 0)"
    )
    only_center_face: bool = param(False, help="only the face nearest the centre")

    def __post_init__(self) -> None:
        if self.detector not in face_ops.DETECTORS:
            raise ValueError(f"detector must be one of {', '.join(face_ops.DETECTORS)}")
        if self.shape not in SHAPES:
            raise ValueError(f"shape must be one of {', '.join(SHAPES)}")
        if self.feather is not None and self.feather < 0:
            raise ValueError("feather must be >= 0")


class FaceDetectProvider:
    info = ProviderInfo(
        name=NAME,
        kind="local",
        description="face masks and face boxes/landmarks (OpenCV Haar, no download; YuNet from "
        "`retouch models pull yunet`)",
        operations={
            "mask": OperationSpec(
                min_side=8, choices={"kind": frozenset({"faces"})}, options=FaceMaskOptions
            )
        },
        priority=10,
    )

    def __init__(self) -> None:
        self.detectors = face_ops.Detectors()

    def status(self) -> ProviderStatus:
        if not module_available("cv2"):
            error = DependencyMissing("opencv-python-headless", purpose="face detection")
            return ProviderStatus(False, str(error), error)
        if self.detectors.yunet_path() is not None:
            return ProviderStatus(True, "yunet (from the store); haar with detector=haar")
        return ProviderStatus(
            True, "haar (ships with OpenCV); `retouch models pull yunet` for a better detector"
        )

    def run(self, request: Request, progress: ProgressCallback) -> ImageResult:
        if not isinstance(request, MaskRequest) or request.kind != "faces":
            raise UnsupportedOperation(f"{NAME} makes 'faces' masks only")
        options = parse_options(FaceMaskOptions, request.options, provider=NAME)
        detector = self.detectors.get(options.detector)
        rgb = request.image.rgb8()
        height, width = rgb.shape[:2]
        progress(Progress("faces", 0, 1))
        found = detector.detect(rgb)
        kept, _ = face_ops.select(
            found, (width, height), min_size=options.min_face, only_center=options.only_center_face
        )
        mask = face_ops.face_mask(
            (width, height),
            kept,
            shape="box" if options.shape == "box" else "ellipse",
            feather=options.feather,
        )
        progress(Progress("faces", 1, 1))
        warnings = [] if kept else [f"no face found (detector {detector.name})"]
        return ImageResult(
            images=[OutputImage(pixels=np.dstack([mask] * 3), source_mode="L")],
            provider=NAME,
            model=detector.name,
            usage={"faces": [f.describe() for f in kept], "detector": detector.name},
            warnings=warnings,
        )
