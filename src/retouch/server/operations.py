"""The operations the service runs, each with its exact fields; shared by the native routes,
the jobs API and the OpenAI-compatible routes. A field not listed is a 400, never ignored."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from retouch import masks as mask_ops
from retouch.api import Toolkit
from retouch.errors import InvalidRequest
from retouch.results import ImageResult, OutputImage
from retouch.types import ProgressCallback

Fields = dict[str, Any]
Images = dict[str, bytes | str]
"""Image fields: uploaded bytes, or (mask fields only) the words 'subject' / 'background'."""


def to_int(name: str, value: Any) -> int:
    if isinstance(value, bool):
        raise InvalidRequest(f"{name} must be a whole number, got {value!r}")
    try:
        return int(value)
    except (TypeError, ValueError):
        raise InvalidRequest(f"{name} must be a whole number, got {value!r}") from None


def _float(name: str, value: Any) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise InvalidRequest(f"{name} must be a number, got {value!r}") from None
    if number != number or number in (float("inf"), float("-inf")):
        raise InvalidRequest(f"{name} must be a finite number, got {value!r}")
    return number


def _bool(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off", ""):
        return False
    raise InvalidRequest(f"{name} must be true or false, got {value!r}")


def _str(name: str, value: Any) -> str:
    if not isinstance(value, str):
        raise InvalidRequest(f"{name} must be text, got {type(value).__name__}")
    if len(value) > 32000:
        raise InvalidRequest(f"{name} is longer than 32000 characters")
    return value


CONVERT: dict[str, Callable[[str, Any], Any]] = {
    "int": to_int,
    "float": _float,
    "bool": _bool,
    "str": _str,
}


@dataclass(frozen=True)
class Operation:
    name: str
    images: tuple[str, ...]
    """Required image fields."""
    optional_images: tuple[str, ...]
    fields: Mapping[str, str]
    """name -> int | float | bool | str"""
    required: tuple[str, ...]
    call: Callable[[Toolkit, Fields, Images, ProgressCallback], ImageResult]
    summary: str

    def parse(self, raw: Mapping[str, Any]) -> Fields:
        unknown = sorted(set(raw) - set(self.fields))
        if unknown:
            raise InvalidRequest(
                f"{self.name}: unknown field(s) {', '.join(unknown)}; known: {', '.join(sorted(self.fields)) or 'none'}"
            )
        missing = [f for f in self.required if f not in raw or raw[f] in (None, "")]
        if missing:
            raise InvalidRequest(f"{self.name}: missing field(s) {', '.join(missing)}")
        return {
            k: CONVERT[self.fields[k]](k, v) for k, v in raw.items() if v is not None and v != ""
        }


def _only(fields: Fields, *names: str) -> dict[str, Any]:
    return {k: fields[k] for k in names if k in fields}


def _options(fields: Fields, *names: str) -> dict[str, Any] | None:
    chosen = _only(fields, *names)
    return chosen or None


def _mask_source(images: Images, name: str = "mask") -> bytes | str:
    return images[name]


def _erase(tk: Toolkit, f: Fields, im: Images, progress: ProgressCallback) -> ImageResult:
    return tk.erase(
        im["image"],
        _mask_source(im),
        progress=progress,
        options=_options(f, "method"),
        **_only(
            f,
            "provider",
            "seed",
            "mask_from",
            "invert_mask",
            "resize_mask",
            "grow_mask",
            "feather",
            "crop_margin",
        ),
    )


def _inpaint(tk: Toolkit, f: Fields, im: Images, progress: ProgressCallback) -> ImageResult:
    return tk.inpaint(
        im["image"],
        _mask_source(im),
        f["prompt"],
        progress=progress,
        **_only(
            f,
            "provider",
            "negative_prompt",
            "seed",
            "n",
            "strength",
            "steps",
            "guidance",
            "mask_from",
            "invert_mask",
            "resize_mask",
            "grow_mask",
            "feather",
        ),
    )


def _outpaint(tk: Toolkit, f: Fields, im: Images, progress: ProgressCallback) -> ImageResult:
    return tk.outpaint(
        im["image"],
        progress=progress,
        **_only(
            f,
            "left",
            "right",
            "top",
            "bottom",
            "width",
            "height",
            "aspect",
            "prompt",
            "provider",
            "seed",
            "feather",
        ),
    )


def _upscale(tk: Toolkit, f: Fields, im: Images, progress: ProgressCallback) -> ImageResult:
    return tk.upscale(
        im["image"],
        progress=progress,
        options=_options(f, "tile", "threads"),
        **_only(f, "scale", "width", "height", "model", "provider"),
    )


def _resize(tk: Toolkit, f: Fields, im: Images, progress: ProgressCallback) -> ImageResult:
    return tk.resize(im["image"], progress=progress, **_only(f, "max_size", "width", "height"))


def _remove_background(
    tk: Toolkit, f: Fields, im: Images, progress: ProgressCallback
) -> ImageResult:
    return tk.remove_background(
        im["image"],
        bg_image=im.get("bg_image"),
        progress=progress,
        options=_options(
            f, "matting", "largest_object", "fill_holes", "threshold", "soften", "decontaminate"
        ),
        **_only(f, "only_mask", "bg_color", "bg_blur", "model", "provider"),
    )


def _stylize(tk: Toolkit, f: Fields, im: Images, progress: ProgressCallback) -> ImageResult:
    return tk.stylize(
        im["image"],
        style_image=im.get("style_image"),
        progress=progress,
        options=_options(f, "preserve_color"),
        **_only(f, "style", "strength", "provider"),
    )


def _restore_faces(tk: Toolkit, f: Fields, im: Images, progress: ProgressCallback) -> ImageResult:
    return tk.restore_faces(
        im["image"], progress=progress, **_only(f, "fidelity", "model", "provider")
    )


def _edit(tk: Toolkit, f: Fields, im: Images, progress: ProgressCallback) -> ImageResult:
    return tk.edit(
        im["image"],
        f["prompt"],
        progress=progress,
        **_only(f, "strength", "negative_prompt", "seed", "n", "provider"),
    )


def _variations(tk: Toolkit, f: Fields, im: Images, progress: ProgressCallback) -> ImageResult:
    return tk.variations(
        im["image"], progress=progress, **_only(f, "n", "strength", "prompt", "seed", "provider")
    )


def _mask(kind: str) -> Callable[[Toolkit, Fields, Images, ProgressCallback], ImageResult]:
    def make(tk: Toolkit, f: Fields, im: Images, progress: ProgressCallback) -> ImageResult:
        picture = tk.load(im["image"])
        if kind in ("subject", "background"):
            mask = tk.subject_mask(picture, kind, provider=f.get("provider"), progress=progress)
        else:
            box = f.get("box")
            if box is None:
                raise InvalidRequest(f"masks/{kind} needs box=left,top,right,bottom")
            try:
                left, top, right, bottom = (int(v) for v in str(box).split(","))
            except ValueError:
                raise InvalidRequest(
                    f"box must be four whole numbers left,top,right,bottom, got {box!r}"
                ) from None
            draw = mask_ops.rectangle if kind == "rect" else mask_ops.ellipse
            mask = draw(picture.size, (left, top, right, bottom))
        import numpy as np

        return ImageResult(
            images=[OutputImage(pixels=np.dstack([mask] * 3), source_mode="L")], provider=kind
        )

    return make


MASK_FIELDS = {
    "mask_from": "str",
    "invert_mask": "bool",
    "resize_mask": "bool",
    "grow_mask": "int",
    "feather": "int",
}

OPERATIONS: dict[str, Operation] = {
    op.name: op
    for op in (
        Operation(
            "erase",
            ("image", "mask"),
            (),
            {
                "provider": "str",
                "seed": "int",
                "method": "str",
                "crop_margin": "int",
                **MASK_FIELDS,
            },
            (),
            _erase,
            "Remove what the mask covers (white = remove) and fill it; pixels outside stay exact.",
        ),
        Operation(
            "inpaint",
            ("image", "mask"),
            (),
            {
                "prompt": "str",
                "negative_prompt": "str",
                "provider": "str",
                "seed": "int",
                "n": "int",
                "strength": "float",
                "steps": "int",
                "guidance": "float",
                **MASK_FIELDS,
            },
            ("prompt",),
            _inpaint,
            "Repaint the masked area following a prompt.",
        ),
        Operation(
            "outpaint",
            ("image",),
            (),
            {
                "left": "int",
                "right": "int",
                "top": "int",
                "bottom": "int",
                "width": "int",
                "height": "int",
                "aspect": "float",
                "prompt": "str",
                "provider": "str",
                "seed": "int",
                "feather": "int",
            },
            (),
            _outpaint,
            "Extend the canvas and fill the new area.",
        ),
        Operation(
            "upscale",
            ("image",),
            (),
            {
                "scale": "float",
                "width": "int",
                "height": "int",
                "model": "str",
                "provider": "str",
                "tile": "int",
                "threads": "int",
            },
            (),
            _upscale,
            "Enlarge (Real-ESRGAN by default); alpha and 16 bit kept.",
        ),
        Operation(
            "resize",
            ("image",),
            (),
            {"max_size": "int", "width": "int", "height": "int"},
            (),
            _resize,
            "Lanczos resize.",
        ),
        Operation(
            "remove-background",
            ("image",),
            ("bg_image",),
            {
                "only_mask": "bool",
                "bg_color": "str",
                "bg_blur": "float",
                "model": "str",
                "provider": "str",
                "matting": "bool",
                "largest_object": "bool",
                "fill_holes": "bool",
                "threshold": "int",
                "soften": "int",
                "decontaminate": "bool",
            },
            (),
            _remove_background,
            "Cut out the subject, its mask, or a new background.",
        ),
        Operation(
            "stylize",
            ("image",),
            ("style_image",),
            {"style": "str", "strength": "float", "provider": "str", "preserve_color": "bool"},
            (),
            _stylize,
            "Restyle: built-in style or a style image.",
        ),
        Operation(
            "restore-faces",
            ("image",),
            (),
            {"fidelity": "float", "model": "str", "provider": "str"},
            (),
            _restore_faces,
            "Restore faces (needs a face-restoration provider).",
        ),
        Operation(
            "edit",
            ("image",),
            (),
            {
                "prompt": "str",
                "strength": "float",
                "negative_prompt": "str",
                "seed": "int",
                "n": "int",
                "provider": "str",
            },
            ("prompt",),
            _edit,
            "Image-to-image edit by prompt (needs a diffusion or remote provider).",
        ),
        Operation(
            "variations",
            ("image",),
            (),
            {"n": "int", "strength": "float", "prompt": "str", "seed": "int", "provider": "str"},
            (),
            _variations,
            "Variations of an image (needs a diffusion or remote provider).",
        ),
        Operation(
            "masks/subject",
            ("image",),
            (),
            {"provider": "str"},
            (),
            _mask("subject"),
            "Mask of the main subject.",
        ),
        Operation(
            "masks/background",
            ("image",),
            (),
            {"provider": "str"},
            (),
            _mask("background"),
            "Mask of the background.",
        ),
        Operation(
            "masks/rect",
            ("image",),
            (),
            {"box": "str"},
            ("box",),
            _mask("rect"),
            "Rectangle mask the size of the image.",
        ),
        Operation(
            "masks/ellipse",
            ("image",),
            (),
            {"box": "str"},
            ("box",),
            _mask("ellipse"),
            "Ellipse mask inside a box.",
        ),
    )
}
