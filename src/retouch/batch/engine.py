"""Running a recipe over many inputs: planning, resume, one step of one item, the local engine.

Both engines (this one, and Ray in ``retouch.batch.ray_engine``) share everything but the
scheduling: ``plan`` names every output before anything runs (collisions are refused),
``start`` hashes an input and decides whether it is already done, ``run_step`` runs one
step of one item and returns its audit line, and the driver alone writes the audit log.

Resume: every output carries, in its metadata, the item's key: a hash of the recipe (its
content and the files it names), the input's bytes, the files its row names (its mask) and
the values its steps use. An item whose outputs all exist with its key is skipped; an output
that exists without it (another recipe, another input, someone else's file) is never
replaced unless ``force``. Outputs are written atomically, so a stopped batch leaves whole
files or none; an item stopped between two saved steps is redone next time.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import signal
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, Literal

from retouch import imageio
from retouch.batch.audit import AuditLog
from retouch.batch.checks import measure
from retouch.batch.inputs import Item
from retouch.batch.recipe import Recipe, RecipeError, Step, check_rows, file_digest, step_values
from retouch.compose import parse_colour
from retouch.declaration import request_fields
from retouch.errors import CheckFailed, InvalidImage, InvalidRequest, OutputExists, RetouchError
from retouch.picture import Picture
from retouch.types import EditRequest, EraseRequest, InpaintRequest, mask_word

if TYPE_CHECKING:
    from retouch.api import Toolkit
    from retouch.results import ImageResult

Engine = Literal["local", "ray"]
Status = Literal["done", "skipped", "failed"]
_WRITABLE = ("png", "jpg", "jpeg", "webp")


@dataclass(frozen=True)
class BatchOptions:
    output: Path
    """The output folder."""
    audit: Path | None = None
    """The audit log (default: ``output/audit.jsonl``); resume does not depend on it."""
    force: bool = False
    """Redo every item, replacing outputs that exist."""
    fail_fast: bool = False
    """Stop after the first failed item (default: go on; failures are summarised)."""
    jobs: int = 1
    """Items in flight at once with the local engine (threads)."""
    quality: int | None = None
    """JPEG/WebP quality of steps that do not set theirs."""
    template: str | None = None
    """Output names (default: the recipe's ``output``, else ``{stem}-{step}.{ext}``)."""
    engine: Engine = "local"
    ray_address: str | None = None
    ray_actors: int | None = None
    """Most actors per step with Ray (default: the cluster's CPUs, at most 4)."""

    @property
    def audit_path(self) -> Path:
        return self.audit if self.audit is not None else self.output / "audit.jsonl"


@dataclass(frozen=True)
class ItemPlan:
    item: Item
    values: tuple[Mapping[str, Any], ...]
    """Each step's field values for this item (no image yet)."""
    outputs: Mapping[int, tuple[Path, ...]]
    """Step number -> the files it writes."""

    @property
    def files(self) -> list[Path]:
        return [p for paths in self.outputs.values() for p in paths]


@dataclass(frozen=True)
class BatchContext:
    """What every step needs besides the toolkit (picklable: Ray ships it to its actors)."""

    recipe: Recipe
    options: BatchOptions
    run_id: str
    engine: Engine


@dataclass
class ItemState:
    """One item on its way through the steps."""

    plan: ItemPlan
    input_sha256: str = ""
    key: str = ""
    status: Status = "done"
    picture: Picture | None = None
    lines: list[dict[str, Any]] = field(default_factory=list)
    error: tuple[str, str] | None = None
    """(kind, message) of the failure."""
    ours: frozenset[Path] = frozenset()
    """Planned outputs that exist with this item's key (from a run that was stopped)."""
    written: list[Path] = field(default_factory=list)
    warned: int = 0

    @property
    def failed(self) -> bool:
        return self.error is not None


# --- planning -------------------------------------------------------------------------------


class _Row:
    """``{row.COLUMN}`` in output names."""

    def __init__(self, row: Mapping[str, Any], where: str) -> None:
        self._row = row
        self._where = where

    def __getattr__(self, name: str) -> str:
        if name not in self._row:
            raise RecipeError(
                f"{self._where}: the output name uses {{row.{name}}} but the row has no {name!r}"
            )
        value = self._row[name]
        return "" if value is None else str(value)


def plan(
    recipe: Recipe, items: Sequence[Item], options: BatchOptions, toolkit: Toolkit
) -> list[ItemPlan]:
    """Every item's values and output files, checked before any image is read: the recipe's
    fields for every manifest row, names inside the output folder, no two alike."""
    rows = [(i.row, i.folder, f" ({i.origin})" if i.origin else "") for i in items if i.row]
    if rows:
        check_rows(recipe, toolkit, rows)
    if any(not i.row for i in items):
        check_rows(recipe, toolkit, [({}, None, "")])
    template = options.template or recipe.output
    root = options.output.resolve()
    claimed: dict[Path, str] = {}
    plans = []
    for item in items:
        values = tuple(
            step_values(
                recipe,
                step,
                toolkit,
                item.row,
                item.folder,
                f" ({item.origin})" if item.origin else "",
            )
            for step in recipe.steps
        )
        outputs: dict[int, tuple[Path, ...]] = {}
        alpha: str = _starts_with_alpha(item.image)
        for step, step_vals in zip(recipe.steps, values, strict=True):
            alpha = _alpha_after(step, step_vals, alpha)
            if not recipe.saved(step):
                continue
            where = f"{recipe.source}: {step.label}, {item.label}"
            ext = _extension(step, item, alpha, where)
            try:
                name = template.format(
                    stem=PurePosixPath(item.relative).stem,
                    name=item.relative.name,
                    step=step.name,
                    index=step.number,
                    ext=ext,
                    row=_Row(item.row, where),
                )
            except (KeyError, IndexError, ValueError, AttributeError) as exc:
                raise RecipeError(f"{where}: output name {template!r}: {exc}") from None
            target = Path(os.path.normpath(options.output / item.relative.parent / name))
            if root not in target.resolve().parents:
                raise RecipeError(
                    f"{where}: output name {name!r} leaves the output folder {options.output}"
                )
            count = _count(step_vals)
            paths = tuple(imageio.output_paths(target, count))
            for path in paths:
                other = claimed.get(path)
                if other is not None:
                    raise RecipeError(
                        f"{where}: {path} would also be written for {other}; put {{step}} in "
                        "the output name, or keep inputs with the same name in separate folders"
                    )
                claimed[path] = f"{step.label}, {item.label}"
            outputs[step.number] = paths
        plans.append(ItemPlan(item=item, values=values, outputs=outputs))
    return plans


def _count(values: Mapping[str, Any]) -> int:
    try:
        return max(1, int(values.get("n", 1)))
    except (TypeError, ValueError):
        return 1


def _starts_with_alpha(image: str) -> Literal["no", "maybe"]:
    return "no" if Path(image).suffix.lower() in (".jpg", ".jpeg") else "maybe"


def _alpha_after(step: Step, values: Mapping[str, Any], before: str) -> str:
    """Whether the step's output is transparent: yes (a cut-out), no, or maybe (the input's)."""
    if step.operation == "mask":
        return "no"
    if step.operation != "remove-background":
        return before
    if str(values.get("only_mask", "")).lower() in ("1", "true", "yes", "on"):
        return "no"
    if values.get("bg_image") is not None or values.get("bg_blur") is not None:
        return "no"
    colour = values.get("bg_color")
    if colour is not None:
        try:
            return "no" if parse_colour(str(colour))[3] == 255 else "yes"
        except InvalidRequest:
            return "maybe"
    return "yes"


def _extension(step: Step, item: Item, alpha: str, where: str) -> str:
    if step.format is not None:
        if step.format in ("jpg", "jpeg") and alpha == "yes":
            raise RecipeError(
                f"{where}: format {step.format} cannot hold the transparent cut-out; use png or webp"
            )
        return step.format
    ext = Path(item.image).suffix.lower().lstrip(".")
    if ext not in _WRITABLE:
        return "png"
    if ext in ("jpg", "jpeg") and alpha == "yes":
        return "png"
    return ext


# --- one item ---------------------------------------------------------------------------------

_DIGESTS: dict[tuple[str, int, int], str] = {}
_DIGESTS_LOCK = threading.Lock()


def _digest_of(path: str) -> str:
    """sha256 of a file, remembered while it is unchanged (a mask shared by many rows)."""
    stat = Path(path).stat()
    key = (str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns)
    with _DIGESTS_LOCK:
        if key in _DIGESTS:
            return _DIGESTS[key]
    digest = file_digest(path)
    with _DIGESTS_LOCK:
        _DIGESTS[key] = digest
    return digest


def _file_fields(toolkit: Toolkit, recipe: Recipe) -> list[set[str]]:
    """Per step: the fields that name files (images and masks)."""
    found = []
    for step in recipe.steps:
        cls = toolkit.operations[step.operation]
        found.append({s.name for s in request_fields(cls) if s.kind in ("image", "mask")})
    return found


def _local_file(value: Any) -> str | None:
    if not isinstance(value, str) or mask_word(value) is not None or "://" in value:
        return None
    return value if not value.startswith("data:") and Path(value).is_file() else None


def start(ctx: BatchContext, toolkit: Toolkit, plan_: ItemPlan) -> ItemState:
    """Hash the input and the files its row names, and decide: run, skip (done before) or
    fail (an output exists that this item did not make)."""
    state = ItemState(plan=plan_)
    item = plan_.item
    try:
        state.input_sha256 = _digest_of(item.image)
        # files (a row's mask, a background) count by their content, not their path: a
        # project moved to another folder keeps its keys
        values: list[dict[str, Any]] = []
        for names, given in zip(_file_fields(toolkit, ctx.recipe), plan_.values, strict=True):
            step_values = dict(given)
            for name in names & set(given):
                path = _local_file(given[name])
                if path is not None:
                    step_values[name] = {"sha256": _digest_of(path)}
            values.append(step_values)
    except OSError as exc:
        return _fail_early(
            ctx, state, InvalidImage(f"{item.image}: cannot read it ({exc.strerror})")
        )
    state.key = hashlib.sha256(
        json.dumps(
            {"recipe": ctx.recipe.digest, "input": state.input_sha256, "values": values},
            sort_keys=True,
            default=str,
        ).encode()
    ).hexdigest()
    if ctx.options.force:
        return state
    existing = [p for p in plan_.files if p.exists()]
    marks = {p: _key_in(p) for p in existing}
    foreign = [p for p in existing if marks[p] != state.key]
    if foreign:
        return _fail_early(
            ctx,
            state,
            OutputExists(
                f"{foreign[0]} exists and was not made by this recipe from this input (its "
                "image, mask and row values); pass --force to replace it, or choose another "
                "output folder"
            ),
        )
    if existing and len(existing) == len(plan_.files):
        state.status = "skipped"
        state.written = existing
        state.lines.append(
            {
                **_line(ctx, state, None),
                "status": "skipped",
                "outputs": [{"path": str(p), "sha256": None} for p in existing],
            }
        )
        return state
    state.ours = frozenset(existing)
    return state


def _key_in(path: Path) -> str | None:
    """The batch key an output carries in its metadata (None: not one of ours)."""
    try:
        parameters = imageio.read_parameters(path)
    except Exception:  # unreadable or not an image: certainly not ours
        return None
    batch = (parameters or {}).get("batch")
    key = batch.get("key") if isinstance(batch, Mapping) else None
    return key if isinstance(key, str) else None


def _fail_early(ctx: BatchContext, state: ItemState, exc: RetouchError) -> ItemState:
    state.status = "failed"
    state.error = (type(exc).__name__, str(exc))
    state.lines.append(
        {
            **_line(ctx, state, None),
            "status": "failed",
            "error": _error(type(exc).__name__, str(exc)),
        }
    )
    return state


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds")


def _error(kind: str, message: str) -> dict[str, str]:
    return {"kind": kind, "message": message}


def _line(ctx: BatchContext, state: ItemState, step: Step | None) -> dict[str, Any]:
    item = state.plan.item
    mask: Any = None
    if step is not None:
        mask = state.plan.values[step.number - 1].get("mask")
    mask_file = _local_file(mask)
    return {
        "time": _now(),
        "run": ctx.run_id,
        "engine": ctx.engine,
        "item": item.number,
        "input": item.image,
        "origin": item.origin or None,
        "input_sha256": state.input_sha256 or None,
        "mask": mask if isinstance(mask, str) else None,
        "mask_sha256": _digest_of(mask_file) if mask_file is not None else None,
        "recipe": ctx.recipe.source,
        "recipe_sha256": ctx.recipe.digest,
        "key": state.key or None,
        "step": step.number if step is not None else None,
        "step_name": step.name if step is not None else None,
        "operation": step.operation if step is not None else None,
        "provider": None,
        "model": None,
        "fields": {},
        "seed": None,
        "timings": {},
        "outputs": [],
        "checks": {},
        "warnings": [],
        "status": "ok",
        "error": None,
    }


def run_step(ctx: BatchContext, toolkit: Toolkit, state: ItemState, step: Step) -> None:
    """Run one step of one item (after ``start``); its audit line goes to ``state.lines``.
    A failure marks the item failed and is never raised (KeyboardInterrupt aside)."""
    if state.failed or state.status == "skipped":
        return
    started = time.perf_counter()
    line = _line(ctx, state, step)
    values = dict(state.plan.values[step.number - 1])
    image: Any = state.picture if state.picture is not None else state.plan.item.image
    try:
        request = toolkit.build(step.operation, {**values, "image": image})
        before = request.image
        result = toolkit.run(request)
        line.update(_described(result))
        if len(result.images) > 1 and step.number < len(ctx.recipe.steps):
            raise InvalidRequest(
                f"{step.operation} made {len(result.images)} images; only the last step may make several"
            )
        mask = None
        if (
            isinstance(request, (EraseRequest, InpaintRequest, EditRequest))
            and request.mask is not None
        ):
            mask = toolkit.resolve_mask(before, request.mask, [])
        measured = measure(
            step.checks, request, before.pixels, result.image.pixels, mask, result.parameters
        )
        line["checks"] = {m.name: m.as_dict() for m in measured}
        failed = [m for m in measured if not m.ok]
        if failed and step.on_check_failure == "fail":
            raise CheckFailed("; ".join(f"check {m.describe()}" for m in failed))
        if failed:
            state.warned += 1
            line["warnings"] = [*line["warnings"], *(f"check {m.describe()}" for m in failed)]
        saved = state.plan.outputs.get(step.number, ())
        save_started = time.perf_counter()
        line["outputs"] = _save(ctx, state, step, result, line, saved)
        if saved:
            line["timings"]["save"] = round(time.perf_counter() - save_started, 4)
        out = result.image
        state.picture = Picture(
            pixels=out.pixels,
            icc_profile=out.icc_profile,
            exif=out.exif,
            source_mode=out.source_mode,
            name=before.name,
            format=before.format,
        )
    except Exception as exc:  # an item's failure never stops the batch
        kind = type(exc).__name__
        message = f"{step.label}: {exc}"
        if not isinstance(exc, RetouchError):
            message += " (an unexpected error: please report it)"
        state.error = (kind, message)
        state.status = "failed"
        state.picture = None
        line["status"] = "failed"
        line["error"] = _error(kind, message)
    line["timings"]["step"] = round(time.perf_counter() - started, 4)
    state.lines.append(line)


def _described(result: ImageResult) -> dict[str, Any]:
    fields = {k: v for k, v in result.parameters.items() if k not in ("operation", "provider")}
    seeds = [image.seed for image in result.images]
    return {
        "provider": result.provider,
        "model": result.model,
        "fields": fields,
        "seed": seeds[0] if len(seeds) == 1 else seeds,
        "timings": dict(result.timings),
        "warnings": list(result.warnings),
    }


def _save(
    ctx: BatchContext,
    state: ItemState,
    step: Step,
    result: ImageResult,
    line: Mapping[str, Any],
    paths: Sequence[Path],
) -> list[dict[str, Any]]:
    written = []
    record = {
        "recipe_sha256": ctx.recipe.digest,
        "key": state.key,
        "step": step.number,
        "step_name": step.name,
        "input": state.plan.item.image,
        "input_sha256": state.input_sha256,
        "mask_sha256": line.get("mask_sha256"),
        "checks": line.get("checks"),
    }
    quality = step.quality or ctx.options.quality
    for index, path in enumerate(paths):
        data = imageio.encode_result(
            result,
            index,
            imageio.format_for(path),
            quality=quality,
            name=str(path),
            extra={"batch": record},
        )
        imageio.write_bytes_atomic(path, data, overwrite=ctx.options.force or path in state.ours)
        state.written.append(path)
        written.append({"path": str(path), "sha256": hashlib.sha256(data).hexdigest()})
    return written


def run_item(ctx: BatchContext, toolkit: Toolkit, state: ItemState) -> ItemState:
    for step in ctx.recipe.steps:
        run_step(ctx, toolkit, state, step)
        if state.failed:
            break
    state.picture = None
    return state


# --- the summary ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ItemReport:
    """What ``on_item`` is told after each item."""

    item: Item
    status: Status
    outputs: tuple[Path, ...]
    error: tuple[str, str] | None
    done: int
    """Items finished so far in this run (done, skipped or failed)."""
    total: int


@dataclass
class ErrorKind:
    count: int
    first_item: str
    first_message: str


@dataclass
class Summary:
    total: int
    audit: Path
    done: int = 0
    skipped: int = 0
    failed: int = 0
    warned: int = 0
    interrupted: bool = False
    seconds: float = 0.0
    engine: Engine = "local"
    errors: dict[str, ErrorKind] = field(default_factory=dict)
    failures: list[tuple[str, str, str]] = field(default_factory=list)
    """(item, kind, message) of every failed item."""
    outputs: list[Path] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        """0 only when every item is done (or was done before); 130 when stopped."""
        if self.interrupted:
            return 130
        return 1 if self.failed else 0

    def add(self, state: ItemState) -> None:
        if state.status == "skipped":
            self.skipped += 1
        elif state.error is not None:
            self.failed += 1
            kind, message = state.error
            label = state.plan.item.label
            self.failures.append((label, kind, message))
            found = self.errors.get(kind)
            if found is None:
                self.errors[kind] = ErrorKind(1, label, message)
            else:
                found.count += 1
        else:
            self.done += 1
        self.warned += 1 if state.warned else 0
        self.outputs.extend(state.written)

    def text(self) -> str:
        rate = f", {self.done / self.seconds:.2f} images/s" if self.done and self.seconds else ""
        left = self.total - self.done - self.skipped - self.failed
        lines = [
            f"batch ({self.engine}): {self.done} done, {self.skipped} skipped (done before), "
            f"{self.failed} failed of {self.total} in {self.seconds:.1f} s{rate}"
            + (f"; {self.warned} with check warnings" if self.warned else "")
        ]
        if self.interrupted:
            lines.append(f"stopped: {left} not started; run the same command again to finish them")
        for kind, found in self.errors.items():
            lines.append(
                f"  {kind} x{found.count}, first: {found.first_item}: {found.first_message}"
            )
        lines.append(f"audit log: {self.audit}")
        return "\n".join(lines)

    def as_dict(self) -> dict[str, Any]:
        return {
            "total": self.total,
            "done": self.done,
            "skipped": self.skipped,
            "failed": self.failed,
            "warned": self.warned,
            "interrupted": self.interrupted,
            "seconds": round(self.seconds, 3),
            "engine": self.engine,
            "audit": str(self.audit),
            "errors": {
                k: {"count": v.count, "first_item": v.first_item, "first_message": v.first_message}
                for k, v in self.errors.items()
            },
            "failures": [{"item": i, "kind": k, "message": m} for i, k, m in self.failures],
            "outputs": [str(p) for p in self.outputs],
            "exit_code": self.exit_code,
        }


# --- the driver ------------------------------------------------------------------------------


OnItem = Callable[[ItemReport], None]


class _Stop:
    """Ctrl+C once: finish the items in flight, then stop. Twice: stop at once."""

    def __init__(self, handle_signals: bool) -> None:
        self.event = threading.Event()
        self._previous: Any = None
        self._handle = handle_signals and threading.current_thread() is threading.main_thread()
        self.notice: Callable[[str], None] = lambda text: None

    def __enter__(self) -> _Stop:
        if self._handle:
            self._previous = signal.signal(signal.SIGINT, self._on_signal)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._handle:
            signal.signal(signal.SIGINT, self._previous)

    def _on_signal(self, signum: int, frame: Any) -> None:
        if self.event.is_set():
            raise KeyboardInterrupt
        self.event.set()
        self.notice("stopping after the items in flight (Ctrl+C again to stop at once)")


def run_batch(
    recipe: Recipe,
    items: Sequence[Item],
    options: BatchOptions,
    *,
    toolkit: Toolkit | None = None,
    on_item: OnItem | None = None,
    progress: bool = False,
    handle_signals: bool = False,
    notice: Callable[[str], None] | None = None,
    worker_toolkit: Callable[[], Toolkit] | None = None,
) -> Summary:
    """Run ``recipe`` over ``items`` into ``options.output``; never raises for an item's
    failure (see the summary). ``on_item`` is told after each item; raising
    KeyboardInterrupt there (or Ctrl+C with ``handle_signals``) stops cleanly after the items
    in flight. ``progress``: a progress bar with ETA on stderr. ``worker_toolkit`` makes each
    Ray actor's Toolkit (default: the installed providers, ``toolkit``'s pixel limit)."""
    from retouch.api import Toolkit

    toolkit = toolkit if toolkit is not None else Toolkit()
    began = time.perf_counter()
    if options.output.exists() and not options.output.is_dir():
        raise InvalidRequest(f"{options.output} is a file; the batch output must be a folder")
    plans = plan(recipe, items, options, toolkit)
    options.output.mkdir(parents=True, exist_ok=True)
    _sweep_partial_files(plans)
    ctx = BatchContext(
        recipe=recipe,
        options=options,
        run_id=datetime.datetime.now().strftime("%Y%m%dT%H%M%S-") + uuid.uuid4().hex[:6],
        engine=options.engine,
    )
    summary = Summary(total=len(plans), audit=options.audit_path, engine=options.engine)
    stop = _Stop(handle_signals)
    if notice is not None:
        stop.notice = notice
    with AuditLog(options.audit_path) as log, stop:
        finished = 0

        def record(state: ItemState) -> None:
            nonlocal finished
            finished += 1
            log.write(state.lines)
            summary.add(state)
            if state.failed and options.fail_fast:
                stop.event.set()
            if on_item is not None:
                report = ItemReport(
                    item=state.plan.item,
                    status=state.status,
                    outputs=tuple(state.written),
                    error=state.error,
                    done=finished,
                    total=len(plans),
                )
                try:
                    on_item(report)
                except KeyboardInterrupt:
                    stop.event.set()

        bar = None
        try:
            todo: list[ItemState] = []
            for plan_ in plans:  # hashes every input first: the bar's ETA counts real work
                state = start(ctx, toolkit, plan_)
                if state.status == "skipped" or state.failed:
                    record(state)
                else:
                    todo.append(state)
            bar = _bar(len(todo)) if progress and todo else None
            tick = record_and_tick(record, bar, summary)
            if stop.event.is_set():
                pass
            elif options.engine == "ray":
                from retouch.batch.ray_engine import run_on_ray

                run_on_ray(ctx, todo, tick, stop.event, toolkit, worker_toolkit)
            else:
                _run_local(ctx, toolkit, todo, tick, stop.event)
        except KeyboardInterrupt:  # a second Ctrl+C, or no handler: the item in flight is lost
            stop.event.set()
        finally:
            if bar is not None:
                bar.close()
        stopped_by_failure = options.fail_fast and summary.failed > 0
        summary.interrupted = (
            stop.event.is_set() and finished < len(plans) and not stopped_by_failure
        )
    summary.seconds = time.perf_counter() - began
    return summary


def record_and_tick(
    record: Callable[[ItemState], None], bar: Any, summary: Summary
) -> Callable[[ItemState], None]:
    def tick(state: ItemState) -> None:
        record(state)
        if bar is not None:
            bar.update(1)
            if summary.failed:
                bar.set_postfix(failed=summary.failed, refresh=False)

    return tick


def _bar(total: int) -> Any:
    import sys

    if not sys.stderr.isatty():
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc="batch", unit="image", dynamic_ncols=True)


