"""The one place that speaks HTTP for weights: resumable GET into a ``.part`` file.

HTTP and network failures become DownloadError here and nowhere else.
"""

from __future__ import annotations

import urllib.error
import urllib.request
from pathlib import Path

from retouch.errors import DownloadError
from retouch.types import Progress, ProgressCallback, no_progress

CHUNK = 1 << 20
TIMEOUT_S = 30.0


def fetch(
    url: str, part: Path, *, progress: ProgressCallback = no_progress, timeout: float = TIMEOUT_S
) -> None:
    """Download ``url`` into ``part``, continuing from its current size when the server allows."""
    have = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": "retouch"}
    if have:
        headers["Range"] = f"bytes={have}-"
    request = urllib.request.Request(url, headers=headers)
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have:  # the part file is already complete
            return
        raise DownloadError(f"{url}: the server answered HTTP {exc.code} {exc.reason}") from exc
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise DownloadError(f"{url}: could not connect ({reason}); are you offline?") from exc
    with response:
        resumed = have and response.status == 206
        mode = "ab" if resumed else "wb"
        start = have if resumed else 0
        length = response.headers.get("Content-Length")
        total = start + int(length) if length and length.isdigit() else 0
        done = start
        progress(Progress("download", done, total))
        try:
            with part.open(mode) as out:
                while chunk := response.read(CHUNK):
                    out.write(chunk)
                    done += len(chunk)
                    progress(Progress("download", done, total))
        except (urllib.error.URLError, TimeoutError, OSError) as exc:
            raise DownloadError(
                f"{url}: the download broke off after {done} bytes ({exc}); run the pull again to resume"
            ) from exc
    if total and done < total:
        raise DownloadError(f"{url}: got {done} of {total} bytes; run the pull again to resume")
