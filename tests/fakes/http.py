"""A fake HTTP service as a plain function of ``httpx.Request`` -> ``httpx.Response``.

Providers reach it through ``httpx.MockTransport(fake.handle)`` (no socket: what most tests
use), or through a real socket when a test needs one (the CLI reads base URLs from the
environment): ``live(fake.asgi())`` serves the same handler on 127.0.0.1.

A handler may raise ``httpx.ReadTimeout`` to play a service that took the request and never
answered in time (``Fake.script`` queues such failures for the next requests).
"""

from __future__ import annotations

import email
import email.policy
import io
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
from PIL import Image

Handler = Callable[..., httpx.Response]


@dataclass
class Upload:
    filename: str
    content_type: str
    data: bytes

    def image(self) -> Image.Image:
        image = Image.open(io.BytesIO(self.data))
        image.load()
        return image


@dataclass
class Sent:
    """One request the fake received."""

    method: str
    path: str
    headers: httpx.Headers
    body: bytes
    fields: dict[str, Any] = field(default_factory=dict)
    """Multipart fields (text as str, files as Upload) or the JSON body."""


def parse_form(request: httpx.Request) -> dict[str, Any]:
    """multipart/form-data or x-www-form-urlencoded fields; files as ``Upload``."""
    body = request.content
    content_type = request.headers.get("content-type", "")
    if content_type.startswith("application/x-www-form-urlencoded"):
        from urllib.parse import parse_qsl

        return dict(parse_qsl(body.decode()))
    if not content_type.startswith("multipart/form-data"):
        return {}
    message = email.message_from_bytes(
        b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + body, policy=email.policy.HTTP
    )
    fields: dict[str, Any] = {}
    for part in message.iter_parts():  # type: ignore[attr-defined]
        name = part.get_param("name", header="content-disposition")
        payload = part.get_payload(decode=True) or b""
        filename = part.get_filename()
        if filename is not None:
            value: Any = Upload(filename, part.get_content_type(), payload)
        else:
            value = payload.decode()
        if name in fields:  # repeated fields (image[]) become lists
            previous = fields[name]
            fields[name] = [*previous, value] if isinstance(previous, list) else [previous, value]
        else:
            fields[name] = value
    return fields


def json_response(
    body: Any, status: int = 200, headers: dict[str, str] | None = None
) -> httpx.Response:
    return httpx.Response(status, json=body, headers=headers)


class Fake:
    """Routes ``(method, path pattern)`` to handlers; records every request in ``sent``."""

    def __init__(self) -> None:
        self.routes: list[tuple[str, re.Pattern[str], Handler]] = []
        self.sent: list[Sent] = []
        self.script: list[Any] = []
        """Canned answers for the next requests: an ``httpx.Response``, an exception to raise
        (``httpx.ReadTimeout`` = the service took the request and did not answer), or a
        callable taking the request. Consumed before routing, after recording the request."""
        self.script_paths: str | None = None
        """When set, only requests whose path matches this regex consume the script."""

    def check(self, request: httpx.Request) -> httpx.Response | None:
        """A refusal for every route (credentials), checked after the request is recorded."""
        return None

    def route(self, method: str, pattern: str, handler: Handler) -> None:
        self.routes.append((method.upper(), re.compile(f"^{pattern}$"), handler))

    def count(self, method: str, pattern: str) -> int:
        compiled = re.compile(f"^{pattern}$")
        return sum(1 for s in self.sent if s.method == method.upper() and compiled.match(s.path))

    def handle(self, request: httpx.Request) -> httpx.Response:
        request.read()
        fields: dict[str, Any] = {}
        if request.headers.get("content-type", "").startswith("application/json"):
            fields = json.loads(request.content or b"null") or {}
        elif request.content:
            fields = parse_form(request)
        sent = Sent(request.method, request.url.path, request.headers, request.content, fields)
        self.sent.append(sent)
        refused = self.check(request)
        if refused is not None:
            return refused
        if self.script and (
            self.script_paths is None or re.search(self.script_paths, request.url.path)
        ):
            canned = self.script.pop(0)
            if isinstance(canned, BaseException):
                if isinstance(canned, httpx.RequestError):
                    canned = type(canned)(str(canned) or "scripted failure", request=request)
                raise canned
            if callable(canned):
                return canned(request)
            return canned
        for method, pattern, handler in self.routes:
            match = pattern.match(request.url.path)
            if match and method == request.method:
                return handler(request, sent, **match.groupdict())
        return httpx.Response(
            404, json={"error": f"no route for {request.method} {request.url.path}"}
        )

    @property
    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handle)

    def asgi(self) -> Any:
        """The handler as an ASGI app (for ``tests.fakes.live``)."""
        import anyio.to_thread

        async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
            if scope["type"] == "lifespan":
                while True:
                    message = await receive()
                    if message["type"] == "lifespan.startup":
                        await send({"type": "lifespan.startup.complete"})
                    elif message["type"] == "lifespan.shutdown":
                        await send({"type": "lifespan.shutdown.complete"})
                        return
            body = b""
            while True:
                message = await receive()
                body += message.get("body", b"")
                if not message.get("more_body"):
                    break
            headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"]]
            host = dict(headers).get("host", "127.0.0.1")
            query = scope.get("query_string", b"").decode()
            url = f"http://{host}{scope['path']}" + (f"?{query}" if query else "")
            request = httpx.Request(scope["method"], url, headers=headers, content=body)
            try:
                response = await anyio.to_thread.run_sync(self.handle, request)
            except httpx.TimeoutException:
                response = httpx.Response(504, json={"error": "the fake timed out"})
            response.read()
            await send(
                {
                    "type": "http.response.start",
                    "status": response.status_code,
                    "headers": [
                        (k.encode("latin-1"), v.encode("latin-1"))
                        for k, v in response.headers.items()
                        if k.lower() not in ("content-length", "transfer-encoding")
                    ]
                    + [(b"content-length", str(len(response.content)).encode())],
                }
            )
            await send({"type": "http.response.body", "body": response.content})

        return app


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()
