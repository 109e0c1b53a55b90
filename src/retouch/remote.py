"""What every remote provider shares: one HTTP client that turns HTTP into retouch errors, and
retries what is safe to retry.

The only place where HTTP statuses and network failures become retouch errors:

- 401 / 403           -> AuthenticationError (unless the provider says it is moderation)
- moderation          -> ContentPolicy (the provider's ``is_moderation`` decides)
- 408, 409, 429, 500, 502, 503 -> retried (at most ``retries`` times, 2 as the official SDKs),
                         after Retry-After / retry-after-ms when the service gives one (up to
                         two minutes), else after an exponential backoff; then RateLimited
                         (429, with ``retry_after``) or ServerError
- a request that never reached the service (refused connection, connect timeout) -> retried
- other 4xx           -> InvalidRequest with the service's own message

Retries by safety. A request that may have started billed or queued work is never sent
twice: once a POST has been sent and the answer does not come (read timeout, dropped
connection, 504 from a gateway), the work may still be running on the service, so the client
raises ``ProviderTimeout`` saying so instead of re-sending it (openai-python re-sends with an
idempotency key; the image services have none, so a re-send is billed or queued again).
``resend=True`` marks a POST that is safe to repeat (an upload, a token, a cancel); GET, PUT
and DELETE are always safe.

Rules follow openai-python ``src/openai/_base_client.py`` (``_should_retry``,
``_calculate_retry_timeout``) and ``_constants.py`` (2 retries, 0.5 s doubling to 8 s,
Retry-After honoured up to 120 s, 600 s timeout, 5 s connect timeout).

Tests give providers an httpx ``MockTransport`` over a fake of the service, or point the base
URL at a fake on 127.0.0.1.
"""

from __future__ import annotations

import base64
import email.utils
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
from retouch.types import OutpaintRequest, Pixels

