"""onnxruntime sessions on the CPU, with thread settings that suit small machines."""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from retouch.engines import EngineOutOfMemory
from retouch.errors import DependencyMissing, InvalidRequest


def create_session(path: Path, *, threads: int) -> Any:
    """An InferenceSession for ``path``; a file that is not an ONNX model is a clear error."""
    try:
        import onnxruntime as ort
    except ImportError as exc:
        raise DependencyMissing("onnxruntime", purpose="running ONNX models") from exc
    if not path.is_file():
        raise InvalidRequest(f"{path}: no such model file")
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    # Workers spin while a run is on (as by default, so no run gets slower) but stop when it
    # returns, instead of burning the cores the caller's own post-processing then needs.
    options.add_session_config_entry("session.force_spinning_stop", "1")
    try:
        return ort.InferenceSession(
            str(path), sess_options=options, providers=["CPUExecutionProvider"]
        )
    except Exception as exc:  # onnxruntime raises its own untyped errors for bad files
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InvalidRequest(f"{path} is not a usable ONNX model ({first_line[:200]})") from exc


class OnnxEngine:
    """One session and the lock that serialises its runs (each run has every thread)."""

    runtime = "onnxruntime"

    def __init__(self, path: Path, *, threads: int) -> None:
        self.path = path
        self.threads = threads
        self.session = create_session(path, threads=threads)
        self.lock = threading.Lock()
        self.inputs = list(self.session.get_inputs())
        self.outputs = list(self.session.get_outputs())

    @property
    def input_names(self) -> list[str]:
        return [i.name for i in self.inputs]

    def infer(
        self, feeds: Mapping[str, NDArray[Any]], outputs: Sequence[str] | None = None
    ) -> list[NDArray[Any]]:
        """Run the session; only ``outputs`` are copied out (all when None)."""
        with self.lock:
            try:
                result = self.session.run(None if outputs is None else list(outputs), dict(feeds))
            except MemoryError as exc:
                raise EngineOutOfMemory(str(exc)) from exc
        return list(result)


def to_batch(
    pixels: NDArray[Any],
    offset: NDArray[np.float32],
    factor: NDArray[np.float32],
    *,
    dtype: str,
    layout: str,
) -> NDArray[Any]:
    """HxWxC pixels (uint8, or float in 0..1) -> one image batch in the model's layout and
    values: ``(x - offset) * factor`` per channel with x in 0..1, or uint8 0..255."""
    height, width, channels = pixels.shape
    if dtype == "uint8":
        unit8 = (
            pixels
            if pixels.dtype == np.uint8
            else np.clip(np.rint(pixels * 255.0), 0, 255).astype(np.uint8)
        )
        hwc8 = unit8[None]
        return np.ascontiguousarray(hwc8 if layout == "NHWC" else hwc8.transpose(0, 3, 1, 2))
    to_unit = 1.0 / 255.0 if pixels.dtype == np.uint8 else 1.0
    if layout == "NHWC":
        scaled: NDArray[np.float32] = np.multiply(pixels, np.float32(to_unit), dtype=np.float32)
        scaled -= offset
        scaled *= factor
        return scaled[None]
    batch = np.empty((1, channels, height, width), np.float32)
    for c in range(channels):
        plane = batch[0, c]
        np.multiply(pixels[:, :, c], np.float32(to_unit * factor[c]), out=plane, casting="unsafe")
        if offset[c]:
            plane -= np.float32(offset[c] * factor[c])
    return batch


def from_batch(output: NDArray[Any], *, layout: str) -> NDArray[np.float32]:
    """The first image of a model output -> HxWxC float32 (model values, not yet 0..1).
    (1, H, W) maps and (1, 1, H, W) maps both give HxWx1."""
    array = np.asarray(output)
    if array.ndim == 3:  # (1, H, W): a single map without its channel axis (some exports)
        return np.ascontiguousarray(array[0][:, :, None], dtype=np.float32)
    if array.ndim != 4:
        raise InvalidRequest(f"expected an image batch out of the model, got shape {array.shape}")
    if layout == "NHWC":
        return np.ascontiguousarray(array[0], dtype=np.float32)
    planes = array[0]
    if planes.shape[0] == 1:
        return np.ascontiguousarray(planes[0][:, :, None], dtype=np.float32)
    import cv2

    merged = np.asarray(cv2.merge([np.asarray(p, np.float32) for p in planes]), np.float32)
    return merged if merged.ndim == 3 else merged[:, :, None]
