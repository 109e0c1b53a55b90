"""The one policy for fetching over HTTP(S): image URLs, model downloads, server URL fetches.

On httpx, for every caller:

- http(s) only; redirects followed by hand (at most ``max_redirects``), so every hop is
  seen by ``guard``;
- ``guard(host)`` (the server's SSRF check) returns the address to connect to, and that very
  address is connected to: the request goes to the IP while the Host header and TLS SNI keep
  the name, so a second DNS answer (rebinding) cannot move the request elsewhere;
- a timeout per network operation, a total deadline, a minimum transfer rate after a grace
  period, and a byte cap counted while the body streams (a lying or absent Content-Length
  changes nothing);
- failures become the caller's error class (``InvalidImage`` for images, ``DownloadError``
  for weights) with one message that says what happened.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urljoin, urlsplit

from retouch.errors import ImageTooLarge, InvalidImage, RetouchError
from retouch.types import Progress, ProgressCallback, no_progress

if TYPE_CHECKING:
    import httpx

Guard = Callable[[str], "str | None"]
"""Host name -> the address to connect to (None: connect by name); raises to refuse."""
REDIRECTS = (301, 302, 303, 307, 308)


@dataclass(frozen=True)
class FetchPolicy:
    timeout: float = 20.0
    """Seconds any one network operation (connect, a read) may take."""
    deadline: float | None = 120.0
    """Seconds the whole transfer may take; None: no limit (large model files)."""
    min_rate: float | None = None
    """Bytes per second the body must average once ``grace`` seconds have passed."""
    grace: float = 5.0
    max_bytes: int | None = None
    max_redirects: int = 5
    guard: Guard | None = None


IMAGE_POLICY = FetchPolicy(timeout=20.0, deadline=60.0, min_rate=16_384, max_bytes=50 * 2**20)
"""Image URLs given to the library: 50 MB at most, 60 s, no slower than 16 KB/s."""
DOWNLOAD_POLICY = FetchPolicy(timeout=30.0, deadline=None, min_rate=4_096)
"""Model weights: as long as it takes while bytes keep coming."""


class _Stop(Exception):
    """A policy limit was hit while streaming (turned into the caller's error)."""


def _pinned(url: str, address: str | None) -> tuple[str, dict[str, str], dict[str, str]]:
    """The URL to request, extra headers and extensions that connect to ``address`` while
    presenting the original name (Host header, TLS SNI and certificate check)."""
    parts = urlsplit(url)
    if address is None or parts.hostname is None:
        return url, {}, {}
    host = f"[{address}]" if ":" in address else address
    netloc = host if parts.port is None else f"{host}:{parts.port}"
    target = parts._replace(netloc=netloc).geturl()
    return target, {"Host": parts.netloc.rpartition("@")[2]}, {"sni_hostname": parts.hostname}


@contextmanager
def open_url(
    url: str,
    policy: FetchPolicy,
    *,
    headers: dict[str, str] | None = None,
    error: Callable[[str], RetouchError] = InvalidImage,
) -> Iterator[httpx.Response]:
    """A streaming response for ``url`` after the redirects, every hop guarded."""
    import httpx

    timeout = httpx.Timeout(policy.timeout)
    with httpx.Client(timeout=timeout, follow_redirects=False, trust_env=False) as client:
        for _ in range(policy.max_redirects + 1):
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise error(f"only http(s) URLs can be fetched, not {url[:100]!r}")
            address = policy.guard(parts.hostname) if policy.guard else None
            target, extra, extensions = _pinned(url, address)
            request = client.build_request(
                "GET",
                target,
                headers={"User-Agent": "retouch", **(headers or {}), **extra},
                extensions=extensions,
            )
            try:
                response = client.send(request, stream=True)
            except httpx.HTTPError as exc:
                raise error(f"{url}: could not connect ({exc or type(exc).__name__})") from exc
            try:
                if response.status_code in REDIRECTS and response.headers.get("location"):
                    url = urljoin(url, response.headers["location"])
                    continue
                yield response
                return
            finally:
                response.close()
        raise error(f"{url}: too many redirects (more than {policy.max_redirects})")


def _chunks(response: httpx.Response, policy: FetchPolicy, started: float) -> Iterator[bytes]:
    """The body, stopped at the deadline, below the minimum rate or past the byte cap."""
    received = 0
    for chunk in response.iter_bytes():  # as it arrives: a broken transfer keeps it all
        received += len(chunk)
        elapsed = time.monotonic() - started
        if policy.max_bytes is not None and received > policy.max_bytes:
            raise _Stop(f"it is over the {policy.max_bytes} byte limit")
        if policy.deadline is not None and elapsed > policy.deadline:
            raise _Stop(f"it took longer than {policy.deadline:g} s")
        if policy.min_rate and elapsed > policy.grace and received / elapsed < policy.min_rate:
            raise _Stop(f"it arrived slower than {policy.min_rate / 1024:g} KB/s")
        yield chunk


def get_bytes(url: str, policy: FetchPolicy = IMAGE_POLICY) -> bytes:
    """GET ``url`` whole, under ``policy``; failures are InvalidImage (the cap ImageTooLarge)."""
    import httpx

    started = time.monotonic()
    with open_url(url, policy) as response:
        if response.status_code != 200:
            raise InvalidImage(f"{url}: the server answered HTTP {response.status_code}")
        declared = response.headers.get("content-length", "")
        if policy.max_bytes is not None and declared.isdigit() and int(declared) > policy.max_bytes:
            raise ImageTooLarge(
                f"{url}: {declared} bytes is over the {policy.max_bytes} byte limit"
            )
        try:
            return b"".join(_chunks(response, policy, started))
        except _Stop as exc:
            kind = ImageTooLarge if "byte limit" in str(exc) else InvalidImage
            raise kind(f"{url}: not fetched: {exc}") from None
        except httpx.HTTPError as exc:
            raise InvalidImage(
                f"{url}: the transfer broke off ({exc or type(exc).__name__})"
            ) from exc


def download(
    url: str,
    part: Path,
    *,
    policy: FetchPolicy = DOWNLOAD_POLICY,
    progress: ProgressCallback = no_progress,
) -> None:
    """Download ``url`` into ``part``, continuing from its current size when the server
    allows (HTTP Range); failures are DownloadError and keep what arrived for a resume."""
    import httpx

    from retouch.errors import DownloadError

    have = part.stat().st_size if part.exists() else 0
    headers = {"Range": f"bytes={have}-"} if have else {}
    started = time.monotonic()
    with open_url(url, policy, headers=headers, error=DownloadError) as response:
        if response.status_code == 416 and have:  # the part file is already complete
            return
        if response.status_code not in (200, 206):
            raise DownloadError(
                f"{url}: the server answered HTTP {response.status_code} {response.reason_phrase}"
            )
        resumed = have and response.status_code == 206
        start = have if resumed else 0
        length = response.headers.get("content-length", "")
        total = start + int(length) if length.isdigit() else 0
        done = start
        progress(Progress("download", done, total))
        try:
            with part.open("ab" if resumed else "wb") as out:
                for chunk in _chunks(response, policy, started):
                    out.write(chunk)
                    done += len(chunk)
                    progress(Progress("download", done, total))
        except (_Stop, httpx.HTTPError, OSError) as exc:
            raise DownloadError(
                f"{url}: the download broke off after {done} bytes ({exc}); run the pull "
                "again to resume"
            ) from exc
    if total and done < total:
        raise DownloadError(f"{url}: got {done} of {total} bytes; run the pull again to resume")
