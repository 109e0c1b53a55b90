"""retouch: AI image editing with one API over local models and cloud services.

    import retouch
    result = retouch.erase("photo.jpg", "mask.png")
    result.save("photo-clean.jpg")

The module-level helpers (erase, inpaint, outpaint, upscale, resize, remove_background,
subject_mask) are the methods of a
default ``Toolkit``, created on first use. Importing retouch loads no model runtime.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from retouch._version import __version__

if TYPE_CHECKING:
    from retouch.api import Toolkit
    from retouch.results import ImageResult

    _default = Toolkit()
    erase = _default.erase
    inpaint = _default.inpaint
    outpaint = _default.outpaint
    upscale = _default.upscale
    resize = _default.resize
    remove_background = _default.remove_background
    subject_mask = _default.subject_mask
    stylize = _default.stylize

__all__ = [
    "ImageResult",
    "Toolkit",
    "__version__",
    "default_toolkit",
    "erase",
    "inpaint",
    "outpaint",
    "remove_background",
    "resize",
    "stylize",
    "subject_mask",
    "upscale",
]

_HELPERS = {
    "erase",
    "inpaint",
    "outpaint",
    "upscale",
    "resize",
    "remove_background",
    "stylize",
    "subject_mask",
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
    if name == "Toolkit":
        from retouch.api import Toolkit

        return Toolkit
    if name == "ImageResult":
        from retouch.types import ImageResult

        return ImageResult
    raise AttributeError(f"module 'retouch' has no attribute {name!r}")
