"""Reading the declaration: the fields of each operation, checked and described in one place.

``retouch.types`` declares each operation as a request dataclass whose fields carry
``param(...)`` metadata. This module walks those classes for every front end:

- ``request_fields(cls)``: the flat list of a request's fields (a ``MaskInput`` field is
  spread into ``mask``, ``mask_from``, ``invert_mask``, ... as the CLI and HTTP name them);
- ``option_fields(operation, providers)``: provider options that carry ``param(...)`` too
  (``--matting``, ``--method``...), offered flat beside the request's own fields;
- ``check_values(request)``: ranges, choices, finiteness, lengths and image-scaled ceilings,
  with one message per problem that names the field (the same for Python, CLI and HTTP);
- ``check_support(request, spec, provider)``: a field the provider cannot honour is refused,
  computed from the fields (``needs_support``), never from a hand-kept list;
- ``coerce(field, value)``: text from a command line or a form to the field's type;
- ``build_request(cls, values, ...)``: a request from flat values (CLI, HTTP, recipes);
- ``describe(...)``: JSON for ``GET /v1/operations`` and ``retouch.operations()``.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from retouch.errors import ConfigurationError, InvalidRequest, UnsupportedOperation
from retouch.picture import Picture
from retouch.types import (
    REQUEST_TYPES,
    Kind,
    MaskInput,
    Operation,
    OperationSpec,
    Param,
    Provider,
    Request,
)

MISSING: Any = dataclasses.MISSING


@dataclass(frozen=True)
class FieldSpec:
    """One field as the front ends see it."""

    name: str
    """Flat name: HTTP field, recipe key, metadata key."""
    path: tuple[str, ...]
    """Where it lives: ``("seed",)``, ``("mask", "grow")``, ``("options", "matting")``."""
    kind: Kind
    default: Any
    required: bool
    nullable: bool
    param: Param
    providers: tuple[str, ...] = ()
    """For provider options: the providers whose options declare it."""

    @property
    def flag(self) -> str:
        return self.param.flag or "--" + self.name.replace("_", "-")

    @property
    def has_default(self) -> bool:
        return self.default is not MISSING

    @property
    def is_option(self) -> bool:
        return self.path[0] == "options" and len(self.path) == 2

    def describe(self) -> dict[str, Any]:
        """JSON-ready description (``GET /v1/operations``)."""
        p = self.param
        out: dict[str, Any] = {
            "name": self.name,
            "type": self.kind,
            "required": self.required,
            "help": p.help,
        }
        if self.has_default:
            out["default"] = _jsonable(self.default)
        if p.low is not None:
            out["exclusive_minimum" if p.low_open else "minimum"] = p.low
        if p.high is not None:
            out["maximum"] = p.high
        if p.choices:
            out["choices"] = list(p.choices)
        if p.separator is not None:
            out["separator"] = p.separator
        if p.max_by_image:
            out["maximum_by_image"] = p.max_by_image
        if self.kind == "text":
            out["max_length"] = p.max_length
        if p.needs_support:
            out["needs_support"] = True
        if self.nullable and not self.required:
            out["nullable"] = True  # may be left empty ("none" on the command line)
        if p.only_for:
            out["only_for"] = list(p.only_for)  # used with these values of the kind field
        if p.required_for:
            out["required_for"] = list(p.required_for)
        if self.providers:
            out["providers"] = list(self.providers)
        out["cli"] = [self.flag, *p.aliases] if p.cli else []
        return out


def _jsonable(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_jsonable(v) for v in value]
    return value


# --- kinds from annotations -------------------------------------------------------------

_TEXT_KINDS: dict[str, Kind] = {
    "int": "int",
    "float": "float",
    "bool": "bool",
    "str": "text",
    "Picture": "image",
    "MaskInput": "mask",
    "Options": "options",
    "MaskFrom": "text",
    "tuple[int, int, int, int]": "box",
    "tuple[tuple[int, int], ...]": "points",
}
_TYPE_KINDS: dict[Any, Kind] = {
    int: "int",
    float: "float",
    bool: "bool",
    str: "text",
    Picture: "image",
    MaskInput: "mask",
}


def _kind_of(annotation: Any, param: Param, where: str) -> tuple[Kind, bool]:
    """The field's kind and whether None is allowed."""
    nullable = False
    if isinstance(annotation, str):
        parts = [p.strip() for p in annotation.split("|")]
        nullable = "None" in parts
        parts = [p for p in parts if p != "None"]
        base = " | ".join(parts)
        kind = param.kind or _TEXT_KINDS.get(base)
    else:
        args = typing.get_args(annotation)
        origin = typing.get_origin(annotation)
        if origin in (typing.Union, types.UnionType) and type(None) in args:
            nullable = True
            rest = [a for a in args if a is not type(None)]
            annotation = rest[0] if len(rest) == 1 else annotation
        kind = param.kind or _TYPE_KINDS.get(annotation)
    if kind is None:
        raise ConfigurationError(f"{where}: cannot tell the field's kind from {annotation!r}")
    return kind, nullable or kind == "options"


