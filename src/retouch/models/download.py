"""Weights over HTTP: a resumable GET into a ``.part`` file, under the one fetch policy.

HTTP and network failures become DownloadError in ``retouch.http`` and nowhere else.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from retouch import http
from retouch.types import ProgressCallback, no_progress

TIMEOUT_S = 30.0


def fetch(
    url: str, part: Path, *, progress: ProgressCallback = no_progress, timeout: float = TIMEOUT_S
) -> None:
    """Download ``url`` into ``part``, continuing from its current size when the server allows."""
    policy = dataclasses.replace(http.DOWNLOAD_POLICY, timeout=timeout)
    http.download(url, part, policy=policy, progress=progress)
