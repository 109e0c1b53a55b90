"""The one fetch policy: pinned addresses, redirects guarded, caps and deadlines while streaming."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import pytest

from retouch import http
from retouch.errors import ImageTooLarge, InvalidImage, InvalidRequest
from retouch.server import urlfetch


class Handler(BaseHTTPRequestHandler):
    seen_hosts: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        Handler.seen_hosts.append(self.headers.get("Host", ""))
        if self.path == "/hop":
            self.send_response(302)
            self.send_header("Location", "http://internal.example/secret")
            self.end_headers()
            return
        if self.path == "/drip":  # 1 byte every 0.2 s
            self.send_response(200)
            self.send_header("Content-Length", "100")
            self.end_headers()
            for _ in range(100):
                try:
                    self.wfile.write(b"x")
                    self.wfile.flush()
                except OSError:
                    return
                time.sleep(0.2)
            return
        if self.path == "/chunked":  # no Content-Length: the cap is counted while streaming
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for _ in range(64):
                block = b"y" * 4096
                self.wfile.write(f"{len(block):x}\r\n".encode() + block + b"\r\n")
            self.wfile.write(b"0\r\n\r\n")
            return
        body = b"hello"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def server() -> Iterator[int]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, args=(0.01,), daemon=True).start()
    try:
        yield int(httpd.server_address[1])
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_the_guarded_address_is_the_one_connected(server: int) -> None:
    """The guard answers 127.0.0.1 for a name that no DNS knows: the request still arrives,
    with its Host header, so the connection went to the checked address, not a new lookup."""
    Handler.seen_hosts.clear()
    policy = http.FetchPolicy(guard=lambda host: "127.0.0.1")
    assert http.get_bytes(f"http://photos.invalid:{server}/a.png", policy) == b"hello"
    assert Handler.seen_hosts == [f"photos.invalid:{server}"]


def test_every_redirect_hop_is_guarded(server: int) -> None:
    asked: list[str] = []

    def guard(host: str) -> str:
        asked.append(host)
        if host != "photos.invalid":
            raise InvalidRequest(f"{host} is not a public address; refused")
        return "127.0.0.1"

    policy = http.FetchPolicy(guard=guard)
    with pytest.raises(InvalidRequest, match=r"internal\.example is not a public address"):
        http.get_bytes(f"http://photos.invalid:{server}/hop", policy)
    assert asked == ["photos.invalid", "internal.example"]


@pytest.mark.slow
def test_slow_drip_stops_at_the_minimum_rate(server: int) -> None:
    policy = http.FetchPolicy(min_rate=1000, grace=0.5, deadline=30)
    started = time.monotonic()
    with pytest.raises(InvalidImage, match="slower than"):
        http.get_bytes(f"http://127.0.0.1:{server}/drip", policy)
    assert time.monotonic() - started < 3


def test_byte_cap_holds_without_content_length(server: int) -> None:
    policy = http.FetchPolicy(max_bytes=50_000)
    with pytest.raises(ImageTooLarge, match="50000 byte limit"):
        http.get_bytes(f"http://127.0.0.1:{server}/chunked", policy)
    assert (
        len(http.get_bytes(f"http://127.0.0.1:{server}/chunked", http.FetchPolicy())) == 64 * 4096
    )


@pytest.mark.parametrize(
    "address",
    [
        "100.100.100.200",  # shared address space (Alibaba metadata)
        "100.64.0.1",
        "192.0.0.8",
        "198.18.0.1",  # benchmarking
        "169.254.169.254",
        "2002:7f00:1::1",  # 6to4 around 127.0.0.1
        "64:ff9b::a9fe:a9fe",  # NAT64 around 169.254.169.254
        "2001:0:4136:e378:8000:63bf:80ff:fffe",  # Teredo whose client is 127.0.0.1
        "::ffff:10.0.0.1",
        "fd00::1",
        "ff02::1",
    ],
)
def test_non_global_addresses_are_not_public(address: str) -> None:
    assert not urlfetch.is_public(address)


@pytest.mark.parametrize("address", ["8.8.8.8", "2606:4700:4700::1111", "2002:808:808::1"])
def test_global_addresses_are_public(address: str) -> None:
    assert urlfetch.is_public(address)


def test_one_private_answer_among_public_ones_refuses() -> None:
    with pytest.raises(InvalidRequest, match=r"10\.0\.0\.1"):
        urlfetch.public_address("mixed.invalid", resolver=lambda _: ["8.8.8.8", "10.0.0.1"])
    assert urlfetch.public_address("ok.invalid", resolver=lambda _: ["8.8.8.8"]) == "8.8.8.8"
