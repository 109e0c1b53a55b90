"""Session helpers for the inference runtimes (ncnn, onnxruntime).

Each module imports its runtime lazily and is the only place that knows its data layout:
everything that leaves an engine is RGB, HxWxC, float32 in 0..1.
"""

from __future__ import annotations

import os


def default_threads() -> int:
    """All cores: the machines retouch targets run one job at a time."""
    return max(1, os.cpu_count() or 1)
