"""Server settings, from code or the environment (and a ``.env`` file in the working
directory, read at start; variables already set win)."""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from retouch.errors import ConfigurationError

# OpenAI-style model names on /v1/images/* -> (operation, provider or None for the best one).
DEFAULT_MODEL_MAP: dict[str, tuple[str, str | None]] = {
    "retouch-erase": ("erase", None),
    "lama": ("erase", "lama"),
    "classic": ("erase", "classic"),
    "retouch-inpaint": ("inpaint", None),
    "retouch-variations": ("variations", None),
}


def physical_memory() -> int:
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return 8 * 2**30


@dataclass
class ServerSettings:
    api_keys: frozenset[str] = frozenset()
    """When not empty, every route but /health, /docs, /openapi.json and the studio page (/ and
    /studio/*) needs one of these as ``Authorization: Bearer KEY`` (what the OpenAI client
    sends) or ``X-API-Key``."""
    max_upload_bytes: int = 25 * 2**20
    """Per image, counted as it arrives (uploads) or as it decodes (base64)."""
    max_pixels: int = 40_000_000
    """Inputs and results (an upscale, resize or outpaint asking for more is a 413)."""
    max_memory: int = field(default_factory=lambda: physical_memory() // 2)
    """What one request may need by its estimate, computed before any work (413 above)."""
    concurrency: int = 1
    """Requests that run at once per operation."""
    queue_size: int = 8
    """Requests that may wait per operation; more get 429 with Retry-After, before their
    body is read."""
    request_timeout_s: float = 300.0
    workers: int = 0
    """Worker processes that run the work (0: threads of the server process, which a
    cancel stops only at their next progress report). ``retouch serve``: 1 per core, at
    most 2 (RETOUCH_WORKERS)."""
    worker_memory: int | None = None
    """Address-space limit of each worker process in bytes (RETOUCH_WORKER_MEMORY)."""
    stop_grace_s: float = 1.0
    """How long cancelled work may take to stop before its worker is killed."""
    job_ttl_s: float = 3600.0
    """How long finished jobs and their results are kept."""
    max_jobs: int = 256
    job_dir: str | None = None
    """Where job results are kept (a fresh temporary folder when None; ``retouch serve``
    uses RETOUCH_JOB_DIR or the user cache folder, so jobs survive a restart)."""
    job_store_bytes: int = 2 * 2**30
    """Disk the job results may use; the oldest finished jobs are evicted past it."""
    url_secret: bytes = field(default_factory=lambda: secrets.token_bytes(32))
    """Signs the expiring links of ``url`` results (RETOUCH_URL_SECRET to keep them valid
    across restarts)."""
    url_ttl_s: float = 3600.0
    allow_image_urls: bool = False
    url_allow_hosts: frozenset[str] = frozenset()
    """Hosts exempt from the public-address check (tests and private deployments only)."""
    model_map: dict[str, tuple[str, str | None]] = field(
        default_factory=lambda: dict(DEFAULT_MODEL_MAP)
    )
    default_image_model: str = "retouch-erase"
    sd_inpaint: bool = False
    """Serve /sd-inpaint/*."""
    sd_inpaint_fallback: str | None = None
    """``erase``: /sd-inpaint/inpaint erases the masked area when no inpainting model is
    ready (the answer says so in X-Retouch-Mode); otherwise it answers 503."""
    shutdown_grace_s: float = 10.0
    header_timeout_s: float = 10.0
    """A client must send its request headers within this (``retouch serve``)."""
    cors_origins: tuple[str, ...] = ()
    """Origins allowed to call the API from a browser (RETOUCH_CORS_ORIGINS, comma-separated;
    ``*`` for any). Off by default."""
    model_paths: tuple[str, ...] = ()
    """Folders whose model files clients may name (RETOUCH_MODEL_PATHS, separated by
    ``os.pathsep``); by default only names from the store and catalog."""
    png_compress_level: int = 1
    """zlib level of PNG answers: 1 encodes about 3.5x faster than 6 for ~10% more bytes."""

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ServerSettings:
        env = {**read_dotenv(Path.cwd() / ".env"), **(os.environ if environ is None else environ)}
        from retouch.server.workers import default_workers

        settings = cls(workers=default_workers(), job_dir=str(_cache_dir() / "jobs"))
        for name, attr, parse in ENV:
            text = env.get(name, "").strip()
            if not text:
                continue
            try:
                setattr(settings, attr, parse(text))
            except (ValueError, TypeError):
                raise ConfigurationError(f"{name}={text!r} is not valid for {attr}") from None
        return settings


def _flag(text: str) -> bool:
    return text.lower() in ("1", "true", "yes", "on")


def _bytes(text: str) -> int:
    units = {"K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}
    value = text.upper().removesuffix("B").removesuffix("I")
    if value and value[-1] in units:
        return int(float(value[:-1]) * units[value[-1]])
    return int(value)


def _words(text: str) -> tuple[str, ...]:
    return tuple(w.strip() for w in text.split(",") if w.strip())


def _positive(kind: Callable[[str], Any]) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        value = kind(text)
        if value < 0:
            raise ValueError(text)
        return value

    return parse


ENV: list[tuple[str, str, Callable[[str], Any]]] = [
    ("RETOUCH_API_KEYS", "api_keys", lambda t: frozenset(_words(t))),
    ("LOAD_SD_INPAINT", "sd_inpaint", _flag),
    ("RETOUCH_SD_INPAINT_FALLBACK", "sd_inpaint_fallback", str),
    ("RETOUCH_ALLOW_IMAGE_URLS", "allow_image_urls", _flag),
    ("RETOUCH_MAX_UPLOAD_BYTES", "max_upload_bytes", _positive(_bytes)),
    ("RETOUCH_MAX_PIXELS", "max_pixels", _positive(int)),
    ("RETOUCH_MAX_MEMORY", "max_memory", _positive(_bytes)),
    ("RETOUCH_CONCURRENCY", "concurrency", _positive(int)),
    ("RETOUCH_QUEUE_SIZE", "queue_size", _positive(int)),
    ("RETOUCH_REQUEST_TIMEOUT", "request_timeout_s", _positive(float)),
    ("RETOUCH_WORKERS", "workers", _positive(int)),
    ("RETOUCH_WORKER_MEMORY", "worker_memory", _positive(_bytes)),
    ("RETOUCH_JOB_TTL", "job_ttl_s", _positive(float)),
    ("RETOUCH_JOB_DIR", "job_dir", str),
    ("RETOUCH_JOB_STORE_BYTES", "job_store_bytes", _positive(_bytes)),
    ("RETOUCH_URL_SECRET", "url_secret", str.encode),
    ("RETOUCH_HEADER_TIMEOUT", "header_timeout_s", _positive(float)),
    ("RETOUCH_CORS_ORIGINS", "cors_origins", _words),
    ("RETOUCH_MODEL_PATHS", "model_paths", lambda t: tuple(p for p in t.split(os.pathsep) if p)),
    ("RETOUCH_PNG_COMPRESS_LEVEL", "png_compress_level", _positive(int)),
]
"""Every environment variable the service reads, the setting it fills and how it is read."""


def read_dotenv(path: Path) -> dict[str, str]:
    """``KEY=VALUE`` lines (``#`` comments, optional quotes, ``export``), as the documented
    setup writes them; a missing file is no settings."""
    try:
        text = path.read_text()
    except OSError:
        return {}
    values = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.removeprefix("export ").partition("=")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[key.strip()] = value
    return values


def _cache_dir() -> Path:
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("retouch"))
