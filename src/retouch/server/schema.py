"""HTTP request models generated from the declaration (``retouch.types``).

For each operation: a pydantic model of its form/JSON fields (every declared field and the
provider options offered flat, unknown fields refused) that parses what a client sends, and
the OpenAPI request body (multipart with image uploads, or JSON with base64 images) made
from the same field list. Nothing here is written per operation: a field added to a request
dataclass appears in both with no other edit.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model

from retouch.declaration import FieldSpec, expects, request_fields
from retouch.errors import InvalidRequest
from retouch.types import Param

IMAGE_KINDS = ("image", "mask")
RESPONSE_FORMAT = FieldSpec(
    "response_format",
    ("response_format",),
    "text",
    None,
    required=False,
    nullable=True,
    param=Param(
        help="png (default), jpeg, webp, or json (metadata with base64 images)",
        choices=("png", "jpeg", "webp", "json"),
    ),
)

_PY_TYPES: dict[str, Any] = {
    "int": int,
    "float": float,
    "bool": bool,
    "text": str,
    "ratio": float | str,
    "bytes": int | str,
    "box": str | list[int],
    "points": str | list[list[int]],
    "options": dict[str, Any] | str,
}
_JSON_TYPES: dict[str, dict[str, Any]] = {
    "int": {"type": "integer"},
    "float": {"type": "number"},
    "bool": {"type": "boolean"},
    "text": {"type": "string"},
    "ratio": {
        "anyOf": [{"type": "number"}, {"type": "string", "pattern": r"^\d+(\.\d+)?:\d+(\.\d+)?$"}]
    },
    "bytes": {"anyOf": [{"type": "integer"}, {"type": "string"}]},
    "box": {"type": "string", "description": "LEFT,TOP,RIGHT,BOTTOM"},
    "points": {"type": "string", "description": "X,Y X,Y ..."},
    "options": {"type": "object", "additionalProperties": True},
}


def form_fields(request_type: type[Any], options: Iterable[FieldSpec] = ()) -> list[FieldSpec]:
    """Every field a client may send for the operation, images included."""
    own = request_fields(request_type)
    names = {s.name for s in own}
    return [*own, *(s for s in options if s.name not in names)]


def property_schema(spec: FieldSpec, *, binary: bool) -> dict[str, Any]:
    """One field's JSON schema, ranges and help included."""
    p = spec.param
    if spec.kind in IMAGE_KINDS:
        if binary:
            schema: dict[str, Any] = {"type": "string", "format": "binary"}
        else:
            schema = {"type": "string", "description": "base64 or a data URI"}
        if spec.kind == "mask":
            schema = {"anyOf": [schema, {"type": "string", "enum": ["subject", "background"]}]}
        schema["description"] = p.help
        return schema
    schema = dict(_JSON_TYPES[spec.kind])
    if spec.kind == "options" and binary:
        schema = {"type": "string", "description": "a JSON object of provider options"}
    if p.low is not None:
        schema["exclusiveMinimum" if p.low_open else "minimum"] = p.low
    if p.high is not None:
        schema["maximum"] = p.high
    if p.choices and p.separator is not None:
        one = "|".join(re.escape(c) for c in p.choices)
        sep = re.escape(p.separator)
        schema["pattern"] = f"^\\s*({one})\\s*({sep}\\s*({one})\\s*)*$"
    elif p.choices:
        schema["enum"] = list(p.choices)
    if spec.kind == "text":
        schema["maxLength"] = p.max_length
    if spec.has_default and spec.default not in (None, ()) and spec.kind != "options":
        schema["default"] = spec.default
    schema["description"] = p.help + (f" [{', '.join(spec.providers)}]" if spec.providers else "")
    return schema


def request_body(fields: list[FieldSpec], extra: Iterable[FieldSpec] = ()) -> dict[str, Any]:
    """The OpenAPI request body: multipart (image uploads) or JSON (base64 images)."""
    every = [*fields, *extra]
    required = [s.name for s in every if s.required]

    def one(spec: FieldSpec, binary: bool) -> dict[str, Any]:
        described = property_schema(spec, binary=binary)
        if binary or spec.required:
            return described
        return {"anyOf": [described, {"type": "null"}], "description": described["description"]}

    def schema(binary: bool) -> dict[str, Any]:  # in JSON, null means "not given"
        return {
            "type": "object",
            "properties": {s.name: one(s, binary) for s in every},
            "required": required,
            "additionalProperties": False,
        }

    return {
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": {"schema": schema(True)},
                "application/json": {"schema": schema(False)},
            },
        }
    }


def fields_model(name: str, fields: list[FieldSpec]) -> type[BaseModel]:
    """The pydantic model that parses the non-image fields a client sent (text from a form
    or typed JSON); a field it does not know is refused."""
    definitions: dict[str, Any] = {
        s.name: (_PY_TYPES[s.kind] | None, Field(default=None, description=s.param.help))
        for s in fields
        if s.kind not in IMAGE_KINDS
    }
    model: type[BaseModel] = create_model(
        f"{name.title().replace('-', '').replace('/', '')}Fields",
        __config__=ConfigDict(extra="forbid", allow_inf_nan=True),
        **definitions,
    )
    return model


def parse_fields(
    operation: str, model: type[BaseModel], fields: list[FieldSpec], raw: Mapping[str, Any]
) -> dict[str, Any]:
    """The client's fields through ``model``; the first problem as an InvalidRequest that
    names the field, worded as the CLI and the library word it."""
    try:
        parsed = model.model_validate(dict(raw))
    except ValidationError as exc:
        first = exc.errors()[0]
        where = str(first["loc"][0]) if first.get("loc") else None
        if first.get("type") == "extra_forbidden":
            unknown = sorted(set(raw) - set(model.model_fields))
            known = ", ".join(sorted(s.name for s in fields))
            raise InvalidRequest(
                f"{operation}: unknown field(s) {', '.join(unknown)}; known: {known}",
                param=unknown[0] if unknown else where,
            ) from None
        spec = next((s for s in fields if s.name == where), None)
        what = expects(spec) if spec is not None else "is not valid"
        raise InvalidRequest(
            f"{where} {what}, got {first.get('input')!r}"[:500], param=where
        ) from None
    return {k: v for k, v in parsed.model_dump().items() if v is not None}
