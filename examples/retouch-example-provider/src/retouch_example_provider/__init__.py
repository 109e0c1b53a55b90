"""An example retouch provider: sepia toning as a ``stylize`` operation."""

from __future__ import annotations

import numpy as np

from retouch.errors import InvalidRequest, UnsupportedOperation
from retouch.types import (
    ImageResult,
    OperationSpec,
    Progress,
    ProgressCallback,
    ProviderInfo,
    ProviderStatus,
    Request,
    ResultImage,
    StylizeRequest,
)

SEPIA = np.array([[0.393, 0.769, 0.189], [0.349, 0.686, 0.168], [0.272, 0.534, 0.131]], np.float32)


class SepiaProvider:
    info = ProviderInfo(
        name="sepia",
        kind="local",
        description="sepia toning (an example third-party provider)",
        operations={"stylize": OperationSpec(honours=frozenset({"style", "strength"}))},
        priority=-100,  # never chosen unless named
    )

    def status(self) -> ProviderStatus:
        return ProviderStatus(True, "ready")

    def run(self, request: Request, progress: ProgressCallback) -> ImageResult:
        if not isinstance(request, StylizeRequest):
            raise UnsupportedOperation(f"sepia does not do {request.operation}")
        if request.style not in (None, "sepia") or request.style_image is not None:
            raise InvalidRequest("sepia has one style: sepia")
        progress(Progress("sepia", 0, 1))
        rgb = request.image.rgb8().astype(np.float32)
        toned = np.clip(rgb @ SEPIA.T, 0, 255)
        mixed = rgb * (1 - request.strength) + toned * request.strength
        progress(Progress("sepia", 1, 1))
        return ImageResult(
            images=[ResultImage(pixels=np.rint(mixed).astype(np.uint8))], provider="sepia"
        )