def _fields(cls: type[Any]) -> list[tuple[dataclasses.Field[Any], Param]]:
    out = []
    for f in dataclasses.fields(cls):
        found = f.metadata.get("retouch")
        if isinstance(found, Param):
            out.append((f, found))
    return out


def _default(f: dataclasses.Field[Any]) -> Any:
    return f.default  # request and option fields have plain defaults (no factories)


_CACHE: dict[type[Any], list[FieldSpec]] = {}


def request_fields(cls: type[Any]) -> list[FieldSpec]:
    """Every field of a request class, a ``MaskInput`` spread into its flat fields."""
    if cls in _CACHE:
        return _CACHE[cls]
    specs: list[FieldSpec] = []
    for f, p in _fields(cls):
        kind, nullable = _kind_of(f.type, p, f"{cls.__name__}.{f.name}")
        default = _default(f)
        if kind == "mask":
            for mf, mp in _fields(MaskInput):
                mkind, mnullable = _kind_of(mf.type, mp, f"MaskInput.{mf.name}")
                if mf.name == "source":  # the request's own field says what this mask is for
                    specs.append(
                        FieldSpec(
                            mp.name or "mask",
                            (f.name, "source"),
                            "mask",
                            None if nullable else MISSING,
                            required=not nullable,
                            nullable=nullable,
                            param=dataclasses.replace(
                                mp, help=p.help, needs_support=p.needs_support
                            ),
                        )
                    )
                    continue
                specs.append(
                    FieldSpec(
                        mp.name or mf.name,
                        (f.name, mf.name),
                        mkind,
                        _default(mf),
                        required=False,
                        nullable=mnullable,  # crop_margin None: the whole image
                        param=mp,
                    )
                )
            continue
        specs.append(
            FieldSpec(
                p.name or f.name,
                (f.name,),
                kind,
                default,
                required=default is MISSING,
                nullable=nullable,
                param=p,
            )
        )
    names = [s.name for s in specs]
    if len(names) != len(set(names)):
        raise ConfigurationError(f"{cls.__name__}: two fields share a name: {names}")
    _CACHE[cls] = specs
    return specs


def option_fields(operation: Operation, providers: Iterable[Provider]) -> list[FieldSpec]:
    """Provider options with ``param(...)`` metadata, offered flat for ``operation``.

    The same name in several providers' options is one field (its kind must agree)."""
    merged: dict[str, FieldSpec] = {}
    for provider in providers:
        spec = provider.info.operations.get(operation)
        if spec is None or spec.options is None or not dataclasses.is_dataclass(spec.options):
            continue
        for f, p in _fields(spec.options):
            kind, nullable = _kind_of(f.type, p, f"{spec.options.__name__}.{f.name}")
            name = p.name or f.name
            found = merged.get(name)
            if found is not None:
                if found.kind != kind:
                    raise ConfigurationError(
                        f"option {name!r} of {operation} is a {found.kind} for "
                        f"{', '.join(found.providers)} but a {kind} for {provider.info.name}"
                    )
                merged[name] = dataclasses.replace(
                    found, providers=(*found.providers, provider.info.name)
                )
                continue
            merged[name] = FieldSpec(
                name,
                ("options", f.name),
                kind,
                _default(f),
                required=False,
                nullable=nullable,
                param=p,
                providers=(provider.info.name,),
            )
    return list(merged.values())


