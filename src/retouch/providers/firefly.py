"""Adobe Firefly Services: generative fill (inpaint), generative expand (outpaint) and similar
images (variations).

Contract (Adobe Firefly Services docs, AdobeDocs/ff-services-docs: guides/how-tos
``using-async-apis.md``, ``using-fill-image.md``, ``using-expand-image.md``; guides/concepts
``image-upload``, ``masking``, ``placement``; the quickstart's IMS call):

- **Token**: ``POST {IMS}/ims/token/v3`` (form: ``grant_type=client_credentials``,
  ``client_id``, ``client_secret``, ``scope=openid,AdobeID,session,additional_info,
  read_organizations,firefly_api,ff_apis``) -> ``{access_token, expires_in}``; kept until a
  minute before it expires. Every call carries ``x-api-key: <client id>`` and the bearer.
- **Upload**: ``POST /v2/storage/image`` with the raw PNG (``Content-Type: image/png``) ->
  ``{"images": [{"id"}]}``; upload ids live 7 days.
- **Fill**: ``POST /v3/images/fill-async`` ``{image: {source: {uploadId}}, mask: {source:
  {uploadId}}, prompt, negativePrompt, numVariations, seeds}``; the mask is ours (white =
  fill, black = keep).
- **Expand**: ``POST /v3/images/expand-async`` ``{image, size: {width, height}, prompt,
  numVariations, seeds, placement: {inset: {left, top, right, bottom}}}``: the source placed
  with those margins in a canvas of that size; sides 1-2688 px (a bigger canvas is asked
  smaller and scaled back).
- **Similar** (variations): ``POST /v3/images/generate-similar-async`` ``{image,
  numVariations, seeds}``.
- each answers ``{jobId, statusUrl, cancelUrl}``; ``GET /v3/status/{jobId}`` polls it
  (``pending``/``running`` -> ``succeeded`` with ``result.outputs[{seed, image: {url}}]``, or
  ``failed``/``canceled``); ``PUT /v3/cancel/{jobId}`` cancels it. numVariations 1-4, seeds as
  many as numVariations, prompts up to 1024 characters.
- output URLs are pre-signed storage URLs: fetched **without** the API's Authorization header
  (S3 refuses a request that carries two kinds of authentication).
- a create is never re-sent after a read timeout (it may run and be billed); polls are.

Credentials: FIREFLY_CLIENT_ID and FIREFLY_CLIENT_SECRET (an OAuth server-to-server
credential from the Adobe Developer Console). FIREFLY_BASE_URL (default
https://firefly-api.adobe.io) and FIREFLY_IMS_URL (default https://ims-na1.adobelogin.com)
point elsewhere, for tests.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from retouch.compose import output_size, resize_pixels
from retouch.errors import (
    AuthenticationError,
    Cancelled,
    InvalidRequest,
    ProviderTimeout,
    ServerError,
    UnsupportedOperation,
)
from retouch.remote import (
    RemoteClient,
    decode_rgb,
    env,
    grey_png,
    missing,
    png_bytes,
    sized,
)
from retouch.results import ImageResult, OutputImage
from retouch.types import (
    InpaintRequest,
    OperationSpec,
    OutpaintRequest,
    Progress,
    ProgressCallback,
    ProviderInfo,
    ProviderStatus,
    Request,
    VariationsRequest,
    parse_options,
)

NAME = "firefly"
DEFAULT_BASE_URL = "https://firefly-api.adobe.io"
DEFAULT_IMS_URL = "https://ims-na1.adobelogin.com"
SCOPE = "openid,AdobeID,session,additional_info,read_organizations,firefly_api,ff_apis"
MAX_VARIATIONS = 4
PROMPT_MAX = 1024
MAX_SIDE = 2688
MAX_SEED = 2**31 - 1
TOKEN_MARGIN_S = 60.0
WORKING_SIZE = 2048
TIMEOUT_S = 120.0


@dataclass(frozen=True)
class FireflyOptions:
    poll_interval: float = 2.0
    timeout: float = 600.0
    """Seconds a job may take; then it is cancelled."""

    def __post_init__(self) -> None:
        if self.poll_interval <= 0 or self.timeout <= 0:
            raise ValueError("poll_interval and timeout must be positive")


@dataclass
class _Token:
    value: str
    expires: float


class FireflyProvider:
    info = ProviderInfo(
        name=NAME,
        kind="remote",
        description="Adobe Firefly Services: generative fill (inpaint), expand (outpaint), "
        "similar images (variations)",
        operations={
            "inpaint": OperationSpec(
                min_side=16,
                working_size=WORKING_SIZE,
                honours=frozenset({"prompt", "negative_prompt", "n", "seed"}),
                options=FireflyOptions,
            ),
            "outpaint": OperationSpec(
                min_side=16, honours=frozenset({"prompt", "seed"}), options=FireflyOptions
            ),
            "variations": OperationSpec(
                min_side=16,
                max_side=MAX_SIDE,
                honours=frozenset({"n", "seed"}),
                options=FireflyOptions,
            ),
        },
        priority=-10,
    )

    def __init__(self, transport: Any = None) -> None:
        self.transport = transport
        self._tokens: dict[tuple[str, str], _Token] = {}
        self._lock = threading.Lock()

    # --- credentials -------------------------------------------------------------------

    @staticmethod
    def _credentials() -> tuple[str, str]:
        client_id, secret = env("FIREFLY_CLIENT_ID"), env("FIREFLY_CLIENT_SECRET")
        if client_id is None:
            raise missing("the Firefly client id", "FIREFLY_CLIENT_ID", NAME)
        if secret is None:
            raise missing("the Firefly client secret", "FIREFLY_CLIENT_SECRET", NAME)
        return client_id, secret

    def status(self) -> ProviderStatus:
        try:
            self._credentials()
        except AuthenticationError as error:
            return ProviderStatus(False, str(error), error)
        return ProviderStatus(True, f"credentials set; {self._base()}")

    @staticmethod
    def _base() -> str:
        return env("FIREFLY_BASE_URL", DEFAULT_BASE_URL) or DEFAULT_BASE_URL

    def _token(self, *, fresh: bool = False) -> str:
        """An IMS access token, kept until a minute before it expires."""
        client_id, secret = self._credentials()
        ims = env("FIREFLY_IMS_URL", DEFAULT_IMS_URL) or DEFAULT_IMS_URL
        key = (ims, client_id)
        with self._lock:
            cached = self._tokens.get(key)
            if cached is not None and not fresh and time.monotonic() < cached.expires:
                return cached.value
            try:
                answer = (
                    RemoteClient(NAME, ims, transport=self.transport, timeout=60.0)
                    .request(
                        "POST",
                        "/ims/token/v3",
                        data={
                            "grant_type": "client_credentials",
                            "client_id": client_id,
                            "client_secret": secret,
                            "scope": SCOPE,
                        },
                        resend=True,  # asking for a token twice costs nothing
                    )
                    .json()
                )
            except InvalidRequest as exc:  # IMS answers 400 invalid_client for a bad secret
                raise AuthenticationError(
                    f"Adobe IMS refused the credentials ({exc}); check FIREFLY_CLIENT_ID and "
                    "FIREFLY_CLIENT_SECRET",
                    provider=NAME,
                ) from exc
            value = answer.get("access_token")
            if not value:
                raise AuthenticationError(f"IMS answered no access token: {answer}", provider=NAME)
            lifetime = float(answer.get("expires_in", 3600))
            self._tokens[key] = _Token(
                str(value), time.monotonic() + max(0.0, lifetime - TOKEN_MARGIN_S)
            )
            return str(value)

    def _client(self, token: str) -> RemoteClient:
        client_id, _ = self._credentials()
        return RemoteClient(
            NAME,
            self._base(),
            headers={"x-api-key": client_id, "Authorization": f"Bearer {token}"},
            transport=self.transport,
            timeout=TIMEOUT_S,
            still_running="see your Firefly usage in the Adobe Developer Console before trying again",
        )

    # --- operations ----------------------------------------------------------------------

    def run(self, request: Request, progress: ProgressCallback) -> ImageResult:
        if not isinstance(request, (InpaintRequest, OutpaintRequest, VariationsRequest)):
            raise UnsupportedOperation(f"{NAME} does not do {request.operation}")
        options = parse_options(FireflyOptions, request.options, provider=NAME)
        return self._run(request, options, _Session(self), progress)

    def _run(
        self,
        request: InpaintRequest | OutpaintRequest | VariationsRequest,
        options: FireflyOptions,
        client: _Session,
        progress: ProgressCallback,
    ) -> ImageResult:
        rgb = request.image.rgb8()
        size = (rgb.shape[1], rgb.shape[0])
        n = getattr(request, "n", 1)
        if not 1 <= n <= MAX_VARIATIONS:
            raise InvalidRequest(
                f"{NAME}: Firefly makes 1-{MAX_VARIATIONS} images per request", param="n"
            )
        seeds = _seeds(request.seed, n)
        body: dict[str, Any] = {"numVariations": n}
        if seeds is not None:
            body["seeds"] = seeds
        if isinstance(request, InpaintRequest):
            path = "/v3/images/fill-async"
            body.update(
                image={"source": {"uploadId": self._upload(client, png_bytes(rgb))}},
                mask={"source": {"uploadId": self._upload(client, grey_png(request.mask.array))}},
            )
            _prompt(body, "prompt", request.prompt)
            _prompt(body, "negativePrompt", request.negative_prompt)
        elif isinstance(request, OutpaintRequest):
            path = "/v3/images/expand-async"
            size = (
                size[0] + request.left + request.right,
                size[1] + request.top + request.bottom,
            )
            # A canvas over 2688 px a side is asked smaller (source and margins scaled alike).
            scale = min(1.0, MAX_SIDE / max(size))
            source = rgb
            if scale < 1.0:
                source = resize_pixels(
                    rgb, (max(1, round(rgb.shape[1] * scale)), max(1, round(rgb.shape[0] * scale)))
                )
            inset = {
                "left": round(request.left * scale),
                "top": round(request.top * scale),
            }
            canvas = (round(size[0] * scale), round(size[1] * scale))
            inset["right"] = max(0, canvas[0] - inset["left"] - source.shape[1])
            inset["bottom"] = max(0, canvas[1] - inset["top"] - source.shape[0])
            body.update(
                image={"source": {"uploadId": self._upload(client, png_bytes(source))}},
                size={"width": canvas[0], "height": canvas[1]},
                placement={"inset": inset},
            )
            _prompt(body, "prompt", request.prompt)
        else:
            path = "/v3/images/generate-similar-async"
            if request.prompt or request.strength != 0.6:
                raise UnsupportedOperation(f"{NAME}: similar images take no prompt or strength")
            size = output_size(request)
            body.update(image={"source": {"uploadId": self._upload(client, png_bytes(rgb))}})
        job = client.request("POST", path, json=body).json()
        result = self._wait(client, job, options, progress)
        downloads = RemoteClient(NAME, self._base(), transport=self.transport, timeout=TIMEOUT_S)
        outputs: list[NDArray[np.uint8]] = []
        output_seeds: list[int | None] = []
        for output in result.get("outputs") or []:
            data = downloads.get_bytes(output["image"]["url"])  # pre-signed: no API headers
            outputs.append(decode_rgb(data, provider=NAME)[:, :, :3])
            output_seeds.append(int(output["seed"]) if output.get("seed") is not None else None)
        if not outputs:
            raise ServerError(f"job {job.get('jobId')} succeeded without an output", provider=NAME)
        pixels, report = sized(outputs, size)
        return ImageResult(
            images=[
                OutputImage(pixels=p, seed=s) for p, s in zip(pixels, output_seeds, strict=True)
            ],
            provider=NAME,
            model="firefly",
            usage={"output_size": report, "job": job.get("jobId")},
        )

    def _upload(self, client: _Session, png: bytes) -> str:
        answer = client.request(
            "POST",
            "/v2/storage/image",
            content=png,
            headers={"Content-Type": "image/png"},
            resend=True,  # storing the same picture twice is not billed
        ).json()
        return str(answer["images"][0]["id"])

    def _wait(
        self,
        client: _Session,
        job: dict[str, Any],
        options: FireflyOptions,
        progress: ProgressCallback,
    ) -> dict[str, Any]:
        job_id = str(job.get("jobId"))
        status_url = job.get("statusUrl") or f"/v3/status/{job_id}"
        deadline = time.monotonic() + options.timeout
        while True:
            state = client.request("GET", status_url).json()
            status = str(state.get("status", "")).lower()
            if status == "succeeded":
                progress(Progress("firefly", 1, 1))
                result: dict[str, Any] = state.get("result") or state
                return result
            if status == "failed":
                raise ServerError(
                    f"job {job_id} failed: {state.get('message') or state.get('error_code') or state}",
                    provider=NAME,
                )
            if status in ("canceled", "cancelled"):
                raise Cancelled(f"{NAME}: job {job_id} was cancelled")
            try:
                progress(Progress("firefly", 0, 1))
            except Cancelled:
                self._cancel(client, job)
                raise
            if time.monotonic() + options.poll_interval > deadline:
                self._cancel(client, job)
                raise ProviderTimeout(
                    f"job {job_id} did not finish in {options.timeout:g} s; it was cancelled",
                    provider=NAME,
                )
            time.sleep(options.poll_interval)

    @staticmethod
    def _cancel(client: _Session, job: dict[str, Any]) -> None:
        url = job.get("cancelUrl") or f"/v3/cancel/{job.get('jobId')}"
        client.request("PUT", url)


class _Session:
    """The API client with its token; a request refused for the token (revoked, or expired
    early) is sent once more with a new token, unless it may have started billed work."""

    def __init__(self, provider: FireflyProvider) -> None:
        self.provider = provider
        self.client = provider._client(provider._token())

    def request(self, method: str, path: str, *, resend: bool | None = None, **kwargs: Any) -> Any:
        try:
            return self.client.request(method, path, resend=resend, **kwargs)
        except AuthenticationError:
            safe = resend if resend is not None else method.upper() in ("GET", "PUT", "DELETE")
            if not safe:
                raise
            self.client = self.provider._client(self.provider._token(fresh=True))
            return self.client.request(method, path, resend=resend, **kwargs)


def _seeds(seed: int | None, n: int) -> list[int] | None:
    """As many seeds as variations (the API's rule): seed, seed + 1, ..."""
    if seed is None:
        return None
    if seed + n - 1 > MAX_SEED:
        raise InvalidRequest(f"{NAME}: seeds go up to {MAX_SEED}", param="seed")
    return [seed + i for i in range(n)]


def _prompt(body: dict[str, Any], key: str, text: str | None) -> None:
    if not text:
        return
    if len(text) > PROMPT_MAX:
        raise InvalidRequest(f"{NAME}: prompts are at most {PROMPT_MAX} characters", param="prompt")
    body[key] = text
