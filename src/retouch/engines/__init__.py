"""The engine layer: a model is loaded once, described once, and run the same way everywhere.

```
descriptor.py   ImageModel: typed metadata (scale, size requirements, value ranges, layout,
                mask input, tiling support) + run / run_tiled / embed; load_onnx, load_ncnn
cache.py        ModelCache: bounded LRU, one load per key even under concurrent callers
onnx_session.py onnxruntime: sessions on the CPU, NCHW/NHWC feeds
ncnn_net.py     ncnn: Vulkan off, pixels in through ncnn's own helpers, threads per extractor
```

Each runtime module imports its runtime lazily and is the only place that knows its data
layout: everything that leaves an engine is RGB, HxWxC, float32 in 0..1 (or uint8/uint16
when asked for, rounded once). This package imports neither runtime: ``import retouch``
stays light.

Threads: whatever a request asks, an engine never runs more threads than the machine has
cores (``cap_threads``; a request for a million threads once crashed the server inside
libgomp). ncnn takes the count per run (per extractor), so each request gets what it asks
for. An onnxruntime session sizes its thread pool when it is created and cannot change it
per run, so the session is created with the capped count of the request that loads it and
is then shared by every request whatever it asks, rather than holding one copy of the model
per thread count; ``ImageModel.threads`` says what it runs with.
"""

from __future__ import annotations

import os


class EngineOutOfMemory(RuntimeError):
    """The engine could not allocate what a tile needs; retry with a smaller tile."""


def machine_cores() -> int:
    return max(1, os.cpu_count() or 1)


def cap_threads(asked: int | None) -> int:
    """The threads an engine runs with: ``asked`` (all cores when None), never more than
    the machine's cores and never fewer than one."""
    cores = machine_cores()
    return cores if asked is None else max(1, min(int(asked), cores))


def default_threads() -> int:
    """All cores: the machines retouch targets run one job at a time (``cap_threads(None)``)."""
    return machine_cores()