# --- checking values ----------------------------------------------------------------------


def _get(request: Any, path: tuple[str, ...]) -> Any:
    value = request
    for part in path:
        if value is None:
            return None
        value = getattr(value, part)
    return value


def _range_text(p: Param, num: Callable[[float], str] | None = None) -> str:
    num = num or _num
    if p.low is not None and p.high is not None:
        low = f"above {num(p.low)}" if p.low_open else num(p.low)
        return f"{low}..{num(p.high)}" if not p.low_open else f"{low} and at most {num(p.high)}"
    if p.low is not None:
        return f"above {num(p.low)}" if p.low_open else f"at least {num(p.low)}"
    return f"at most {num(p.high or 0)}"


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def _size_text(value: float) -> str:
    """Bytes as a size field is written (64M, 1.5G, 512K); plain bytes below 1K."""
    for unit, scale in (("G", 2**30), ("M", 2**20), ("K", 2**10)):
        if value >= scale:
            return f"{value / scale:g}{unit}"
    return _num(value)


def check_value(spec: FieldSpec, value: Any, *, diagonal: float | None = None) -> None:
    """One field's value against its declaration; InvalidRequest naming the field."""
    name, p, kind = spec.name, spec.param, spec.kind
    if value is None:
        if spec.nullable or spec.kind in ("image", "mask"):
            return
        raise InvalidRequest(f"{name} needs a value", param=name)

    def fail(text: str) -> InvalidRequest:
        return InvalidRequest(f"{name} {text}", param=name)

    if kind in ("int", "bytes"):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise fail(f"must be a whole number, got {value!r}")
    elif kind in ("float", "ratio"):
        if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
            raise fail(f"must be a number, got {value!r}")
        if not math.isfinite(float(value)):
            raise fail(f"must be a finite number, got {value!r}")
    elif kind == "bool":
        if not isinstance(value, (bool, np.bool_)):
            raise fail(f"must be true or false, got {value!r}")
    elif kind == "text":
        if not isinstance(value, str):
            raise fail(f"must be text, got {type(value).__name__}")
        if len(value) > p.max_length:
            raise fail(f"is longer than {p.max_length} characters")
        if p.choices and p.separator is not None:
            given = [item.strip() for item in value.split(p.separator)]
            bad = [item for item in given if item not in p.choices]
            if bad or not given:
                raise fail(
                    f"takes {', '.join(p.choices)} (several joined by {p.separator!r}), "
                    f"not {', '.join(map(repr, bad)) or repr(value)}"
                )
            if len(set(given)) != len(given):
                raise fail(f"names a choice twice: {value!r}")
        elif p.choices and value not in p.choices:
            raise fail(f"must be one of {', '.join(p.choices)}, not {value!r}")
    if kind in ("int", "float", "ratio", "bytes"):
        number = float(value)
        low_bad = p.low is not None and (number <= p.low if p.low_open else number < p.low)
        high_bad = p.high is not None and number > p.high
        if low_bad or high_bad:
            if kind == "bytes":  # as the user writes sizes: 64M, not 67108864
                raise fail(f"must be {_range_text(p, _size_text)}, got {_size_text(number)}")
            raise fail(f"must be {_range_text(p)}, got {value}")
        if p.max_by_image == "diagonal" and diagonal is not None and number > diagonal:
            raise fail(
                f"must be at most the image's diagonal ({int(diagonal)} px) for this image, "
                f"got {value}"
            )


