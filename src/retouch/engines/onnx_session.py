"""onnxruntime sessions on the CPU, with thread settings that suit small machines."""

from __future__ import annotations

from pathlib import Path
from typing import Any

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
    try:
        return ort.InferenceSession(
            str(path), sess_options=options, providers=["CPUExecutionProvider"]
        )
    except Exception as exc:  # onnxruntime raises its own untyped errors for bad files
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InvalidRequest(f"{path} is not a usable ONNX model ({first_line[:200]})") from exc
