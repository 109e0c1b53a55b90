"""Server settings, from code or the environment (RETOUCH_API_KEYS, LOAD_SD_INPAINT, ...)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

# OpenAI-style model names on /v1/images/* -> (operation, provider or None for the best one).
DEFAULT_MODEL_MAP: dict[str, tuple[str, str | None]] = {
    "retouch-erase": ("erase", None),
    "lama": ("erase", "lama"),
    "classic": ("erase", "classic"),
    "retouch-inpaint": ("inpaint", None),
    "retouch-variations": ("variations", None),
}


def _flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


@dataclass
class ServerSettings:
    api_keys: frozenset[str] = frozenset()
    """When not empty, every route but /health, /docs and /openapi.json needs one of these as
    ``Authorization: Bearer KEY`` (what the OpenAI client sends) or ``X-API-Key``."""
    max_upload_bytes: int = 25 * 2**20
    max_pixels: int = 40_000_000
    concurrency: int = 1
    """Requests that run at once per model (operation + provider)."""
    queue_size: int = 8
    """Requests that may wait per model; more get 429 with Retry-After."""
    request_timeout_s: float = 300.0
    job_ttl_s: float = 3600.0
    """How long finished jobs and their results are kept."""
    max_jobs: int = 256
    allow_image_urls: bool = False
    url_allow_hosts: frozenset[str] = frozenset()
    """Hosts exempt from the public-address check (tests and private deployments only)."""
    model_map: dict[str, tuple[str, str | None]] = field(
        default_factory=lambda: dict(DEFAULT_MODEL_MAP)
    )
    default_image_model: str = "retouch-erase"
    sd_inpaint: bool = False
    """Serve /sd-inpaint/*: diffusion inpainting when a provider for it is ready, else erase."""
    shutdown_grace_s: float = 10.0
    sd_inpaint_fallback: str | None = None
    """``erase``: /sd-inpaint/inpaint erases the masked area when no inpainting model is
    ready (the answer says so in X-Retouch-Mode); otherwise it answers 503."""
    cors_origins: tuple[str, ...] = ()
    """Origins allowed to call the API from a browser (RETOUCH_CORS_ORIGINS, comma-separated;
    ``*`` for any). Off by default."""
    model_paths: tuple[str, ...] = ()
    """Folders whose model files clients may name (RETOUCH_MODEL_PATHS, separated by
    ``os.pathsep``); by default only names from the store and catalog."""
    png_compress_level: int = 1
    """zlib level of PNG answers: 1 encodes about 3.5x faster than 6 for ~10% more bytes."""

    @classmethod
    def from_env(cls) -> ServerSettings:
        keys = frozenset(
            k.strip() for k in os.environ.get("RETOUCH_API_KEYS", "").split(",") if k.strip()
        )
        settings = cls(
            api_keys=keys,
            sd_inpaint=_flag("LOAD_SD_INPAINT"),
            allow_image_urls=_flag("RETOUCH_ALLOW_IMAGE_URLS"),
            sd_inpaint_fallback=os.environ.get("RETOUCH_SD_INPAINT_FALLBACK") or None,
            model_paths=tuple(
                p for p in os.environ.get("RETOUCH_MODEL_PATHS", "").split(os.pathsep) if p
            ),
            cors_origins=tuple(
                o.strip()
                for o in os.environ.get("RETOUCH_CORS_ORIGINS", "").split(",")
                if o.strip()
            ),
        )
        for env, attr, kind in (
            ("RETOUCH_MAX_UPLOAD_BYTES", "max_upload_bytes", int),
            ("RETOUCH_MAX_PIXELS", "max_pixels", int),
            ("RETOUCH_CONCURRENCY", "concurrency", int),
            ("RETOUCH_QUEUE_SIZE", "queue_size", int),
            ("RETOUCH_REQUEST_TIMEOUT", "request_timeout_s", float),
            ("RETOUCH_JOB_TTL", "job_ttl_s", float),
            ("RETOUCH_PNG_COMPRESS_LEVEL", "png_compress_level", int),
        ):
            if os.environ.get(env):
                setattr(settings, attr, kind(os.environ[env]))
        return settings
