"""A bounded cache of loaded models: least recently used out first, one load per key.

Loading a model costs seconds and hundreds of megabytes, so a process keeps a few of them,
not one per distinct request setting. ``get(key, load)`` returns the cached value or runs
``load`` once: callers that ask for a key while it is loading wait for that load instead of
starting their own, and callers of other keys are not held up by it (a load runs outside
the cache's lock). A failed load is raised to every caller that waited for it and is not
cached, so the next call tries again. An evicted model stays usable by whoever still holds
it; it is freed when the last of them lets go.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

from retouch.errors import ConfigurationError

T = TypeVar("T")

MODELS_ENV = "RETOUCH_MAX_LOADED_MODELS"
DEFAULT_MAX_MODELS = 4
"""Loaded ONNX/ncnn models per process: the three scales of the default upscaler family
plus a segmenter, or the two style networks and a few others, without reloading."""


def capacity_from_env(name: str, default: int) -> int:
    """A positive count from the environment variable ``name``, else ``default``."""
    text = os.environ.get(name, "").strip()
    if not text:
        return default
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise ConfigurationError(f"{name} must be a whole number >= 1, got {text!r}")
    return value


class _Pending:
    def __init__(self) -> None:
        self.done = threading.Event()
        self.value: object = None
        self.error: BaseException | None = None


class ModelCache(Generic[T]):
    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ConfigurationError(f"a model cache holds at least one model, not {capacity}")
        self.capacity = capacity
        self._entries: OrderedDict[Hashable, T] = OrderedDict()
        self._loading: dict[Hashable, _Pending] = {}
        self._lock = threading.Lock()
        self.loads = 0
        """Loads started since creation (for tests and figures)."""

    def get(self, key: Hashable, load: Callable[[], T]) -> T:
        with self._lock:
            if key in self._entries:
                self._entries.move_to_end(key)
                return self._entries[key]
            pending = self._loading.get(key)
            owner = pending is None
            if pending is None:
                pending = self._loading[key] = _Pending()
                self.loads += 1
        if not owner:
            pending.done.wait()
            if pending.error is not None:
                raise pending.error
            return pending.value  # type: ignore[return-value]
        try:
            value = load()
        except BaseException as exc:
            with self._lock:
                del self._loading[key]
            pending.error = exc
            pending.done.set()
            raise
        with self._lock:
            self._entries[key] = value
            while len(self._entries) > self.capacity:
                self._entries.popitem(last=False)
            del self._loading[key]
        pending.value = value
        pending.done.set()
        return value

    def keys(self) -> list[Hashable]:
        """Cached keys, least recently used first."""
        with self._lock:
            return list(self._entries)

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


_shared: ModelCache[object] | None = None
_shared_lock = threading.Lock()


def shared_models() -> ModelCache[object]:
    """The process's cache of ONNX and ncnn models, sized by ``RETOUCH_MAX_LOADED_MODELS``
    (default 4) when first used."""
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = ModelCache(capacity_from_env(MODELS_ENV, DEFAULT_MAX_MODELS))
        return _shared
