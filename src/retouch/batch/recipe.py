"""Recipes: an ordered list of steps, each an operation and its fields as the declaration
names them, read from YAML or JSON and checked in full before any image runs.

```yaml
name: product photos              # optional
output: "{stem}-{step}.{ext}"     # optional: output names (the default shown)
on_check_failure: fail            # optional: fail (default) or warn
steps:
  - operation: remove-background
  - operation: upscale
    scale: 2
    provider: realesrgan          # provider and model are fields like any other
  - operation: resize
    max_size: 1600
    format: webp                  # the batch layer's keys: format, quality, save, name,
    quality: 85                   # checks, on_check_failure
```

A step's other keys are the operation's fields, spelt as the CLI flags and HTTP fields
spell them (``max_size``, ``bg_color``, ``mask``, ``grow_mask``...), and they get the very
checks and messages the CLI and HTTP give (``retouch.declaration``). A value may refer to a
manifest column: ``prompt: "${row.prompt}"`` (the whole value: the column's value as is) or
``prompt: "a photo of ${row.subject}"`` (text). A manifest column named after a field fills
that field in each step that declares it and does not set it itself (``mask``, ``prompt``,
``seed``...). Relative file paths in a recipe are relative to the recipe's folder; in a
manifest, to the manifest's folder.

Every message names the recipe, the step (number and name), the field and, for a value from
a manifest, the row.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import os
import re
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from retouch.declaration import FieldSpec, build_request, check_values, request_fields
from retouch.errors import DependencyMissing, InvalidRequest, RetouchError
from retouch.masks import MASK_PREFIXES
from retouch.picture import Picture
from retouch.types import MASK_WORDS, Operation

if TYPE_CHECKING:
    from retouch.api import Toolkit

DEFAULT_OUTPUT = "{stem}-{step}.{ext}"
OUTPUT_FORMATS = ("png", "jpg", "jpeg", "webp")
"""Formats a batch writes: the ones whose metadata can hold the record resume needs."""
OnCheckFailure = Literal["fail", "warn"]
RECIPE_KEYS = ("steps", "name", "description", "output", "on_check_failure")
STEP_KEYS = ("operation", "name", "format", "quality", "save", "checks", "on_check_failure")
"""A step's keys that belong to the batch layer; every other key is a field."""
TEMPLATE_FIELDS = ("stem", "name", "step", "index", "ext", "row")
_REFERENCE = re.compile(r"\$\{row\.([A-Za-z_][A-Za-z0-9_ .-]*?)\}")
_STEP_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_VALIDATION_SIDE = 8192
"""The size the stand-in image claims while a recipe is checked without its images (no
pixels are allocated): ceilings that scale with the image are checked again per image."""


class RecipeError(InvalidRequest):
    """A recipe (or a manifest row it reads) is not valid; the message names the step,
    the field and the row."""


@dataclass(frozen=True)
class Checks:
    """Quality checks of one step (all optional); measured by ``retouch.batch.checks``."""

    max_change_outside_mask: float | None = None
    """Largest change (8-bit levels) allowed where the mask is 0; masked steps check 0
    unless this says otherwise."""
    min_change_inside_mask: float | None = None
    """Mean change (8-bit levels) the masked area must show: "did anything change"."""
    seam: float | None = None
    """Largest seam score allowed at the mask's border: the gradient on the border over the
    gradient beside it (about 1 when the fill blends in)."""
    size: tuple[int, int] | Literal["expected"] | None = None
    """The output's (width, height), or ``expected``: what the step's fields ask for."""

    def any(self) -> bool:
        return any(getattr(self, f.name) is not None for f in dataclasses.fields(self))


@dataclass(frozen=True)
class Step:
    number: int
    """1-based position in the recipe."""
    name: str
    """Unique in the recipe; ``{step}`` in output names (default: the operation)."""
    operation: Operation
    values: Mapping[str, Any]
    """The fields as written (references to manifest columns not yet resolved)."""
    format: str | None = None
    quality: int | None = None
    save: bool = False
    """Write this step's output (the last step's always is)."""
    checks: Checks = field(default_factory=Checks)
    on_check_failure: OnCheckFailure = "fail"

    @property
    def label(self) -> str:
        return f"step {self.number} ({self.name})"


