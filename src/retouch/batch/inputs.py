"""A batch's inputs: files, folders (walked, their structure kept), globs, and manifests.

A manifest is a CSV file (a header row) or a JSONL file (one object a line) with an
``image`` column and any others: ``mask``, ``prompt`` or any field of the recipe's steps,
or columns the recipe refers to as ``${row.NAME}``. Paths in it are relative to its folder.
Every file of a folder is an input (hidden ones aside): a file that is not an image fails
as one item and is named in the summary. Pick files with a glob (``"shots/*.jpg"``).
"""

from __future__ import annotations

import csv
import glob
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from retouch.errors import InvalidRequest

MANIFEST_SUFFIXES = (".csv", ".jsonl", ".ndjson")
_GLOB_CHARS = "*?["


@dataclass(frozen=True)
class Item:
    """One input image (and its manifest row)."""

    number: int
    """1-based position among the inputs."""
    image: str
    relative: PurePosixPath
    """Where its outputs go under the output folder: the input's path below its root."""
    row: Mapping[str, Any] = field(default_factory=dict)
    """Its manifest row (all columns, ``image`` too); empty for plain files."""
    folder: Path | None = None
    """Relative paths in the row are relative to this folder (the manifest's)."""
    origin: str = ""
    """Where it was named, for messages: ``list.csv line 4``; empty for plain files."""

    @property
    def label(self) -> str:
        return f"{self.image} ({self.origin})" if self.origin else self.image


def collect(inputs: Sequence[str], *, exclude: Path | None = None) -> list[Item]:
    """Every input, in the order given (folders and globs sorted); ``exclude`` (the output
    folder) is never walked into."""
    if not inputs:
        raise InvalidRequest("give at least one input: a file, a folder, a glob or a manifest")
    found: list[Item] = []
    skip = exclude.resolve() if exclude is not None else None
    for text in inputs:
        path = Path(text)
        if path.is_file() and path.suffix.lower() in MANIFEST_SUFFIXES:
            found.extend(_manifest(path, start=len(found) + 1))
        elif path.is_dir():
            files = _walk(path, skip)
            if not files:
                raise InvalidRequest(f"{path} holds no files")
            found.extend(
                _item(len(found) + i, f, f.relative_to(path)) for i, f in enumerate(files, 1)
            )
        elif path.is_file():
            found.append(_item(len(found) + 1, path, PurePosixPath(path.name)))
        elif any(c in text for c in _GLOB_CHARS):
            matches = sorted(Path(m) for m in glob.glob(text, recursive=True) if Path(m).is_file())
            if not matches:
                raise InvalidRequest(f"{text} matches no file")
            root = _glob_root(text)
            found.extend(
                _item(len(found) + i, m, _below(m, root)) for i, m in enumerate(matches, 1)
            )
        else:
            raise InvalidRequest(f"{text}: no such file or folder; check the path")
    return found


def _item(number: int, path: Path, relative: Path | PurePosixPath) -> Item:
    return Item(number=number, image=str(path), relative=PurePosixPath(*Path(relative).parts))


def _walk(folder: Path, skip: Path | None) -> list[Path]:
    files: list[Path] = []
    for root, dirs, names in os.walk(folder):
        here = Path(root)
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and (here / d).resolve() != skip)
        files.extend(here / n for n in sorted(names) if not n.startswith("."))
    return files


def _glob_root(pattern: str) -> Path:
    fixed: list[str] = []
    for part in Path(pattern).parts:
        if any(c in part for c in _GLOB_CHARS):
            break
        fixed.append(part)
    return Path(*fixed) if fixed else Path(".")


def _below(path: Path, root: Path) -> PurePosixPath:
    try:
        return PurePosixPath(*path.relative_to(root).parts)
    except ValueError:
        return PurePosixPath(path.name)


def _manifest(path: Path, *, start: int) -> list[Item]:
    rows = _csv(path) if path.suffix.lower() == ".csv" else _jsonl(path)
    if not rows:
        raise InvalidRequest(f"{path}: the manifest has no rows")
    folder = path.parent
    items = []
    for offset, (line, row) in enumerate(rows):
        origin = f"{path.name} line {line}"
        image = row.get("image")
        if not isinstance(image, str) or not image.strip():
            raise InvalidRequest(f"{path} line {line}: the row has no image")
        image_path = Path(os.path.expanduser(image.strip()))
        if not image_path.is_absolute():
            image_path = folder / image_path
        items.append(
            Item(
                number=start + offset,
                image=str(image_path),
                relative=_below(image_path, folder),
                row=row,
                folder=folder,
                origin=origin,
            )
        )
    return items


def _csv(path: Path) -> list[tuple[int, dict[str, Any]]]:
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        columns = reader.fieldnames or []
        if "image" not in columns:
            raise InvalidRequest(
                f"{path}: a manifest needs an 'image' column; its header is {', '.join(columns) or 'empty'}"
            )
        rows: list[tuple[int, dict[str, Any]]] = []
        for record in reader:
            if None in record:
                raise InvalidRequest(
                    f"{path} line {reader.line_num}: more cells than the header has columns"
                )
            if not any((v or "").strip() for v in record.values()):
                continue
            row = {k.strip(): (v.strip() if v and v.strip() else None) for k, v in record.items()}
            rows.append((reader.line_num, row))
    return rows


def _jsonl(path: Path) -> list[tuple[int, dict[str, Any]]]:
    rows: list[tuple[int, dict[str, Any]]] = []
    with path.open(encoding="utf-8") as handle:
        for line, text in enumerate(handle, 1):
            if not text.strip():
                continue
            try:
                record = json.loads(text)
            except json.JSONDecodeError as exc:
                raise InvalidRequest(f"{path} line {line}: not valid JSON ({exc.msg})") from None
            if not isinstance(record, Mapping):
                raise InvalidRequest(f"{path} line {line}: each line must be a JSON object")
            rows.append((line, dict(record)))
    return rows
