"""What every remote provider shares: one HTTP client that turns HTTP into retouch errors.

The only place where HTTP statuses and network failures become retouch errors:

- 401 / 403           -> AuthenticationError (unless the provider says it is moderation)
- moderation          -> ContentPolicy (the provider's ``is_moderation`` decides)
- 429                 -> retried after Retry-After (bounded), then RateLimited(retry_after)
- 5xx, timeouts, refused connections -> retried with exponential backoff up to ``retries``,
                         then ServerError / ProviderTimeout
- other 4xx           -> InvalidRequest with the service's own message

Every message names the provider and says what to do. Tests swap the transport (httpx's
``ASGITransport`` over a fake service) or point the base URL at a fake on 127.0.0.1.
"""

from __future__ import annotations

import base64
import io
import json
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from retouch.errors import (
    AuthenticationError,
    ContentPolicy,
    DependencyMissing,
    InvalidRequest,
    ProviderTimeout,
    RateLimited,
    ServerError,
)
from retouch.types import Pixels

MAX_RETRY_AFTER_S = 30.0


def service_message(response: Any) -> str:
    """The error text a service put in its body, whatever its shape."""
    try:
        data = response.json()
    except (ValueError, json.JSONDecodeError):
        text = response.text.strip()
        return text[:300] or f"HTTP {response.status_code}"
    if isinstance(data, dict):
        error = data.get("error")
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])
        if isinstance(error, str):
            return error
        for key in ("errors", "detail", "message", "name"):
            value = data.get(key)
            if isinstance(value, list) and value:
                return "; ".join(str(v) for v in value)
            if isinstance(value, str) and value:
                return value
    return str(data)[:300]


@dataclass
class RemoteClient:
    provider: str
    base_url: str
    headers: dict[str, str] = field(default_factory=dict)
    timeout: float = 120.0
    retries: int = 3
    backoff: float = field(
        default_factory=lambda: float(os.environ.get("RETOUCH_REMOTE_BACKOFF", "0.5"))
    )
    """Seconds before the first retry, doubling each time (RETOUCH_REMOTE_BACKOFF)."""
    transport: Any = None
    is_moderation: Callable[[Any], bool] = field(default=lambda response: False)
    sleep: Callable[[float], None] = time.sleep
    auth: Any = None

    def _client(self) -> Any:
        try:
            import httpx
        except ImportError as exc:
            raise DependencyMissing("httpx", "remote", f"the {self.provider} provider") from exc
        return httpx.Client(
            base_url=self.base_url,
            headers=self.headers,
            timeout=self.timeout,
            transport=self.transport,
            auth=self.auth,
            follow_redirects=True,
        )

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        """Send, retrying what is worth retrying; returns the 2xx response."""
        import httpx

        attempt = 0
        while True:
            attempt += 1
            try:
                with self._client() as client:
                    response = client.request(method, path, **kwargs)
            except httpx.TimeoutException as exc:
                if attempt <= self.retries:
                    self.sleep(self.backoff * 2 ** (attempt - 1))
                    continue
                raise ProviderTimeout(
                    f"no answer from {self.base_url} in {self.timeout:g} s after {attempt} tries; try again later",
                    provider=self.provider,
                ) from exc
            except httpx.TransportError as exc:
                if attempt <= self.retries:
                    self.sleep(self.backoff * 2 ** (attempt - 1))
                    continue
                raise ServerError(
                    f"cannot reach {self.base_url} ({exc}); check the base URL and your network",
                    provider=self.provider,
                ) from exc
            status = response.status_code
            if status < 400:
                return response
            message = service_message(response)
            if self.is_moderation(response):
                raise ContentPolicy(
                    f"the service refused the content: {message}", provider=self.provider
                )
            if status in (401, 403):
                raise AuthenticationError(
                    f"the service refused the credentials ({status}: {message}); check the API key",
                    provider=self.provider,
                )
            if status == 429:
                retry_after = _retry_after(response)
                if attempt <= self.retries and (retry_after or 0) <= MAX_RETRY_AFTER_S:
                    self.sleep(
                        retry_after
                        if retry_after is not None
                        else self.backoff * 2 ** (attempt - 1)
                    )
                    continue
                raise RateLimited(
                    f"rate limited ({message}); retry later",
                    provider=self.provider,
                    retry_after=retry_after,
                )
            if status >= 500:
                if attempt <= self.retries:
                    self.sleep(self.backoff * 2 ** (attempt - 1))
                    continue
                raise ServerError(
                    f"the service failed ({status}: {message}) after {attempt} tries; try again later",
                    provider=self.provider,
                )
            raise InvalidRequest(
                f"{self.provider}: the service rejected the request ({status}): {message}"
            )

    def get_bytes(self, url: str) -> bytes:
        """Download an output file (absolute URL or path)."""
        response = self.request("GET", url)
        data: bytes = response.content
        return data


def _retry_after(response: Any) -> float | None:
    value = response.headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


def env(name: str, default: str | None = None) -> str | None:
    value = os.environ.get(name, "").strip()
    return value or default


def png_bytes(pixels: Pixels) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    mode = "RGBA" if pixels.shape[2] == 4 else "RGB"
    Image.fromarray(
        np.ascontiguousarray(pixels[:, :, :4] if mode == "RGBA" else pixels[:, :, :3]), mode
    ).save(buffer, "PNG")
    return buffer.getvalue()


def grey_png(mask: NDArray[np.uint8]) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(mask, "L").save(buffer, "PNG")
    return buffer.getvalue()


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def decode_rgb(data: bytes, *, provider: str) -> NDArray[np.uint8]:
    """An image the service sent back, as RGB (or RGBA when it has transparency)."""
    from retouch import imageio
    from retouch.errors import InvalidImage

    try:
        picture = imageio.decode_image(data, name=f"{provider}'s answer", max_pixels=None)
    except InvalidImage as exc:
        raise ServerError(
            f"the service sent something that is not an image ({exc})", provider=provider
        ) from exc
    from retouch.types import to_uint8

    return to_uint8(picture.pixels)


def fit(pixels: Pixels, size: tuple[int, int]) -> Pixels:
    """Resize a service's output back to ``size`` (width, height) when the service changed it."""
    from retouch.compose import resize_pixels

    if (pixels.shape[1], pixels.shape[0]) == size:
        return pixels
    return resize_pixels(pixels, size)


def missing(what: str, env_name: str, provider: str) -> AuthenticationError:
    return AuthenticationError(f"{what} is not set: export {env_name}=...", provider=provider)


def form_fields(values: Mapping[str, Any]) -> dict[str, str]:
    """Multipart text fields: None dropped, everything else as text."""
    return {k: str(v) for k, v in values.items() if v is not None}