@dataclass(frozen=True)
class Recipe:
    steps: tuple[Step, ...]
    source: str
    """Where it was read from (for messages)."""
    digest: str
    """sha256 of the recipe's content and of the files it names: part of each item's key."""
    output: str = DEFAULT_OUTPUT
    name: str | None = None
    folder: Path | None = None
    """Relative file paths in the recipe are relative to this folder."""
    data: Mapping[str, Any] = field(default_factory=dict)

    def saved(self, step: Step) -> bool:
        return step.save or step.format is not None or step.number == len(self.steps)

    def references(self) -> list[str]:
        """The manifest columns the steps refer to with ``${row.NAME}``."""
        found: list[str] = []
        for step in self.steps:
            for value in step.values.values():
                for name in _REFERENCE.findall(value) if isinstance(value, str) else []:
                    if name not in found:
                        found.append(name)
        return found


# --- reading ------------------------------------------------------------------------------


def read_recipe_file(path: str | Path) -> Mapping[str, Any]:
    """The recipe's data from a .yaml/.yml or .json file."""
    target = Path(path)
    if not target.is_file():
        raise RecipeError(f"{target}: no such recipe file")
    text = target.read_text(encoding="utf-8")
    if target.suffix.lower() in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError as exc:  # pragma: no cover - pyyaml is a base dependency
            raise DependencyMissing("pyyaml", purpose="YAML recipes") from exc
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise RecipeError(f"{target}: not valid YAML: {exc}") from None
    elif target.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise RecipeError(f"{target}: not valid JSON: {exc}") from None
    else:
        raise RecipeError(f"{target}: a recipe is a .yaml, .yml or .json file")
    if not isinstance(data, Mapping):
        raise RecipeError(f"{target}: a recipe is a mapping with a 'steps' list")
    return data


def load_recipe(source: str | Path | Mapping[str, Any], toolkit: Toolkit) -> Recipe:
    """Read and check a recipe (a file, or its data): structure, operations, every literal
    field against its declaration, the provider each step would use, and files it names.
    Values that refer to manifest columns are checked per row by ``check_rows``."""
    if isinstance(source, Mapping):
        data, label, folder = source, "recipe", None
    else:
        data, label, folder = read_recipe_file(source), str(source), Path(source).parent
    unknown = sorted(set(data) - set(RECIPE_KEYS))
    if unknown:
        raise RecipeError(
            f"{label}: unknown key(s) {', '.join(unknown)}; a recipe has {', '.join(RECIPE_KEYS)}"
            + _did_you_mean(unknown[0], RECIPE_KEYS)
        )
    raw_steps = data.get("steps")
    if not isinstance(raw_steps, list) or not raw_steps:
        raise RecipeError(f"{label}: 'steps' must be a non-empty list of steps")
    on_failure = _on_check_failure(data.get("on_check_failure", "fail"), label)
    steps = _steps(raw_steps, label, toolkit, on_failure)
    output = data.get("output", DEFAULT_OUTPUT)
    if not isinstance(output, str):
        raise RecipeError(f"{label}: output must be a name template such as {DEFAULT_OUTPUT!r}")
    check_template(output, label)
    name = data.get("name")
    recipe = Recipe(
        steps=tuple(steps),
        source=label,
        digest="",
        output=output,
        name=str(name) if name is not None else None,
        folder=folder,
        data=data,
    )
    for step in recipe.steps:
        masked = "mask" in _specs(step.operation, toolkit)
        asked = [
            name
            for name in ("max_change_outside_mask", "min_change_inside_mask", "seam")
            if getattr(step.checks, name) is not None
        ]
        if asked and not masked:
            raise RecipeError(
                f"{label}: {step.label}: checks {', '.join(asked)} measure a mask, and "
                f"{step.operation} takes none"
            )
        _check_step(recipe, step, toolkit, {}, None, "")
    return dataclasses.replace(recipe, digest=_digest(recipe, toolkit))


