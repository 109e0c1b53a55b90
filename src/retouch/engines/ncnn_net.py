"""ncnn networks on the CPU (Vulkan off).

Input goes in through ncnn's own pixel helper (``Mat.from_pixels``) or per-channel writes,
both of which respect ncnn's channel alignment (``cstep``); building a Mat straight from a
CHW numpy array does not, and gives garbage for widths x heights that are not multiples of
4. Output is read per channel for the same reason.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from retouch.errors import DependencyMissing, InvalidRequest


class EngineOutOfMemory(RuntimeError):
    """The engine could not allocate what a tile needs; retry with a smaller tile."""


def _ncnn() -> Any:
    try:
        import ncnn
    except ImportError as exc:
        raise DependencyMissing("ncnn", purpose="running ncnn models") from exc
    return ncnn


@dataclass
class NcnnNet:
    net: Any
    input_name: str
    output_name: str
    path: Path
    lock: threading.Lock

    def run(self, rgb: NDArray[Any]) -> NDArray[np.float32]:
        """HxWx3 RGB (uint8, or float32 in 0..1) -> the network's HxWx3 float32 output."""
        ncnn = _ncnn()
        height, width = rgb.shape[:2]
        if rgb.dtype == np.uint8:
            mat = ncnn.Mat.from_pixels(
                np.ascontiguousarray(rgb), ncnn.Mat.PixelType.PIXEL_RGB, width, height
            )
            mat.substract_mean_normalize([], [1 / 255.0] * 3)
        else:
            mat = ncnn.Mat(width, height, 3)
            for c in range(3):
                np.array(mat.channel(c), copy=False)[:] = rgb[:, :, c]
        with self.lock:  # an ncnn Net is not re-entrant across extractors on all builds
            extractor = self.net.create_extractor()
            extractor.input(self.input_name, mat)
            try:
                ret, out = extractor.extract(self.output_name)
            except MemoryError as exc:
                raise EngineOutOfMemory(str(exc)) from exc
        if ret != 0:
            raise EngineOutOfMemory(f"ncnn returned {ret} for a {width} x {height} input")
        channels = [np.array(out.channel(c), dtype=np.float32) for c in range(out.c)]
        return np.stack(channels, axis=-1)


def load_net(param: Path, weights: Path, *, threads: int) -> NcnnNet:
    """Load ``param`` + ``weights`` with Vulkan off; clear errors for files that are not ncnn models."""
    ncnn = _ncnn()
    for path in (param, weights):
        if not path.is_file():
            raise InvalidRequest(f"{path}: no such model file")
    net = ncnn.Net()
    net.opt.use_vulkan_compute = False
    net.opt.num_threads = threads
    if net.load_param(str(param)) != 0:
        raise InvalidRequest(f"{param} is not an ncnn .param file (ncnn could not parse it)")
    if net.load_model(str(weights)) != 0:
        raise InvalidRequest(f"{weights} does not hold the weights for {param.name}")
    inputs, outputs = list(net.input_names()), list(net.output_names())
    if len(inputs) != 1 or len(outputs) != 1:
        raise InvalidRequest(
            f"{param} must have one input and one output, has {inputs} -> {outputs}"
        )
    return NcnnNet(
        net=net, input_name=inputs[0], output_name=outputs[0], path=param, lock=threading.Lock()
    )
