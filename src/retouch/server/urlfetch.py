"""Fetching image URLs without server-side request forgery.

Only http(s); every host is resolved and every address it resolves to must be public (not
loopback, private, link-local (which includes cloud metadata at 169.254.169.254), multicast,
reserved or unspecified, IPv4-mapped IPv6 included); redirects are followed by hand, up to
five, each target checked the same way; a size cap and a timeout hold throughout.
"""

from __future__ import annotations

import ipaddress
import socket
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable

from retouch.errors import ImageTooLarge, InvalidRequest

Resolver = Callable[[str], list[str]]
MAX_REDIRECTS = 5


def resolve(host: str) -> list[str]:
    try:
        return sorted({str(info[4][0]) for info in socket.getaddrinfo(host, None)})
    except socket.gaierror as exc:
        raise InvalidRequest(f"cannot resolve {host}: {exc.strerror}") from exc


def is_public(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return not (
        ip.is_private
        or ip.is_loopback
        or ip.is_link_local
        or ip.is_multicast
        or ip.is_reserved
        or ip.is_unspecified
    )


def check_url(
    url: str, *, allow_hosts: frozenset[str] = frozenset(), resolver: Resolver = resolve
) -> None:
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidRequest(f"only http(s) image URLs are allowed, not {url[:100]!r}")
    if parts.hostname in allow_hosts:
        return
    for address in resolver(parts.hostname):
        if not is_public(address):
            raise InvalidRequest(
                f"{parts.hostname} resolves to {address}, which is not a public address; refused"
            )


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None


def fetch_public(
    url: str,
    *,
    max_bytes: int,
    timeout: float = 15.0,
    allow_hosts: frozenset[str] = frozenset(),
    resolver: Resolver = resolve,
) -> bytes:
    opener = urllib.request.build_opener(_NoRedirect)
    for _ in range(MAX_REDIRECTS + 1):
        check_url(url, allow_hosts=allow_hosts, resolver=resolver)
        request = urllib.request.Request(url, headers={"User-Agent": "retouch"})
        try:
            response = opener.open(request, timeout=timeout)
        except urllib.error.HTTPError as exc:
            if exc.code in (301, 302, 303, 307, 308) and exc.headers.get("Location"):
                url = urllib.parse.urljoin(url, exc.headers["Location"])
                continue
            raise InvalidRequest(f"{url}: the server answered HTTP {exc.code}") from exc
        except (urllib.error.URLError, TimeoutError, OSError) as exc:
            raise InvalidRequest(
                f"{url}: could not fetch the image ({getattr(exc, 'reason', exc)})"
            ) from exc
        with response:
            data: bytes = response.read(max_bytes + 1)
        if len(data) > max_bytes:
            raise ImageTooLarge(f"{url}: the image is over the {max_bytes} byte limit")
        return data
    raise InvalidRequest(f"too many redirects (more than {MAX_REDIRECTS}) fetching the image")