def _steps(
    raw_steps: list[Any], label: str, toolkit: Toolkit, on_failure: OnCheckFailure
) -> list[Step]:
    steps: list[Step] = []
    seen: dict[str, int] = {}
    names: set[str] = set()
    for number, raw in enumerate(raw_steps, 1):
        where = f"{label}: step {number}"
        if not isinstance(raw, Mapping):
            raise RecipeError(f"{where}: a step is a mapping with an 'operation'")
        operation = raw.get("operation")
        if not isinstance(operation, str) or operation not in toolkit.operations:
            known = list(toolkit.operations)
            raise RecipeError(
                f"{where}: unknown operation {operation!r}; operations: {', '.join(known)}"
                + (_did_you_mean(operation, known) if isinstance(operation, str) else "")
            )
        seen[operation] = seen.get(operation, 0) + 1
        name = raw.get("name") or (
            operation if seen[operation] == 1 else f"{operation}-{seen[operation]}"
        )
        if not isinstance(name, str) or not _STEP_NAME.match(name):
            raise RecipeError(
                f"{where}: name must be letters, digits, '.', '_' or '-', got {name!r}"
            )
        if name in names:
            raise RecipeError(f"{where}: another step is already named {name!r}; give a name")
        names.add(name)
        where = f"{label}: step {number} ({name})"
        fmt = raw.get("format")
        if fmt is not None:
            fmt = str(fmt).lower().lstrip(".")
            if fmt not in OUTPUT_FORMATS:
                raise RecipeError(
                    f"{where}: format must be one of {', '.join(OUTPUT_FORMATS)}, got {raw['format']!r}"
                )
        quality = raw.get("quality")
        if quality is not None and (
            isinstance(quality, bool) or not isinstance(quality, int) or not 1 <= quality <= 100
        ):
            raise RecipeError(f"{where}: quality must be a whole number 1..100, got {quality!r}")
        save = raw.get("save", False)
        if not isinstance(save, bool):
            raise RecipeError(f"{where}: save must be true or false, got {save!r}")
        values = {k: v for k, v in raw.items() if k not in STEP_KEYS}
        steps.append(
            Step(
                number=number,
                name=name,
                operation=operation,  # type: ignore[arg-type]  # checked against the operations above
                values=values,
                format=fmt,
                quality=quality,
                save=save,
                checks=parse_checks(raw.get("checks"), where),
                on_check_failure=_on_check_failure(raw.get("on_check_failure", on_failure), where),
            )
        )
    return steps


def _on_check_failure(value: Any, where: str) -> OnCheckFailure:
    if value == "fail":
        return "fail"
    if value == "warn":
        return "warn"
    raise RecipeError(f"{where}: on_check_failure must be fail or warn, got {value!r}")