def _run_local(
    ctx: BatchContext,
    toolkit: Toolkit,
    todo: Sequence[ItemState],
    record: Callable[[ItemState], None],
    stop: threading.Event,
) -> None:
    if ctx.options.jobs <= 1:
        for state in todo:
            if stop.is_set():
                return
            record(run_item(ctx, toolkit, state))
        return
    pending = iter(todo)
    in_flight: set[Future[ItemState]] = set()
    with ThreadPoolExecutor(
        max_workers=ctx.options.jobs, thread_name_prefix="retouch-batch"
    ) as pool:
        while True:
            while not stop.is_set() and len(in_flight) < ctx.options.jobs:
                waiting = next(pending, None)
                if waiting is None:
                    break
                in_flight.add(pool.submit(run_item, ctx, toolkit, waiting))
            if not in_flight:
                return
            done, in_flight = wait(in_flight, return_when=FIRST_COMPLETED)
            for future in done:
                record(future.result())


def _sweep_partial_files(plans: Sequence[ItemPlan]) -> None:
    """Temporary files a killed run left beside our outputs (``.NAME.*.part``)."""
    by_folder: dict[Path, set[str]] = {}
    for p in plans:
        for path in p.files:
            by_folder.setdefault(path.parent, set()).add(path.name)
    for folder, names in by_folder.items():
        if not folder.is_dir():
            continue
        for entry in folder.iterdir():
            if entry.name.startswith(".") and entry.name.endswith(".part"):
                base = entry.name[1:].rsplit(".", 2)[0]
                if base in names:
                    entry.unlink(missing_ok=True)