def check_values(request: Request) -> None:
    """Every field of ``request`` against its declaration, before any provider is chosen."""
    image = getattr(request, "image", None)
    diagonal = math.hypot(image.width, image.height) if isinstance(image, Picture) else None
    kind = getattr(request, "kind", None)
    for spec in request_fields(type(request)):
        if len(spec.path) == 2 and getattr(request, spec.path[0]) is None:
            continue  # an optional mask that was not given
        value = _get(request, spec.path)
        p = spec.param
        if p.only_for and kind not in p.only_for:
            if _is_set(value, spec.default):
                raise InvalidRequest(
                    f"{spec.name} is not used by {request.operation} {kind}; it goes with "
                    f"{', '.join(p.only_for)}",
                    param=spec.name,
                )
            continue
        if kind in p.required_for and (value is None or value == ()):
            raise InvalidRequest(
                f"{request.operation} {kind} needs {spec.name}: {p.help}", param=spec.name
            )
        if spec.kind in ("image", "options", "box", "points"):
            if spec.required and value is None:
                raise InvalidRequest(f"{spec.name} is required", param=spec.name)
            continue
        if spec.kind == "mask":
            if spec.required and value is None:
                raise InvalidRequest(f"{spec.name} is required", param=spec.name)
            continue
        if spec.required and (value is None or value == ""):
            raise InvalidRequest(
                f"{request.operation} needs {spec.name}: {spec.param.help}", param=spec.name
            )
        check_value(spec, value, diagonal=diagonal)


def check_option_values(
    option_specs: Iterable[FieldSpec], options: Mapping[str, Any], *, diagonal: float | None
) -> None:
    """Provider options that carry ``param(...)`` get the same checks as request fields."""
    by_attr = {s.path[1]: s for s in option_specs if s.is_option}
    for key, value in options.items():
        spec = by_attr.get(key)
        if spec is not None:
            check_value(spec, value, diagonal=diagonal)


def _is_set(value: Any, default: Any) -> bool:
    if value is None or (isinstance(value, str) and value == ""):
        return False
    if isinstance(value, (np.ndarray, Picture, MaskInput)):
        return True
    if default is MISSING:
        return True
    return bool(value != default)


def takes(spec: OperationSpec, request: Request, field: str) -> bool:
    """Whether a provider with ``spec`` can take ``request``'s value of ``field``."""
    if field in spec.choices:
        return getattr(request, field, None) in spec.choices[field]
    return field in honours(spec)


def honours(spec: OperationSpec) -> frozenset[str]:
    """The fields a provider can take for an operation: its ``honours``, and ``model`` when
    its options name a model."""
    options = spec.options
    names = {f.name for f in dataclasses.fields(options)} if options is not None else set()
    return spec.honours | ({"model"} if "model" in names else set())


def unsupported_fields(request: Request, spec: OperationSpec) -> list[str]:
    """Fields set on ``request`` that a provider with ``spec`` would have to ignore, or whose
    value (a mask kind...) it does not take."""
    able = honours(spec)
    found = [
        name for name, values in spec.choices.items() if getattr(request, name, None) not in values
    ]
    for field in request_fields(type(request)):
        if not field.param.needs_support or field.name in able or field.path[0] in able:
            continue
        if _is_set(_get(request, field.path), field.default):
            found.append(field.name)
    return found


def check_support(
    request: Request, spec: OperationSpec, provider: str, others: Callable[[str], list[str]]
) -> None:
    """Refuse a field the provider cannot honour, naming providers that can (``others``)."""
    for name in unsupported_fields(request, spec):
        able = [p for p in others(name) if p != provider]
        hint = f": {', '.join(able)}" if able else " (`retouch providers`)"
        if name in spec.choices:
            value = getattr(request, name)
            raise UnsupportedOperation(
                f"{provider} does not make {request.operation} {name} {value!r} (it makes "
                f"{', '.join(sorted(spec.choices[name]))}); leave the provider out or pick "
                f"one that does{hint}",
                param=name,
            )
        where = "" if provider == request.operation else f" for {request.operation}"
        raise UnsupportedOperation(
            f"{name} is not supported by {provider}{where} ({provider} does not use {name}); "
            f"leave it out or pick a provider that does{hint}",
            param=name,
        )


