"""The audit log: one JSON line per item and step, appended as each item finishes.

A line says what ran on what: input path and sha256, mask path and sha256, recipe and its
sha256, the item's key, run id and engine, step number/name, operation, provider, model,
every field value, the seed used, timings, each output's path and sha256, the quality
checks measured, warnings, status (ok, failed, skipped) and the error (kind, message).
An item skipped because it was done before gets one ``skipped`` line; an item that failed
before its first step (unreadable input, an output in the way) one ``failed`` line.

``report(path)`` reads a log back into a summary (``retouch batch report LOG``): items by
their latest outcome, then per step: runs, failures, check failures and mean / slowest
seconds, then errors by kind with the first message of each.
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, TextIO

from retouch.errors import InvalidRequest


class AuditLog:
    """Appends lines; one writer (the batch's driver), flushed after each item."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._handle: TextIO | None = None
        self._lock = threading.Lock()

    def __enter__(self) -> AuditLog:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._handle = self.path.open("a", encoding="utf-8")
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None

    def write(self, lines: Iterable[Mapping[str, Any]]) -> None:
        text = "".join(json.dumps(line, default=str, sort_keys=True) + "\n" for line in lines)
        if not text:
            return
        with self._lock:
            if self._handle is None:
                raise RuntimeError("the audit log is not open")
            self._handle.write(text)  # an item's lines in one write: never interleaved
            self._handle.flush()


def read_log(path: str | Path) -> list[dict[str, Any]]:
    target = Path(path)
    if not target.is_file():
        raise InvalidRequest(f"{target}: no such audit log")
    lines = []
    with target.open(encoding="utf-8") as handle:
        for number, text in enumerate(handle, 1):
            if not text.strip():
                continue
            try:
                line = json.loads(text)
            except json.JSONDecodeError:
                if number == 1:
                    raise InvalidRequest(f"{target} is not a JSONL audit log") from None
                continue  # a line cut short by a crash: the rest still counts
            if isinstance(line, dict):
                lines.append(line)
    return lines


@dataclass
class StepFigures:
    number: int
    name: str
    operation: str
    providers: set[str] = field(default_factory=set)
    models: set[str] = field(default_factory=set)
    ok: int = 0
    failed: int = 0
    check_failures: int = 0
    seconds: list[float] = field(default_factory=list)


@dataclass
class Report:
    lines: int
    runs: list[str]
    items: dict[str, str]
    """Item (input path) -> its latest outcome: done, skipped, failed."""
    steps: list[StepFigures]
    errors: dict[str, tuple[int, str, str]]
    """Kind -> (count, first input, first message), over the latest outcome of each item."""
    last_run: dict[str, int] = field(default_factory=dict)
    """What the newest run did with its items: done, skipped, failed."""

    @property
    def counts(self) -> dict[str, int]:
        found = {"done": 0, "skipped": 0, "failed": 0}
        for outcome in self.items.values():
            found[outcome] = found.get(outcome, 0) + 1
        return found

    def text(self) -> str:
        counts = self.counts
        out = [
            f"{len(self.items)} items over {len(self.runs)} run(s): {counts['done']} done, "
            f"{counts['skipped']} skipped (done before), {counts['failed']} failed",
            *(
                [
                    f"the last run: {self.last_run.get('done', 0)} done, "
                    f"{self.last_run.get('skipped', 0)} skipped, "
                    f"{self.last_run.get('failed', 0)} failed"
                ]
                if len(self.runs) > 1
                else []
            ),
            "",
            f"{'step':<5} {'name':<22} {'provider':<12} {'model':<20} {'ok':>6} {'failed':>6} "
            f"{'checks':>6} {'mean s':>8} {'max s':>8}",
        ]
        for s in self.steps:
            mean = sum(s.seconds) / len(s.seconds) if s.seconds else 0.0
            slowest = max(s.seconds) if s.seconds else 0.0
            out.append(
                f"{s.number:<5} {s.name[:22]:<22} {','.join(sorted(s.providers))[:12]:<12} "
                f"{','.join(sorted(s.models))[:20]:<20} {s.ok:>6} {s.failed:>6} "
                f"{s.check_failures:>6} {mean:>8.3f} {slowest:>8.3f}"
            )
        if self.errors:
            out.append("")
            out.append("errors (latest outcome of each item):")
            for kind, (count, first, message) in self.errors.items():
                out.append(f"  {kind} x{count}, first: {first}: {message}")
        return "\n".join(out)

    def as_dict(self) -> dict[str, Any]:
        return {
            "lines": self.lines,
            "runs": self.runs,
            "items": self.counts,
            "last_run": {"done": 0, "skipped": 0, "failed": 0, **self.last_run},
            "steps": [
                {
                    "step": s.number,
                    "name": s.name,
                    "operation": s.operation,
                    "providers": sorted(s.providers),
                    "models": sorted(s.models),
                    "ok": s.ok,
                    "failed": s.failed,
                    "check_failures": s.check_failures,
                    "mean_s": round(sum(s.seconds) / len(s.seconds), 4) if s.seconds else None,
                    "max_s": round(max(s.seconds), 4) if s.seconds else None,
                }
                for s in self.steps
            ],
            "errors": {
                k: {"count": c, "first_item": i, "first_message": m}
                for k, (c, i, m) in self.errors.items()
            },
        }


def report(path: str | Path) -> Report:
    lines = read_log(path)
    runs: list[str] = []
    latest: dict[str, tuple[str, dict[str, Any] | None]] = {}
    steps: dict[int, StepFigures] = {}
    newest: dict[str, str] = {}  # item -> what the newest run did with it
    current: str | None = None
    for line in lines:
        run = str(line.get("run"))
        if run not in runs:
            runs.append(run)
        item = str(line.get("input"))
        status = line.get("status")
        number = line.get("step")
        if run != current:
            newest, current = {}, run  # lines come in run order: a new run starts afresh
        runs_item = newest.get(item)
        if status in ("failed", "skipped") and runs_item != "failed":
            newest[item] = str(status)
        elif status == "ok" and runs_item is None:
            newest[item] = "done"
        if status == "skipped":  # done before: by an earlier run in this log, or not
            done_before = latest.get(item, ("", None))[0] == "done"
            latest[item] = ("done" if done_before else "skipped", None)
        elif status == "failed":
            latest[item] = ("failed", line.get("error"))
        elif (
            status == "ok"
            and isinstance(number, int)
            and (latest.get(item, ("", None))[0] != "failed" or number == 1)
        ):
            latest[item] = ("done", None)
        if isinstance(number, int):
            figures = steps.setdefault(
                number, StepFigures(number, str(line.get("step_name")), str(line.get("operation")))
            )
            if line.get("provider"):
                figures.providers.add(str(line["provider"]))
            if line.get("model"):
                figures.models.add(str(line["model"]))
            if status == "ok":
                figures.ok += 1
            elif status == "failed":
                figures.failed += 1
            checks = line.get("checks") or {}
            if any(isinstance(c, Mapping) and not c.get("ok", True) for c in checks.values()):
                figures.check_failures += 1
            seconds = (line.get("timings") or {}).get("step")
            if isinstance(seconds, (int, float)):
                figures.seconds.append(float(seconds))
    errors: dict[str, tuple[int, str, str]] = {}
    for item, (outcome, error) in latest.items():
        if outcome != "failed" or not isinstance(error, Mapping):
            continue
        kind = str(error.get("kind"))
        count, first, message = errors.get(kind, (0, item, str(error.get("message"))))
        errors[kind] = (count + 1, first, message)
    return Report(
        lines=len(lines),
        runs=runs,
        items={k: v for k, (v, _) in latest.items()},
        steps=[steps[k] for k in sorted(steps)],
        errors=errors,
        last_run=dict(Counter(newest.values())),
    )
