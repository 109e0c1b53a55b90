"""Fetching image URLs for the server without server-side request forgery.

Only http(s); the host is resolved and every address it resolves to must be globally
routable (``ipaddress``'s ``is_global``: not loopback, private, link-local (cloud metadata at
169.254.169.254), shared (100.64.0.0/10), benchmarking, documentation, reserved or
unspecified), IPv4 embedded in IPv6 included (mapped, 6to4 2002::/16, NAT64 64:ff9b::/96,
Teredo). The checked address is the one connected to (``retouch.http`` pins it), so a DNS
answer that changes between the check and the connection (rebinding) changes nothing. Every
redirect hop is checked the same way; the one fetch policy's size cap and deadlines hold.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import socket
import urllib.parse
from collections.abc import Callable

from retouch import http
from retouch.errors import InvalidRequest

Resolver = Callable[[str], list[str]]
NAT64 = ipaddress.ip_network("64:ff9b::/96")
NOT_PUBLIC = [
    ipaddress.ip_network(n)
    for n in ("100.64.0.0/10", "192.0.0.0/24", "198.18.0.0/15", "0.0.0.0/8", "240.0.0.0/4")
]
"""Blocked whatever this Python's ``is_global`` says (its special-purpose lists differ by
version: 3.11.7 calls 192.0.0.8 global)."""


def resolve(host: str) -> list[str]:
    try:
        return sorted({str(info[4][0]) for info in socket.getaddrinfo(host, None)})
    except (socket.gaierror, UnicodeError) as exc:
        raise InvalidRequest(f"cannot resolve {host}: {getattr(exc, 'strerror', exc)}") from exc


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        return ip.teredo[1]
    if ip in NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def is_public(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address):
        inner = _embedded_ipv4(ip)
        if inner is not None:
            return is_public(str(inner))
    if any(ip in network for network in NOT_PUBLIC if network.version == ip.version):
        return False
    return ip.is_global and not ip.is_multicast


def public_address(
    host: str, *, allow_hosts: frozenset[str] = frozenset(), resolver: Resolver = resolve
) -> str | None:
    """The address to connect to for ``host``: all of its addresses must be public (an
    allowed host connects by name)."""
    if host in allow_hosts:
        return None
    addresses = resolver(host)
    if not addresses:
        raise InvalidRequest(f"cannot resolve {host}")
    for address in addresses:
        if not is_public(address):
            raise InvalidRequest(
                f"{host} resolves to {address}, which is not a public address; refused"
            )
    return addresses[0]


def check_url(
    url: str, *, allow_hosts: frozenset[str] = frozenset(), resolver: Resolver = resolve
) -> None:
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidRequest(f"only http(s) image URLs are allowed, not {url[:100]!r}")
    public_address(parts.hostname, allow_hosts=allow_hosts, resolver=resolver)


def fetch_public(
    url: str,
    *,
    max_bytes: int,
    timeout: float = 15.0,
    allow_hosts: frozenset[str] = frozenset(),
    resolver: Resolver = resolve,
) -> bytes:
    check_url(url, allow_hosts=allow_hosts, resolver=resolver)  # the scheme, before any I/O

    def guard(host: str) -> str | None:
        return public_address(host, allow_hosts=allow_hosts, resolver=resolver)

    policy = dataclasses.replace(
        http.IMAGE_POLICY, max_bytes=max_bytes, timeout=timeout, deadline=4 * timeout, guard=guard
    )
    return http.get_bytes(url, policy)
