"""Asking whether a package is installed, safely from any thread.

``importlib.util.find_spec`` raises ValueError for a module that another thread is in the
middle of importing (OpenCV's loader leaves ``cv2.__spec__`` None while it bootstraps): a
readiness check must never fail because of that.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path


def module_available(name: str) -> bool:
    if name in sys.modules:
        return True
    try:
        return importlib.util.find_spec(name) is not None
    except (ValueError, ImportError):
        return name in sys.modules


def package_folder(name: str) -> Path | None:
    """The folder of an installed package, found without importing it."""
    module = sys.modules.get(name)
    if module is not None and getattr(module, "__file__", None):
        return Path(str(module.__file__)).parent
    try:
        spec = importlib.util.find_spec(name)
    except (ValueError, ImportError):
        return None
    if spec is None or spec.origin is None:
        return None
    return Path(spec.origin).parent
