"""ncnn networks on the CPU (Vulkan off).

Input goes in through ncnn's own pixel helper (``Mat.from_pixels``) or per-channel writes,
both of which respect ncnn's channel alignment (``cstep``); building a Mat straight from a
CHW numpy array does not, and gives garbage for widths x heights that are not multiples of
4. Output is read per channel for the same reason. Value scaling (``(x - mean) * norm``)
happens inside ncnn, on the Mat.

Threads are set per run: an extractor copies the net's options when it is created, so the
net's thread count is set just before (under the net's lock) and every run gets its own.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from retouch.engines import EngineOutOfMemory
from retouch.errors import DependencyMissing, InvalidRequest

__all__ = ["EngineOutOfMemory", "NcnnEngine", "load_net"]


def _ncnn() -> Any:
    try:
        import ncnn
    except ImportError as exc:
        raise DependencyMissing("ncnn", purpose="running ncnn models") from exc
    return ncnn


class NcnnEngine:
    runtime = "ncnn"

    def __init__(self, net: Any, input_name: str, output_name: str, path: Path, threads: int):
        self.net = net
        self.input_name = input_name
        self.output_name = output_name
        self.path = path
        self.threads = threads
        """Threads of a run that does not name its own."""
        # an ncnn Net is not re-entrant across extractors on all builds
        self.lock = threading.Lock()

    @property
    def session(self) -> Any:
        return self.net

    def run_pixels(
        self,
        rgb: NDArray[Any],
        *,
        mean: Sequence[float],
        norm: Sequence[float],
        threads: int,
    ) -> NDArray[np.float32]:
        """HxWx3 RGB (uint8 0..255, or float) -> the network's raw HxWxC float32 output.
        The network sees ``(x - mean) * norm`` per channel, x in the input's own units."""
        ncnn = _ncnn()
        height, width = rgb.shape[:2]
        if rgb.dtype == np.uint8:
            mat = ncnn.Mat.from_pixels(
                np.ascontiguousarray(rgb), ncnn.Mat.PixelType.PIXEL_RGB, width, height
            )
        else:
            mat = ncnn.Mat(width, height, rgb.shape[2])
            for c in range(rgb.shape[2]):
                np.asarray(mat.channel(c))[:] = rgb[:, :, c]
        if any(mean) or any(n != 1 for n in norm):
            mat.substract_mean_normalize(list(mean) if any(mean) else [], list(norm))
        with self.lock:
            self.net.opt.num_threads = threads
            extractor = self.net.create_extractor()
            extractor.input(self.input_name, mat)
            try:
                ret, out = extractor.extract(self.output_name)
            except MemoryError as exc:
                raise EngineOutOfMemory(str(exc)) from exc
            del extractor
        if ret != 0:
            raise EngineOutOfMemory(f"ncnn returned {ret} for a {width} x {height} input")
        planes = [np.asarray(out.channel(c)) for c in range(out.c)]
        if len(planes) == 1:
            return np.array(planes[0], np.float32)[:, :, None]
        import cv2

        return np.asarray(cv2.merge(planes), np.float32)  # a copy out of ncnn's Mat


def load_net(param: Path, weights: Path, *, threads: int) -> NcnnEngine:
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
    return NcnnEngine(net, inputs[0], outputs[0], param, threads)
