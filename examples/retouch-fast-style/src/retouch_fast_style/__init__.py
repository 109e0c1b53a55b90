"""fast-style: restyle with the ONNX Model Zoo's fast neural style networks (mosaic, candy,
rain-princess, udnie, pointilism; Johnson et al. 2016) or any ONNX network with their
layout, through retouch's engine layer.

The layout, from the zoo's model card (onnx/models, validated/vision/style_transfer/
fast_neural_style/README.md): one input ``input1``, 1 x 3 x 224 x 224, RGB as float32 in
0..255; one output ``output1`` of the same shape and range (clip to 0..255). A re-export with
free height and width runs at the photo's own resolution instead, padded to a multiple of 4
(the network's two stride-2 convolutions down and two up).

The engine layer (``retouch.engines.descriptor``) does the rest: loading once into the
process's bounded model cache, threads, resizing or padding, NCHW, the 0..255 range, clamping
and cropping back. This file only says what the network is (``describe``) and what the
operation does with it (``run``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from retouch.engines.descriptor import (
    ImageModel,
    InputRange,
    ModelSpec,
    OutputRange,
    SizeRequirements,
    load_onnx,
)
from retouch.errors import InvalidRequest, ModelNotAvailable, UnsupportedOperation
from retouch.models.store import ModelStore, resolve
from retouch.results import ImageResult, OutputImage
from retouch.types import (
    OperationSpec,
    Progress,
    ProgressCallback,
    ProviderInfo,
    ProviderStatus,
    Request,
    StylizeRequest,
    param,
    parse_options,
)

NAME = "fast-style"
TASK = "stylize"
ZOO = "https://github.com/onnx/models/tree/main/validated/vision/style_transfer/fast_neural_style"


@dataclass(frozen=True)
class FastStyleOptions:
    threads: int | None = param(
        None, low=1, high=1024, help="engine threads (default: all cores; capped at the cores)"
    )


def describe(model: ImageModel) -> ModelSpec:
    """What the network takes, read from its input: a fixed square (the zoo's 224) is
    stretched to and back; free sides run at full resolution, padded to a multiple of 4."""
    shape = list(model.engine.inputs[0].shape)
    if len(shape) != 4 or shape[1] not in (3, "3"):
        raise InvalidRequest(f"{model.name}: expected a 1 x 3 x H x W input, got {shape}")
    height, width = shape[2], shape[3]
    if isinstance(height, int) and isinstance(width, int):
        if height != width:
            raise InvalidRequest(f"{model.name}: expected a square input, got {width} x {height}")
        size = SizeRequirements(fixed=height, fit="stretch")
    else:
        size = SizeRequirements(multiple=4, minimum=16)
    return ModelSpec(
        size=size,
        input=InputRange(white=255.0),
        output=OutputRange(white=255.0),
        tiling="discouraged",  # instance normalisation: each tile would get its own colours
    )


def networks() -> list[str]:
    """The style networks added to the model store (``retouch models add NAME FILE --task
    stylize``); the catalog's own stylize entries are the built-in provider's."""
    store = ModelStore()
    return [name for name in store.names_for(TASK) if store.entry_for(name) is None]


class FastStyleProvider:
    info = ProviderInfo(
        name=NAME,
        kind="local",
        description="fast neural style networks from the ONNX Model Zoo (an example provider)",
        operations={
            "stylize": OperationSpec(
                min_side=16,
                honours=frozenset({"model", "strength"}),
                options=FastStyleOptions,
            )
        },
        priority=-100,  # an example: used when named (--provider fast-style)
    )

    def status(self) -> ProviderStatus:
        names = networks()
        if not names:
            return ProviderStatus(
                False,
                f"no style network: pass --model FILE.onnx, or add one: retouch models add "
                f"mosaic mosaic-9.onnx --task {TASK} (networks: {ZOO})",
                needs_model=True,
            )
        return ProviderStatus(True, f"networks: {', '.join(names)}", model=names[0])

    def load(self, name: str | None, threads: int | None = None) -> ImageModel:
        if name is None:
            names = networks()
            if not names:
                raise ModelNotAvailable("mosaic", f"pass --model FILE.onnx (networks: {ZOO})")
            name = names[0]
        path = resolve(name)
        if path.is_dir() or path.suffix.lower() != ".onnx":
            raise InvalidRequest(f"{path}: {NAME} runs one .onnx file")
        return load_onnx(Path(path), name=Path(name).stem, spec=describe, threads=threads)

    def run(self, request: Request, progress: ProgressCallback) -> ImageResult:
        if not isinstance(request, StylizeRequest):
            raise UnsupportedOperation(f"{NAME} does not do {request.operation}")
        # style / style_image / prompt never get here: the spec does not honour them, so
        # retouch refuses them (naming the providers that do) before run is called.
        options = parse_options(FastStyleOptions, request.options, provider=NAME)
        model = self.load(request.model, options.threads)
        rgb = request.image.rgb8()
        progress(Progress("stylize", 0, 1))
        styled = model.run(rgb, threads=options.threads)  # float32 in 0..1, the photo's size
        mixed = rgb.astype(np.float32) / 255 * (1 - request.strength) + styled * request.strength
        pixels = np.clip(np.rint(mixed * 255), 0, 255).astype(np.uint8)
        progress(Progress("stylize", 1, 1))
        return ImageResult(images=[OutputImage(pixels=pixels)], provider=NAME, model=model.name)
