"""retouch errors -> HTTP status and the one JSON error shape (OpenAI's), in one place.

``{"error": {"message": ..., "type": ..., "param": null, "code": ...}}``
"""

from __future__ import annotations

from typing import Any

from retouch.errors import (
    AuthenticationError,
    Cancelled,
    ConfigurationError,
    ContentPolicy,
    DependencyMissing,
    ImageTooLarge,
    InvalidRequest,
    ModelNotAvailable,
    ProviderError,
    ProviderTimeout,
    ProviderUnavailable,
    RateLimited,
    RetouchError,
    UnsupportedOperation,
)

STATUS: list[tuple[type[Exception], int, str]] = [
    # most specific first
    (ImageTooLarge, 413, "invalid_request_error"),
    (InvalidRequest, 400, "invalid_request_error"),
    (ProviderUnavailable, 503, "provider_unavailable"),
    (UnsupportedOperation, 400, "invalid_request_error"),
    (ModelNotAvailable, 503, "model_not_available"),
    (DependencyMissing, 503, "model_not_available"),
    (AuthenticationError, 502, "upstream_authentication_error"),
    (RateLimited, 429, "rate_limit_error"),
    (ContentPolicy, 400, "content_policy_violation"),
    (ProviderTimeout, 504, "timeout"),
    (ProviderError, 502, "upstream_error"),
    (Cancelled, 409, "cancelled"),
    (ConfigurationError, 500, "server_error"),
]


class HTTPProblem(Exception):
    """An HTTP-level refusal (auth, limits, routing) with the same JSON shape."""

    def __init__(
        self,
        status: int,
        message: str,
        kind: str,
        *,
        headers: dict[str, str] | None = None,
        param: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.kind = kind
        self.headers = headers or {}
        self.param = param


def body(
    message: str, kind: str, *, param: str | None = None, code: str | None = None
) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": param, "code": code or kind}}


def for_exception(exc: Exception) -> tuple[int, dict[str, Any], dict[str, str]]:
    """Status, JSON body and headers for any exception; unknown ones never leak a trace."""
    if isinstance(exc, HTTPProblem):
        return exc.status, body(str(exc), exc.kind, param=exc.param), exc.headers
    if isinstance(exc, RetouchError):
        for cls, status, kind in STATUS:
            if isinstance(exc, cls):
                headers = {}
                if isinstance(exc, RateLimited) and exc.retry_after:
                    headers["Retry-After"] = str(int(exc.retry_after + 0.999))
                return status, body(str(exc), kind, param=getattr(exc, "param", None)), headers
    return 500, body("internal error; the server log has the details", "server_error"), {}