# --- text in -------------------------------------------------------------------------------

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}
_UNITS = {"K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}


def coerce(spec: FieldSpec, value: Any) -> Any:
    """A value from a command line, a form or a recipe, as the field's type.

    Values already of the right type pass through (``check_value`` judges them); text is
    parsed by kind. Unparseable text is an InvalidRequest naming the field."""
    name, kind = spec.name, spec.kind
    if value is None or not isinstance(value, str):
        if kind == "box" and isinstance(value, (list, tuple)):
            return _box([str(v) for v in value], name)
        if kind == "points" and isinstance(value, (list, tuple)):
            return tuple((int(p[0]), int(p[1])) for p in value)
        return value
    text = value.strip()
    if spec.nullable and text.lower() == "none":
        return None
    try:
        if kind == "int":
            return int(text)
        if kind == "float":
            return float(text)
        if kind == "ratio":
            if ":" in text:
                w, h = text.split(":", 1)
                return float(w) / float(h)
            return float(text)
        if kind == "bytes":
            upper = text.upper().removesuffix("B").removesuffix("I")
            if upper and upper[-1] in _UNITS:
                return int(float(upper[:-1]) * _UNITS[upper[-1]])
            return int(upper)
        if kind == "bool":
            low = text.lower()
            if low in _TRUE:
                return True
            if low in _FALSE or low == "":
                return False
            raise ValueError(text)
        if kind == "box":
            return _box(text.replace(" ", "").split(","), name)
        if kind == "points":
            return _points(text, name)
    except (ValueError, ZeroDivisionError, OverflowError):
        raise InvalidRequest(f"{name} {expects(spec)}, got {value!r}", param=name) from None
    return value


def expects(spec: FieldSpec) -> str:
    """What a field takes, as an error message says it."""
    return {
        "int": "must be a whole number",
        "float": "must be a number",
        "ratio": "must be a number or W:H, e.g. 16:9",
        "bytes": "must be a size with K, M or G, e.g. 2G",
        "bool": "must be true or false",
        "box": "must be LEFT,TOP,RIGHT,BOTTOM",
        "points": "must be 'X,Y X,Y ...'",
        "text": "must be text",
        "options": "must be an object of provider options",
    }.get(spec.kind, "is not valid")


def _box(parts: list[str], name: str) -> tuple[int, int, int, int]:
    if len(parts) != 4:
        raise InvalidRequest(
            f"{name} must be LEFT,TOP,RIGHT,BOTTOM, got {','.join(parts)!r}", param=name
        )
    left, top, right, bottom = (int(float(p)) for p in parts)
    return left, top, right, bottom


def _points(text: str, name: str) -> tuple[tuple[int, int], ...]:
    points = []
    for pair in text.replace(";", " ").split():
        xy = pair.split(",")
        if len(xy) != 2:
            raise InvalidRequest(f"{name} must be 'X,Y X,Y ...', got {pair!r}", param=name)
        points.append((int(float(xy[0])), int(float(xy[1]))))
    return tuple(points)


def build_request(
    cls: type[Any],
    values: Mapping[str, Any],
    *,
    load_image: Callable[[Any, str], Picture],
    options: Iterable[FieldSpec] = (),
) -> Any:
    """A request from flat values (CLI, HTTP, recipes): text parsed by kind, images loaded
    with ``load_image(source, field)``, mask fields gathered into a ``MaskInput``, option
    fields gathered into ``options``. Unknown or missing fields: InvalidRequest naming them."""
    specs = {s.name: s for s in request_fields(cls)}
    promoted = {s.name: s for s in options if s.name not in specs}
    unknown = sorted(set(values) - set(specs) - set(promoted))
    operation = getattr(cls, "operation", cls.__name__)
    if unknown:
        known = ", ".join(sorted({*specs, *promoted}))
        raise InvalidRequest(
            f"{operation}: unknown field(s) {', '.join(unknown)}; known: {known}", param=unknown[0]
        )
    kwargs: dict[str, Any] = {}
    groups: dict[str, dict[str, Any]] = {}
    chosen_options: dict[str, Any] = {}
    for name, raw in values.items():
        if raw is None:
            continue
        if name in promoted:
            chosen_options[promoted[name].path[1]] = coerce(promoted[name], raw)
            continue
        spec = specs[name]
        if spec.kind == "image":
            try:
                value: Any = load_image(raw, name)
            except InvalidRequest as exc:
                exc.param = exc.param or name  # which image was bad
                raise
        elif spec.kind == "mask":
            value = raw
        elif spec.kind == "options":
            value = _options_value(raw, name)
            chosen_options = {**value, **chosen_options}
            continue
        else:
            value = coerce(spec, raw)
        if len(spec.path) == 2:
            groups.setdefault(spec.path[0], {})[spec.path[1]] = value
        else:
            kwargs[spec.path[0]] = value
    for group, fields in groups.items():
        if "source" not in fields:
            given = ", ".join(
                s.name for s in specs.values() if s.path[0] == group and s.path[1] in fields
            )
            raise InvalidRequest(f"{given} given without {group}", param=group)
        kwargs[group] = MaskInput(**fields)
    if chosen_options:
        kwargs["options"] = chosen_options
    missing = [s for s in specs.values() if s.required and _get_kw(kwargs, s.path) is None]
    if missing:
        images = [s.name for s in missing if s.kind in ("image", "mask")]
        others = [s.name for s in missing if s.kind not in ("image", "mask")]
        what = f"image field(s) {', '.join(images)}" if images else ""
        if others:
            what += ("; " if what else "") + f"field(s) {', '.join(others)}"
        raise InvalidRequest(f"{operation}: missing {what}", param=missing[0].name)
    return cls(**kwargs)


def check_given(fields: Iterable[FieldSpec], values: Mapping[str, Any]) -> None:
    """The non-image values a client gave, checked alone (before any image is read): a
    cheap early refusal with the same message the full check would give."""
    for spec in fields:
        value = values.get(spec.name)
        if value is None or spec.kind in ("image", "mask", "box", "points"):
            continue
        if spec.kind == "options":
            _options_value(value, spec.name)  # an object (or its JSON text), or a 400 now
            continue
        check_value(spec, coerce(spec, value))


def _get_kw(kwargs: Mapping[str, Any], path: tuple[str, ...]) -> Any:
    value = kwargs.get(path[0])
    if len(path) == 2 and isinstance(value, MaskInput):
        return getattr(value, path[1])
    return value


def _options_value(raw: Any, name: str) -> dict[str, Any]:
    if isinstance(raw, Mapping):
        return dict(raw)
    if isinstance(raw, str):
        import json

        try:
            parsed = json.loads(raw) if raw.strip() else {}
        except ValueError:
            parsed = None
        if isinstance(parsed, dict):
            return parsed
    raise InvalidRequest(
        f'{name} must be an object of provider options, e.g. {{"fast": true}}', param=name
    )


# --- describing ------------------------------------------------------------------------------


def request_parameters(request: Request) -> dict[str, Any]:
    """The request's parameters as plain data (images described, not embedded): for replay."""
    out: dict[str, Any] = {"operation": request.operation}
    for spec in request_fields(type(request)):
        value = _get(request, spec.path)
        out[spec.name] = _describe_value(value)
    return out


def _describe_value(value: Any) -> Any:
    if isinstance(value, Picture):
        return {"name": value.name, "width": value.width, "height": value.height}
    if isinstance(value, np.ndarray):
        return {"shape": list(value.shape), "selected": int((value > 0).sum())}
    if isinstance(value, (bytes, bytearray, memoryview)):
        return {"bytes": len(value)}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, (str, int, float, bool, list, tuple)) or value is None:
        return value
    return type(value).__name__


def operation_types() -> Mapping[Operation, type[Any]]:
    return REQUEST_TYPES
