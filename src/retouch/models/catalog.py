"""The catalog of known weights: a JSON file in the package, plus an optional user catalog
named by ``RETOUCH_CATALOG`` (same format) whose entries add to or replace the built-in ones."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from retouch.errors import ConfigurationError, InvalidRequest

CATALOG_ENV = "RETOUCH_CATALOG"


@dataclass(frozen=True)
class ExtraFile:
    file: str
    urls: tuple[str, ...]
    checksum: str | None


@dataclass(frozen=True)
class CatalogEntry:
    name: str
    task: str
    format: str
    file: str | None
    urls: tuple[str, ...] = ()
    checksum: str | None = None
    """``sha256:<hex>`` or ``md5:<hex>``, as published; None when nothing was published."""
    size: int | None = None
    license: str | None = None
    shipped: dict[str, str] | None = None
    io: dict[str, Any] = field(default_factory=dict)
    repo: str | None = None
    note: str | None = None
    gated: str | None = None
    """The publisher's access rule (accept a licence while logged in): retouch cannot fetch
    such weights; this says how to get them and register them."""
    extra_files: tuple[ExtraFile, ...] = ()
    files: tuple[ExtraFile, ...] = ()
    """A folder model (a diffusers repo): its files, relative paths, fetched from each of
    ``base_urls`` in turn (default: the ``repo`` on Hugging Face)."""
    base_urls: tuple[str, ...] = ()

    @property
    def is_folder(self) -> bool:
        return bool(self.files)

    @property
    def folder_urls(self) -> tuple[str, ...]:
        if self.base_urls:
            return tuple(u if u.endswith("/") else u + "/" for u in self.base_urls)
        if self.repo:
            return (f"https://huggingface.co/{self.repo}/resolve/main/",)
        return ()

    @property
    def downloadable(self) -> bool:
        if self.is_folder:
            return bool(self.folder_urls)
        return bool(self.urls) and self.file is not None


def _entry(raw: dict[str, Any], source: str) -> CatalogEntry:
    try:
        checksum = raw.get("checksum")
        if checksum is not None and checksum.split(":", 1)[0] not in ("sha256", "md5"):
            raise ValueError(f"checksum must start with sha256: or md5:, got {checksum!r}")
        return CatalogEntry(
            name=raw["name"],
            task=raw["task"],
            format=raw["format"],
            file=raw.get("file"),
            urls=tuple(raw.get("urls") or ()),
            checksum=checksum,
            size=raw.get("size"),
            license=raw.get("license"),
            shipped=raw.get("shipped"),
            io=dict(raw.get("io") or {}),
            repo=raw.get("repo"),
            note=raw.get("note"),
            gated=raw.get("gated"),
            extra_files=tuple(
                ExtraFile(e["file"], tuple(e.get("urls") or ()), e.get("checksum"))
                for e in raw.get("extra_files") or ()
            ),
            files=tuple(_folder_file(f) for f in raw.get("files") or ()),
            base_urls=tuple(raw.get("base_urls") or ()),
        )
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ConfigurationError(f"bad catalog entry in {source}: {exc} ({raw!r:.200})") from exc


def _folder_file(raw: str | dict[str, Any]) -> ExtraFile:
    """``"unet/config.json"`` or ``{"file": ..., "checksum": "sha256:..."}``."""
    if isinstance(raw, str):
        raw = {"file": raw}
    name = str(raw["file"])
    if name.startswith("/") or ".." in Path(name).parts or "\\" in name:
        raise ValueError(f"folder file {name!r} must be a relative path inside the folder")
    return ExtraFile(name, (), raw.get("checksum"))


def _read(text: str, source: str) -> list[CatalogEntry]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigurationError(f"{source} is not valid JSON: {exc}") from exc
    models = data.get("models") if isinstance(data, dict) else None
    if not isinstance(models, list):
        raise ConfigurationError(f'{source} must hold {{"models": [...]}}')
    return [_entry(raw, source) for raw in models]


def load_catalog(extra: Path | None = None) -> dict[str, CatalogEntry]:
    """Built-in entries, then those of ``extra`` (or $RETOUCH_CATALOG), by name."""
    builtin = resources.files("retouch.models").joinpath("catalog.json").read_text("utf-8")
    entries = {e.name: e for e in _read(builtin, "the built-in catalog")}
    user = extra or (Path(os.environ[CATALOG_ENV]) if os.environ.get(CATALOG_ENV) else None)
    if user is not None:
        if not user.is_file():
            raise ConfigurationError(f"{CATALOG_ENV}={user}: no such file")
        entries.update({e.name: e for e in _read(user.read_text("utf-8"), str(user))})
    return entries


def lookup(catalog: dict[str, CatalogEntry], name: str) -> CatalogEntry:
    try:
        return catalog[name]
    except KeyError:
        raise InvalidRequest(
            f"no model named {name!r} in the catalog; see `retouch models list`"
        ) from None