MAX_RETRIES = 2
"""openai-python ``DEFAULT_MAX_RETRIES``; replicate-python and the Stainless SDKs agree."""
MAX_RETRY_AFTER_S = 120.0
"""openai-python ``MAX_RETRY_AFTER_DELAY``: a longer Retry-After is reported, not waited."""
MAX_BACKOFF_S = 8.0
DEFAULT_TIMEOUT_S = 600.0
"""openai-python ``DEFAULT_TIMEOUT`` (10 minutes): complex image edits take minutes."""
CONNECT_TIMEOUT_S = 5.0
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
RETRY_STATUSES = frozenset({408, 409, 429, 500, 502, 503})
"""408/409/429/5xx as openai-python ``_should_retry``; 504 is apart: see ``request``."""


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
    timeout: float = DEFAULT_TIMEOUT_S
    """Seconds to wait for an answer (read timeout); the connect timeout is 5 s."""
    retries: int = MAX_RETRIES
    backoff: float = field(
        default_factory=lambda: float(os.environ.get("RETOUCH_REMOTE_BACKOFF", "0.5"))
    )
    """Seconds before the first retry, doubling each time up to 8 s (RETOUCH_REMOTE_BACKOFF)."""
    transport: Any = None
    is_moderation: Callable[[Any], bool] = field(default=lambda response: False)
    sleep: Callable[[float], None] = time.sleep
    auth: Any = None
    still_running: str = ""
    """What to tell the user when a create may still be running (where to look for it)."""
    explain: Callable[[Any], str | None] | None = None
    """More of a refused request's body to show (ComfyUI's ``node_errors``)."""

    def _client(self, timeout: float) -> Any:
        try:
            import httpx
        except ImportError as exc:
            raise DependencyMissing("httpx", "remote", f"the {self.provider} provider") from exc
        return httpx.Client(
            base_url=self.base_url,
            headers=self.headers,
            timeout=httpx.Timeout(timeout, connect=min(CONNECT_TIMEOUT_S, timeout)),
            transport=self.transport,
            auth=self.auth,
            follow_redirects=True,
        )

    def _wait(self, attempt: int, response: Any = None) -> None:
        retry_after = _retry_after(response) if response is not None else None
        if retry_after is not None and 0 < retry_after <= MAX_RETRY_AFTER_S:
            self.sleep(retry_after)
        else:
            self.sleep(min(self.backoff * 2 ** (attempt - 1), MAX_BACKOFF_S))

    def _may_be_running(self, what: str, exc: Exception | None = None) -> ProviderTimeout:
        where = f"; {self.still_running}" if self.still_running else ""
        error = ProviderTimeout(
            f"{what}; the request was sent and may still be running there (and be billed), so "
            f"it was not sent again{where}",
            provider=self.provider,
        )
        if exc is not None:
            error.__cause__ = exc
        return error

    def request(
        self,
        method: str,
        path: str,
        *,
        resend: bool | None = None,
        timeout: float | None = None,
        **kwargs: Any,
    ) -> Any:
        """Send, retrying what is safe to retry; returns the 2xx (or 3xx) response.

        ``resend``: whether the request may be sent again after it reached the service
        without an answer (default: GET, HEAD, OPTIONS, PUT and DELETE may; POST may not).
        """
        import httpx

        method = method.upper()
        safe = resend if resend is not None else method in SAFE_METHODS
        wait_s = self.timeout if timeout is None else timeout
        attempt = 0
        while True:
            attempt += 1
            more = attempt <= self.retries
            try:
                with self._client(wait_s) as client:
                    response = client.request(method, path, **kwargs)
            except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
                # Never reached the service: always safe to try again.
                if more:
                    self._wait(attempt)
                    continue
                if isinstance(exc, httpx.ConnectError):
                    raise ServerError(
                        f"cannot reach {self.base_url} ({exc}) after {attempt} tries; check the "
                        "base URL and your network",
                        provider=self.provider,
                    ) from exc
                raise ProviderTimeout(
                    f"could not connect to {self.base_url} after {attempt} tries; try again later",
                    provider=self.provider,
                ) from exc
            except (httpx.WriteTimeout, httpx.WriteError) as exc:
                # The request did not get through whole: the service cannot have acted on it.
                if more:
                    self._wait(attempt)
                    continue
                raise ProviderTimeout(
                    f"could not send the request to {self.base_url} ({exc}) after {attempt} "
                    "tries; try again later",
                    provider=self.provider,
                ) from exc
            except httpx.TimeoutException as exc:
                if safe and more:
                    self._wait(attempt)
                    continue
                if not safe:
                    raise self._may_be_running(
                        f"no answer from {self.base_url} in {wait_s:g} s", exc
                    ) from exc
                raise ProviderTimeout(
                    f"no answer from {self.base_url} in {wait_s:g} s after {attempt} tries; "
                    "try again later",
                    provider=self.provider,
                ) from exc
            except httpx.TransportError as exc:
                if safe and more:
                    self._wait(attempt)
                    continue
                if not safe:
                    raise self._may_be_running(
                        f"the connection to {self.base_url} broke before the answer ({exc})", exc
                    ) from exc
                raise ServerError(
                    f"the connection to {self.base_url} failed ({exc}) after {attempt} tries",
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
            if status == 504 and not safe:
                # A gateway gave up waiting for the service, which may still be working.
                raise self._may_be_running(f"the gateway timed out (504: {message})")
            if more and _should_retry(response):
                self._wait(attempt, response)
                continue
            if status == 429:
                retry_after = _retry_after(response)
                raise RateLimited(
                    f"rate limited ({message}) after {attempt} tries; retry later",
                    provider=self.provider,
                    retry_after=retry_after,
                )
            if status >= 500 or status in RETRY_STATUSES:
                raise ServerError(
                    f"the service failed ({status}: {message}) after {attempt} tries; try again later",
                    provider=self.provider,
                )
            detail = self.explain(response) if self.explain is not None else None
            raise InvalidRequest(
                f"{self.provider}: the service rejected the request ({status}): {message}"
                + (f"; {detail}" if detail else "")
            )

    def get_bytes(self, url: str) -> bytes:
        """Download an output file (absolute URL or path)."""
        response = self.request("GET", url)
        data: bytes = response.content
        return data


def _should_retry(response: Any) -> bool:
    """openai-python ``_should_retry``: the server's ``x-should-retry`` wins, a Retry-After
    over two minutes is not waited, else 408/409/429/5xx."""
    retry_after = _retry_after(response)
    if retry_after is not None and retry_after > MAX_RETRY_AFTER_S:
        return False
    header = response.headers.get("x-should-retry")
    if header == "true":
        return True
    if header == "false":
        return False
    return response.status_code in RETRY_STATUSES or response.status_code >= 500


def _retry_after(response: Any) -> float | None:
    """Seconds from ``retry-after-ms``, ``retry-after`` (seconds or an HTTP date)."""
    headers = response.headers
    millis = headers.get("retry-after-ms")
    if millis is not None:
        try:
            return max(0.0, float(millis) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        parsed = email.utils.parsedate_tz(value)
    except (TypeError, ValueError):
        return None
    if parsed is None:
        return None
    return max(0.0, float(email.utils.mktime_tz(parsed) - time.time()))


def env(name: str, default: str | None = None) -> str | None:
    value = os.environ.get(name, "").strip()
    return value or default


# --- encoding what is sent ------------------------------------------------------------------


def png_bytes(pixels: Pixels, *, compress_level: int = 6) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    mode = "RGBA" if pixels.shape[2] == 4 else "RGB"
    Image.fromarray(
        np.ascontiguousarray(pixels[:, :, :4] if mode == "RGBA" else pixels[:, :, :3]), mode
    ).save(buffer, "PNG", compress_level=compress_level)
    return buffer.getvalue()


def grey_png(mask: NDArray[np.uint8]) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(mask, "L").save(buffer, "PNG")
    return buffer.getvalue()


def alpha_mask_png(mask: NDArray[np.uint8]) -> bytes:
    """A mask in the "transparent = edit" convention (OpenAI, ComfyUI's LoadImage): black
    colour channels, alpha = 255 - mask. Only the alpha carries information, so the PNG is
    small (tens of KB where the photo's colours with an alpha take megabytes)."""
    rgba = np.zeros((*mask.shape, 4), np.uint8)
    rgba[:, :, 3] = 255 - mask
    return png_bytes(rgba)


@dataclass(frozen=True)
class Encoded:
    data: bytes
    mime: str
    filename: str
    lossless: bool


def encode_within(
    pixels: Pixels, budget: int, *, lossy: tuple[str, ...] = ("webp", "jpeg")
) -> Encoded:
    """The picture in at most ``budget`` bytes: lossless PNG when it fits, else the first
    lossy format in ``lossy`` at the highest quality (95 down to 80) that fits. Raises
    InvalidRequest when nothing fits (the caller should shrink the picture)."""
    from PIL import Image

    data = png_bytes(pixels)
    if len(data) <= budget:
        return Encoded(data, "image/png", "image.png", True)
    rgb = np.ascontiguousarray(pixels[:, :, :3])
    for fmt in lossy:
        for quality in (95, 92, 90, 85, 80):
            buffer = io.BytesIO()
            if fmt == "jpeg":
                Image.fromarray(rgb).save(buffer, "JPEG", quality=quality, subsampling=0)
            else:
                Image.fromarray(rgb).save(buffer, "WEBP", quality=quality, method=4)
            if buffer.tell() <= budget:
                return Encoded(buffer.getvalue(), f"image/{fmt}", f"image.{fmt[:4]}", False)
    raise InvalidRequest(
        f"the image does not fit in {budget} bytes even as a quality-80 "
        f"{'/'.join(lossy)}; resize it first"
    )


def data_uri(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64," + base64.b64encode(data).decode("ascii")


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


def sized(outputs: list[Pixels], size: tuple[int, int]) -> tuple[list[Pixels], dict[str, Any]]:
    """The outputs at ``size``, and how they got there (``usage["output_size"]``): ``by`` is
    ``service`` when the service answered at that size, ``resize`` when retouch resized its
    answer (``service_size`` says what the service sent)."""
    if not outputs:
        return outputs, {}
    first = outputs[0]
    service_size = [int(first.shape[1]), int(first.shape[0])]
    by = "service" if tuple(service_size) == tuple(size) else "resize"
    report: dict[str, Any] = {"width": size[0], "height": size[1], "by": by}
    if by == "resize":
        report["service_size"] = service_size
    return [fit(p, size) for p in outputs], report


def missing(what: str, env_name: str, provider: str) -> AuthenticationError:
    return AuthenticationError(f"{what} is not set: export {env_name}=...", provider=provider)


def form_fields(values: Mapping[str, Any]) -> dict[str, str]:
    """Multipart text fields: None dropped, booleans lower-case, everything else as text."""
    out = {}
    for key, value in values.items():
        if value is None:
            continue
        out[key] = ("true" if value else "false") if isinstance(value, bool) else str(value)
    return out


def unknown_model(provider: str, model: str, known: tuple[str, ...] | list[str]) -> InvalidRequest:
    return InvalidRequest(
        f"{provider} does not know the model {model!r}; known: {', '.join(known)}", param="model"
    )


def outpaint_work(
    request: OutpaintRequest,
    pixels: Pixels,
    *,
    max_side: int | None,
    multiple: int = 1,
) -> tuple[NDArray[np.uint8], NDArray[np.uint8], tuple[int, int]]:
    """What a provider that only inpaints needs to outpaint ``request`` (its sides and
    feather) on ``pixels`` (its picture as the provider reads it): the extended canvas (the
    new area filled with the edge pixels stretched outwards, a better start for a diffusion
    model than black), the mask of the new area (plus a ``feather`` band inside the original,
    so the seam is repainted too), both scaled so the long side is at most ``max_side`` and the sides
    are multiples of ``multiple``; and the full canvas size (width, height) to scale back to.
    The Toolkit pastes the original back over the result, so its pixels stay exact."""
    from retouch.compose import outpaint_canvas, resize_pixels
    from retouch.types import to_uint8

    left, right, top, bottom = request.left, request.right, request.top, request.bottom
    feather = request.feather
    rgb = to_uint8(pixels[:, :, :3])
    _, fill, _ = outpaint_canvas(
        rgb, left=left, right=right, top=top, bottom=bottom, feather=feather
    )
    canvas = np.pad(rgb, ((top, bottom), (left, right), (0, 0)), mode="edge")
    full = (canvas.shape[1], canvas.shape[0])
    scale = 1.0 if max_side is None else min(1.0, max_side / max(full))
    work = (
        max(multiple, round(full[0] * scale / multiple) * multiple),
        max(multiple, round(full[1] * scale / multiple) * multiple),
    )
    if work != full:
        canvas = resize_pixels(canvas, work)
        fill = resize_pixels(fill[:, :, None], work, smooth=True)[:, :, 0]
        fill = np.where(fill > 0, 255, 0).astype(np.uint8)
    return np.ascontiguousarray(canvas), np.ascontiguousarray(fill), full


# --- self-hosted Stable Diffusion servers ---------------------------------------------------

LOCAL_SD_ENV = "STABLE_DIFFUSION_LOCAL_BASE_URL"
NOT_FOUND_RETRY_S = 30.0
_DETECTED: dict[str, tuple[str | None, float]] = {}


def local_server_kind(url: str, *, transport: Any = None) -> str | None:
    """What the server at ``url`` is: ``automatic1111`` (it answers ``GET /sdapi/v1/options``,
    modules/api/api.py), ``comfyui`` (it answers ``GET /system_stats``, ComfyUI server.py), or
    None. Probed once per URL (2 s per probe) and remembered; a server that was not there is
    asked again after 30 s (it may have been starting)."""
    known = _DETECTED.get(url)
    if known is not None and (known[0] is not None or time.monotonic() < known[1]):
        return known[0]
    import httpx

    found: str | None = None
    try:
        with httpx.Client(base_url=url, timeout=2.0, transport=transport) as client:
            for kind, path in (
                ("automatic1111", "/sdapi/v1/options"),
                ("comfyui", "/system_stats"),
            ):
                try:
                    response = client.get(path)
                except httpx.HTTPError:
                    continue
                # A1111 started with --api-auth answers 401 to the probe: still A1111.
                if response.status_code == 200 or (
                    kind == "automatic1111" and response.status_code == 401
                ):
                    found = kind
                    break
    except httpx.HTTPError:
        found = None
    _DETECTED[url] = (found, time.monotonic() + NOT_FOUND_RETRY_S)
    return found


def local_base_url(own_env: str, kind: str, *, transport: Any = None) -> str | None:
    """The server URL for a self-hosted provider: its own variable (``A1111_BASE_URL``...),
    else STABLE_DIFFUSION_LOCAL_BASE_URL when the server there is of this ``kind``."""
    own = env(own_env)
    if own is not None:
        return own
    shared = env(LOCAL_SD_ENV)
    if shared is not None and local_server_kind(shared, transport=transport) == kind:
        return shared
    return None
