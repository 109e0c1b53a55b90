"""retouch: AI image editing with one API over local models and cloud services.

    import retouch
    result = retouch.erase("photo.jpg", "mask.png")
    result.save("photo-clean.jpg")

The module-level helpers (erase, inpaint, outpaint, edit, variations, upscale, resize,
adjust, remove_background, restore_faces, stylize, subject_mask, run, operations) are the methods of
a default ``Toolkit``, created on first use. Importing retouch loads no model runtime.
``retouch.amap`` / ``retouch.map`` run one operation over many items concurrently and
``retouch.AsyncToolkit`` has every operation as a coroutine (``retouch.aio``); recipes and
batches are in ``retouch.batch``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from retouch._version import __version__

if TYPE_CHECKING:
    from retouch.aio import AsyncToolkit, amap, map
    from retouch.api import Toolkit
    from retouch.results import ImageResult

    _default = Toolkit()
    erase = _default.erase
    inpaint = _default.inpaint
    outpaint = _default.outpaint
    upscale = _default.upscale
    resize = _default.resize
    adjust = _default.adjust
    remove_background = _default.remove_background
    subject_mask = _default.subject_mask
    stylize = _default.stylize
    edit = _default.edit
    variations = _default.variations
    restore_faces = _default.restore_faces
    run = _default.run
    operations = _default.describe_operations

__all__ = [
    "AsyncToolkit",
    "ImageResult",
    "Toolkit",
    "__version__",
    "adjust",
    "amap",
    "default_toolkit",
    "edit",
    "erase",
    "inpaint",
    "map",
    "operations",
    "outpaint",
    "remove_background",
    "resize",
    "restore_faces",
    "run",
    "stylize",
    "subject_mask",
    "upscale",
    "variations",
]

_HELPERS = {
    "adjust",
    "erase",
    "inpaint",
    "outpaint",
    "edit",
    "variations",
    "upscale",
    "resize",
    "remove_background",
    "restore_faces",
    "stylize",
    "subject_mask",
    "run",
}
_toolkit: Toolkit | None = None


def default_toolkit() -> Toolkit:
    """The shared Toolkit behind the module-level helpers."""
    global _toolkit
    if _toolkit is None:
        from retouch.api import Toolkit

        _toolkit = Toolkit()
    return _toolkit


def __getattr__(name: str) -> Any:
    if name in _HELPERS:
        return getattr(default_toolkit(), name)
    if name == "operations":
        return default_toolkit().describe_operations
    if name == "Toolkit":
        from retouch.api import Toolkit

        return Toolkit
    if name in ("AsyncToolkit", "amap", "map"):
        from retouch import aio

        return getattr(aio, name)
    if name == "ImageResult":
        from retouch.types import ImageResult

        return ImageResult
    raise AttributeError(f"module 'retouch' has no attribute {name!r}")
