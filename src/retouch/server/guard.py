"""The outermost layer of the service: API keys and request metrics, as plain ASGI.

Plain ASGI rather than a ``BaseHTTPMiddleware``, so request bodies stream through untouched
(the body limit counts them as they arrive) and a client that goes away is seen by the
handlers. A request without a valid key gets 401 with ``WWW-Authenticate``; the caller's
key is remembered in the request's state as an opaque owner id, so jobs and their results
belong to the key that made them.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs

from starlette.types import ASGIApp, Message, Receive, Scope, Send

OPEN_PATHS = frozenset(
    {"/health", "/docs", "/openapi.json", "/docs/oauth2-redirect", "/redoc", "/"}
)
OPEN_PREFIXES = ("/studio/",)
"""The studio page and its static files: they hold nothing secret, and the page asks for the
key the API needs."""


def owner_of(key: str) -> str:
    """An id for an API key that does not reveal it (jobs are stored under it)."""
    return hashlib.sha256(key.encode()).hexdigest()[:24] if key else ""


def _key(scope: Scope) -> str:
    headers: dict[str, str] = {
        k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]
    }
    header = headers.get("authorization", "")
    if header.lower().startswith("bearer "):
        return header[7:].strip()
    return headers.get("x-api-key", "").strip()


class Guard:
    def __init__(
        self,
        app: ASGIApp,
        *,
        keys: frozenset[str],
        signed: Callable[[Scope], bool],
        observe: Callable[[str, int, float], None],
    ) -> None:
        self.app = app
        self.keys = keys
        self.signed = signed
        """A request carrying a valid signed link needs no key (OpenAI ``url`` results)."""
        self.observe = observe

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        key = _key(scope)
        scope.setdefault("state", {})["owner"] = owner_of(key)
        status = 500

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        path = scope["path"]
        open_path = (
            path in OPEN_PATHS or path.startswith(OPEN_PREFIXES) or scope["method"] == "OPTIONS"
        )
        try:
            if self.keys and key not in self.keys and not open_path and not self.signed(scope):
                await _unauthorised(sending)
                return
            await self.app(scope, receive, sending)
        finally:
            route = scope.get("route")
            self.observe(getattr(route, "path", "unmatched"), status, time.perf_counter() - started)


async def _unauthorised(send: Callable[[Message], Any]) -> None:
    body = json.dumps(
        {
            "error": {
                "message": "a valid API key is required: send Authorization: Bearer KEY",
                "type": "invalid_api_key",
                "param": None,
                "code": "invalid_api_key",
            }
        }
    ).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 401,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"www-authenticate", b'Bearer realm="retouch"'),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def sign_link(secret: bytes, path: str, expires: int) -> str:
    return hmac.new(secret, f"{path}|{expires}".encode(), hashlib.sha256).hexdigest()[:40]


def signed_link_valid(secret: bytes, scope: Scope) -> bool:
    """A GET of a job image with an unexpired ``expires`` and its ``signature``."""
    if scope.get("method") != "GET" or not scope["path"].startswith("/v1/jobs/"):
        return False
    query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
    expires, signature = query.get("expires", [""])[0], query.get("signature", [""])[0]
    if not expires.isdigit() or int(expires) < time.time() or not signature:
        return False
    return hmac.compare_digest(signature, sign_link(secret, scope["path"], int(expires)))