def parse_checks(raw: Any, where: str) -> Checks:
    if raw is None:
        return Checks()
    if not isinstance(raw, Mapping):
        raise RecipeError(f"{where}: checks must be a mapping, e.g. {{seam: 1.5}}")
    known = [f.name for f in dataclasses.fields(Checks)]
    unknown = sorted(set(raw) - set(known))
    if unknown:
        raise RecipeError(
            f"{where}: unknown check(s) {', '.join(unknown)}; checks: {', '.join(known)}"
            + _did_you_mean(unknown[0], known)
        )
    values: dict[str, Any] = {}
    for name in ("max_change_outside_mask", "min_change_inside_mask", "seam"):
        value = raw.get(name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise RecipeError(f"{where}: checks.{name} must be a number >= 0, got {value!r}")
        values[name] = float(value)
    size = raw.get("size")
    if size is not None:
        values["size"] = _check_size(size, where)
    return Checks(**values)


def _check_size(size: Any, where: str) -> tuple[int, int] | Literal["expected"]:
    if size == "expected":
        return "expected"
    if isinstance(size, str) and re.fullmatch(r"\d+x\d+", size.strip().lower()):
        width, height = size.strip().lower().split("x")
        return int(width), int(height)
    raise RecipeError(f"{where}: checks.size must be 'expected' or WIDTHxHEIGHT, got {size!r}")


def check_template(template: str, where: str) -> None:
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise RecipeError(f"{where}: output template {template!r}: {exc}") from None
    for _, name, _, _ in parsed:
        if name is None:
            continue
        root = re.split(r"[.\[]", name, maxsplit=1)[0]
        if root not in TEMPLATE_FIELDS or (root == "row" and not name.startswith("row.")):
            raise RecipeError(
                f"{where}: output template {template!r}: unknown field {{{name}}}; use "
                + ", ".join("{" + f + "}" for f in TEMPLATE_FIELDS if f != "row")
                + " or {row.COLUMN}"
            )
    if "{ext}" not in template:
        raise RecipeError(f"{where}: output template {template!r} must end in .{{ext}}")


def _did_you_mean(word: str, choices: Sequence[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


# --- values for one row ----------------------------------------------------------------------


def _refers(value: Any) -> bool:
    return isinstance(value, str) and _REFERENCE.search(value) is not None


def step_values(
    recipe: Recipe,
    step: Step,
    toolkit: Toolkit,
    row: Mapping[str, Any] | None,
    row_folder: Path | None,
    row_label: str = "",
) -> dict[str, Any]:
    """The step's flat field values for one manifest row: references resolved, columns named
    after a field filled in, relative paths made absolute. No image is read. ``row`` None:
    no row known yet, and values that refer to one are left as written."""
    specs = _specs(step.operation, toolkit)
    where = f"{recipe.source}: {step.label}{row_label}"
    values: dict[str, Any] = {}
    if row is None:
        return {
            name: raw if _refers(raw) else _absolute(specs.get(name), raw, recipe.folder)
            for name, raw in step.values.items()
        }
    for name, raw in step.values.items():
        value = _resolve(raw, row, where, name)
        values[name] = _absolute(
            specs.get(name), value, recipe.folder if raw == value else row_folder
        )
    for column, value in row.items():
        if column == "image" or column in step.values or column not in specs:
            continue
        if value is None or value == "":
            continue
        values[column] = _absolute(specs[column], value, row_folder)
    return values


def _resolve(raw: Any, row: Mapping[str, Any], where: str, field_name: str) -> Any:
    if not isinstance(raw, str) or "${" not in raw:
        return raw
    whole = _REFERENCE.fullmatch(raw.strip())
    names = _REFERENCE.findall(raw)
    missing = [n for n in names if n not in row]
    if missing:
        if not row:
            raise RecipeError(
                f"{where}: {field_name} refers to ${{row.{missing[0]}}} but the inputs are not a "
                "manifest; give a CSV or JSONL manifest with that column"
            )
        raise RecipeError(
            f"{where}: {field_name} refers to ${{row.{missing[0]}}} but the manifest has no "
            f"column {missing[0]!r}; columns: {', '.join(sorted(row))}"
        )
    if whole:
        return row[whole.group(1)]
    text = _REFERENCE.sub(lambda m: "" if row[m.group(1)] is None else str(row[m.group(1)]), raw)
    if "${" in text:
        raise RecipeError(f"{where}: {field_name}: write a reference as ${{row.COLUMN}}")
    return text


def _absolute(spec: FieldSpec | None, value: Any, folder: Path | None) -> Any:
    """File names in image and mask fields, relative to the recipe's or manifest's folder;
    a whole number in a number field as the number the CLI would read (2 -> 2.0)."""
    if spec is not None and spec.kind in ("float", "ratio") and type(value) is int:
        return float(value)
    if spec is None or spec.kind not in ("image", "mask") or not isinstance(value, str):
        return value
    if folder is None or value in MASK_WORDS or "://" in value or value.startswith("data:"):
        return value
    if value.startswith(MASK_PREFIXES):  # click:X,Y / text:PHRASE, not files
        return value
    path = Path(os.path.expanduser(value))
    return str(path if path.is_absolute() else folder / path)


def _specs(operation: Operation, toolkit: Toolkit) -> dict[str, FieldSpec]:
    cls = toolkit.operations[operation]
    specs = {s.name: s for s in request_fields(cls)}
    for spec in toolkit.option_fields(operation):
        specs.setdefault(spec.name, spec)
    return specs


# --- checking ------------------------------------------------------------------------------


def _stand_in() -> Picture:
    """An image that claims a size but holds no memory: for checks without the pixels."""
    pixels = np.broadcast_to(np.zeros((1, 1, 3), np.uint8), (_VALIDATION_SIDE, _VALIDATION_SIDE, 3))
    return Picture(pixels=pixels, name="<the step's input>")


def check_rows(
    recipe: Recipe,
    toolkit: Toolkit,
    rows: Sequence[tuple[Mapping[str, Any], Path | None, str]],
) -> None:
    """Every step for every manifest row (row, its folder, a label such as ' (list.csv
    line 4)'), before any image is read: the first problem is raised, naming row and field."""
    seen: set[tuple[Any, ...]] = set()
    for row, folder, label in rows:
        for step in recipe.steps:
            _check_step(recipe, step, toolkit, row, folder, label, seen)


def _check_step(
    recipe: Recipe,
    step: Step,
    toolkit: Toolkit,
    row: Mapping[str, Any],
    folder: Path | None,
    row_label: str,
    seen: set[tuple[Any, ...]] | None = None,
) -> None:
    """One step's values for one row, as the CLI and HTTP check them. ``seen`` is None for
    the recipe alone (no inputs known yet): values that may come from a manifest column are
    left for ``check_rows``. Files the recipe itself names must exist; files a row names are
    read (and refused, per item) when the item runs."""
    where = f"{recipe.source}: {step.label}{row_label}"
    alone = seen is None
    if alone:  # no manifest yet: a value that refers to a column is checked per row later
        values = {
            name: None if _refers(step.values.get(name)) else value
            for name, value in step_values(recipe, step, toolkit, None, None).items()
        }
    else:
        values = step_values(recipe, step, toolkit, row, folder, row_label)
    if "image" in values:
        raise RecipeError(
            f"{where}: image is the batch's input (or the previous step's output); leave it out"
        )
    specs = _specs(step.operation, toolkit)
    if alone:
        for name, value in values.items():
            spec = specs.get(name)
            if spec is not None and spec.kind in ("image", "mask"):
                _check_file(value, name, where)
    cls = toolkit.operations[step.operation]
    try:
        request = build_request(
            cls,
            {**values, "image": _stand_in()},
            load_image=lambda source, name: source if isinstance(source, Picture) else _stand_in(),
            options=toolkit.option_fields(step.operation),
        )
        check_values(request)
        n = getattr(request, "n", 1)
        if n > 1 and step.number < len(recipe.steps):
            raise InvalidRequest(
                f"n is {n}, but only the last step may make several images", param="n"
            )
        signature = (
            step.number,
            tuple(sorted(values)),
            json.dumps(values.get("provider")),
            json.dumps(values.get("options"), sort_keys=True, default=str),
        )
        if seen is not None and signature in seen:
            return
        chosen = toolkit.provider_for(step.operation, request.provider, request=request)
        toolkit.check_request(request, chosen.info.operations[step.operation], chosen.info.name)
        if seen is not None:
            seen.add(signature)
    except InvalidRequest as exc:
        text = str(exc)
        if alone and _may_come_from_a_row(exc, step, specs):
            return  # checked again for each row, with the row's values
        if "missing" in text:
            text += "; set it in the step or give a manifest with a column of that name"
        raise RecipeError(f"{where}: {text}", param=exc.param) from None
    except RetouchError as exc:
        raise RecipeError(f"{where}: {exc}") from None


def _may_come_from_a_row(exc: InvalidRequest, step: Step, specs: Mapping[str, FieldSpec]) -> bool:
    """Without a manifest: could a row's values cure this? A missing field (a column may
    give it), or a fault in a field the step leaves to a column (``${row.X}``, or unset)
    when the step refers to columns; never a fault in a value the recipe itself gives."""
    if "missing" in str(exc):
        return True
    if not any(_refers(value) for value in step.values.values()):
        return False
    name = exc.param
    if name is None or name not in step.values:
        return True
    return name in specs and _refers(step.values[name])


def _check_file(value: Any, name: str, where: str) -> None:
    if not isinstance(value, str) or value in MASK_WORDS or "://" in value:
        return
    if value.startswith(("data:", *MASK_PREFIXES)) or Path(value).is_file():
        return
    raise RecipeError(f"{where}: {name} {value}: no such file; check the path", param=name)


# --- identity ------------------------------------------------------------------------------


def file_digest(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _digest(recipe: Recipe, toolkit: Toolkit) -> str:
    """The recipe's content (as parsed, so comments and spacing do not count) and the
    content of every file its steps name."""
    digest = hashlib.sha256(json.dumps(recipe.data, sort_keys=True, default=str).encode())
    for step in recipe.steps:
        specs = _specs(step.operation, toolkit)
        for name, value in sorted(step.values.items()):
            spec = specs.get(name)
            if spec is None or spec.kind not in ("image", "mask") or not isinstance(value, str):
                continue
            path = Path(str(_absolute(spec, value, recipe.folder)))
            if "${" not in value and path.is_file():
                digest.update(f"{step.number}:{name}:{file_digest(path)}".encode())
    return digest.hexdigest()
