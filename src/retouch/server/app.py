"""The FastAPI app: native routes per operation, OpenAI-compatible image routes, the
/sd-inpaint API, async jobs with server-sent events, health, readiness and metrics.

The native routes, their request models and their OpenAPI are generated from the declaration
(``retouch.types``, through ``retouch.server.schema``): one handler serves every operation.
Every error leaves as ``{"error": {"message", "type", "param", "code"}}`` with a status from
``retouch.server.errors``; a 500 never carries a stack trace.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import logging
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException

from retouch import imageio
from retouch._version import __version__
from retouch.api import Toolkit
from retouch.declaration import FieldSpec, check_given, request_fields
from retouch.errors import Cancelled, InvalidRequest, RetouchError, UnsupportedOperation
from retouch.results import ImageResult
from retouch.server import urlfetch
from retouch.server.errors import HTTPProblem, body, for_exception
from retouch.server.guard import Guard, sign_link, signed_link_valid
from retouch.server.jobs import JobManager, JobStore
from retouch.server.limits import Limiter
from retouch.server.schema import (
    IMAGE_KINDS,
    RESPONSE_FORMAT,
    fields_model,
    form_fields,
    parse_fields,
    request_body,
)
from retouch.server.settings import ServerSettings
from retouch.server.studio import add_studio
from retouch.server.workers import Executor, ProcessExecutor, Task, ThreadExecutor
from retouch.types import MASK_KINDS, InpaintRequest, Operation, Progress, mask_word

log = logging.getLogger("retouch.server")
OUTPUT_FORMATS = {"png": "PNG", "jpeg": "JPEG", "webp": "WEBP"}
OPENAI_SIZES = {"256x256", "512x512", "1024x1024", "1536x1024", "1024x1536", "auto"}


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorBody(BaseModel):
    """Every error's shape (OpenAI's)."""

    error: ErrorDetail


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody, "description": text}
    for status, text in (
        (400, "bad input: the message names the field"),
        (401, "an API key is required"),
        (413, "an upload or an image over the limits"),
        (415, "not multipart/form-data or JSON"),
        (429, "queue full: retry after Retry-After seconds"),
        (503, "no provider is ready for this"),
        (504, "the request took longer than the server allows"),
    )
}


@dataclass(frozen=True)
class Route:
    """One generated operation route: its fields, their model, and fixed values."""

    operation: Operation
    fields: list[FieldSpec]
    model: type[BaseModel]
    fixed: Mapping[str, Any] = field(default_factory=dict)
    """Values the route sets itself (``/v1/masks/subject`` is the mask operation with kind
    subject)."""

    @property
    def image_names(self) -> set[str]:
        return {s.name for s in self.fields if s.kind in IMAGE_KINDS}


@dataclass
class Service:
    toolkit: Toolkit
    settings: ServerSettings
    limiter: Limiter
    jobs: JobManager
    routes: dict[str, Route]
    executor: Executor


# --- metrics ------------------------------------------------------------------------------


def _metrics(service_jobs: Callable[[], JobManager], limiter: Limiter) -> Any:
    from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

    registry = CollectorRegistry()
    requests = Counter(
        "retouch_requests_total", "HTTP requests", ["route", "status"], registry=registry
    )
    latency = Histogram(
        "retouch_request_seconds",
        "HTTP request latency",
        ["route"],
        registry=registry,
        buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120),
    )
    depth = Gauge("retouch_queue_depth", "requests and jobs waiting for a model", registry=registry)
    depth.set_function(lambda: limiter.depth + service_jobs().queue_depth)
    outcomes = Gauge(
        "retouch_jobs_total", "finished jobs by outcome", ["outcome"], registry=registry
    )
    for outcome in ("succeeded", "failed", "cancelled"):

        def count(o: str = outcome) -> float:
            return float(service_jobs().outcomes.get(o, 0))

        outcomes.labels(outcome).set_function(count)
    return registry, requests, latency


# --- reading requests -----------------------------------------------------------------------

Images = dict[str, bytes | str]
"""Image fields: uploaded bytes, or (mask fields only) a word ('subject', 'background',
'faces') or a 'click:...' / 'text:...' mask made from the image."""


async def _decode_text_image(service: Service, name: str, value: str) -> bytes | str:
    """An image given as text: a data URI, base64, an http(s) URL (when allowed; fetched off
    the event loop) or, for masks, a word or a click:/text: mask. Never a path on the server."""
    text = value.strip()
    if name == "mask" and mask_word(text) is not None:  # made from the image by a provider
        return text
    if text.startswith(("http://", "https://")):
        if not service.settings.allow_image_urls:
            raise InvalidRequest(
                f"{name}: image URLs are turned off on this server; send the image itself",
                param=name,
            )
        return await asyncio.to_thread(
            urlfetch.fetch_public,
            text,
            max_bytes=service.settings.max_upload_bytes,
            allow_hosts=service.settings.url_allow_hosts,
        )
    limit = service.settings.max_upload_bytes
    if len(text) * 3 // 4 > limit + 3:  # counted as what it decodes to, before decoding
        raise HTTPProblem(
            413,
            f"{name} is over the upload limit of {limit} bytes",
            "invalid_request_error",
            param=name,
        )
    try:
        if len(text) > 2**16:  # big ones off the event loop
            return await asyncio.to_thread(imageio.decode_text_image, text, name)
        return imageio.decode_text_image(text, name)
    except InvalidRequest:
        raise InvalidRequest(
            f"{name}: send the image as a file upload, base64 or a data URI", param=name
        ) from None


async def _read_upload(service: Service, name: str, upload: UploadFile) -> bytes:
    data = await upload.read(service.settings.max_upload_bytes + 1)
    if len(data) > service.settings.max_upload_bytes:
        raise HTTPProblem(
            413,
            f"{name} is over the upload limit of {service.settings.max_upload_bytes} bytes",
            "invalid_request_error",
            param=name,
        )
    return data


async def read_input(
    service: Service, request: Request, image_names: set[str]
) -> tuple[dict[str, Any], Images]:
    """Fields and images from a JSON body or a multipart/urlencoded form."""
    content_type = request.headers.get("content-type", "")
    fields: dict[str, Any] = {}
    images: Images = {}
    if content_type.startswith("application/json"):
        try:
            raw = await request.body()
            data = await asyncio.to_thread(json.loads, raw) if len(raw) > 2**16 else json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
            raise InvalidRequest("the body is not valid JSON (or is nested too deeply)") from None
        if not isinstance(data, dict):
            raise InvalidRequest("the JSON body must be an object of fields")
        for key, value in data.items():
            if key == "options" and not isinstance(value, dict):  # JSON has objects for it
                raise InvalidRequest("options must be an object of provider options", param=key)
            if key in image_names:
                if not isinstance(value, str):
                    raise InvalidRequest(
                        f"{key} must be a base64 string, a data URI or a URL", param=key
                    )
                images[key] = await _decode_text_image(service, key, value)
            else:
                fields[key] = value
        return fields, images
    if content_type.startswith(("multipart/form-data", "application/x-www-form-urlencoded")):
        try:
            form = await request.form(max_files=8, max_fields=64)
        except Exception as exc:  # the multipart parser's own errors
            raise InvalidRequest(f"the form could not be read: {exc}") from None
        for key, value in form.multi_items():
            name = key[:-2] if key.endswith("[]") else key
            if name in images:
                raise InvalidRequest(
                    f"{name}: send one image (several are not supported here)", param=name
                )
            if isinstance(value, UploadFile):
                if name not in image_names:
                    raise InvalidRequest(
                        f"{name} is not an image field; image fields: {', '.join(sorted(image_names))}",
                        param=name,
                    )
                images[name] = await _read_upload(service, name, value)
            elif name in image_names:
                images[name] = await _decode_text_image(service, name, value)
            else:
                fields[name] = value
        return fields, images
    raise HTTPProblem(415, "send multipart/form-data or application/json", "invalid_request_error")


# --- running ------------------------------------------------------------------------------


async def execute(
    service: Service,
    task: Task,
    request: Request | None = None,
    progress: Callable[[Progress], None] = lambda _: None,
) -> ImageResult:
    """Run a task under the request timeout; a client that goes away cancels it. A cancel
    stops the work itself (the worker is killed if it does not stop in time), not only the
    wait for it."""
    cancel = asyncio.Event()
    why: list[str] = []

    def stop(reason: str) -> None:
        why.append(reason)
        cancel.set()

    timer = asyncio.get_running_loop().call_later(
        service.settings.request_timeout_s, stop, "timeout"
    )
    watcher = asyncio.ensure_future(_watch_client(request, stop)) if request else None
    try:
        return await service.executor.run(task, progress, cancel)
    except Cancelled:
        if why and why[0] == "timeout":
            raise HTTPProblem(
                504,
                f"the request took longer than {service.settings.request_timeout_s:g} s; "
                "its work was stopped",
                "timeout",
            ) from None
        raise
    finally:
        timer.cancel()
        if watcher is not None:
            watcher.cancel()


async def _watch_client(request: Request, stop: Callable[[str], None]) -> None:
    while True:
        await asyncio.sleep(0.25)
        if await request.is_disconnected():
            stop("client gone")
            return


def _encode(
    level: int, result: ImageResult, index: int, fmt: str, quality: int | None = None
) -> bytes:
    """One result image as a file (``level``: PNG zlib level)."""
    image = result.images[index]
    parameters = dict(
        result.parameters, seed=image.seed, provider=result.provider, model=result.model
    )
    return imageio.encode_image(
        image,
        fmt,
        parameters=parameters,
        quality=quality,
        compress_level=level,
    )


async def image_response(service: Service, result: ImageResult, fmt: str) -> Response:
    headers = {"X-Provider": result.provider}
    if result.model:
        headers["X-Model"] = str(result.model)
    if result.image.seed is not None:
        headers["X-Seed"] = str(result.image.seed)
    if result.warnings:
        headers["X-Retouch-Warnings"] = str(len(result.warnings))
    media = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp"}[fmt]
    data = await asyncio.to_thread(
        _encode, service.settings.png_compress_level, result, 0, fmt
    )  # off the event loop
    return Response(data, media_type=media, headers=headers)


async def json_result(service: Service, result: ImageResult) -> dict[str, Any]:
    meta = result.metadata()
    encoded = [
        await asyncio.to_thread(_encode, service.settings.png_compress_level, result, i, "PNG")
        for i in range(len(result.images))
    ]
    meta["images"] = [
        {**info, "b64_json": base64.b64encode(data).decode("ascii")}
        for info, data in zip(meta["images"], encoded, strict=True)
    ]
    return meta


def _output_format(fields: dict[str, Any], request: Request) -> str:
    fmt = str(fields.pop("response_format", "") or "").lower()
    if not fmt:
        return "json" if "application/json" in request.headers.get("accept", "") else "png"
    if fmt not in (*OUTPUT_FORMATS, "json"):
        raise InvalidRequest(
            f"response_format must be png, jpeg, webp or json, not {fmt!r}",
            param="response_format",
        )
    return fmt


def make_route(toolkit: Toolkit, operation: Operation, kind: str | None = None) -> Route:
    """The route of an operation, or of one kind of it (``/v1/masks/grow``): the fields that
    kind takes, the options of the providers that make it."""
    cls = toolkit.operations[operation]
    fixed = {"kind": kind} if kind is not None else {}
    fields = [
        s
        for s in form_fields(cls, toolkit.option_fields(operation, kind))
        if s.name not in fixed
        and (kind is None or not s.param.only_for or kind in s.param.only_for)
    ]
    return Route(operation, fields, fields_model(f"{operation}-{kind or ''}", fields), fixed)


def _parse(route: Route, raw: Mapping[str, Any], images: Images) -> dict[str, Any]:
    """The client's fields parsed and checked alone (no image decoded yet)."""
    values = parse_fields(route.operation, route.model, route.fields, raw)
    check_given(route.fields, values)
    missing = [
        s.name
        for s in route.fields
        if s.kind in IMAGE_KINDS and s.required and s.name not in images
    ]
    if missing:
        raise InvalidRequest(
            f"{route.operation}: missing image field(s) {', '.join(missing)}", param=missing[0]
        )
    return {**values, **images, **route.fixed}


# --- the app ------------------------------------------------------------------------------


def create_app(toolkit: Toolkit | None = None, settings: ServerSettings | None = None) -> FastAPI:
    settings = settings or ServerSettings.from_env()
    # The server's pixel limit holds whatever toolkit is given; its providers are shared.
    toolkit = Toolkit(
        registry=toolkit.registry if toolkit else None,
        max_pixels=settings.max_pixels,
        operations=toolkit.operations if toolkit else None,
        model_paths=settings.model_paths,  # clients name models; files only from these folders
        max_memory=settings.max_memory,
    )
    limiter = Limiter(settings.concurrency, settings.queue_size)
    executor: Executor = (
        ProcessExecutor(
            toolkit,
            settings.workers,
            memory_limit=settings.worker_memory,
            stop_grace=settings.stop_grace_s,
        )
        if settings.workers
        else ThreadExecutor(toolkit)
    )
    job_dir = (
        Path(settings.job_dir) if settings.job_dir else Path(tempfile.mkdtemp("-retouch-jobs"))
    )
    store = JobStore(job_dir, settings.job_store_bytes)
    routes: dict[str, Route] = {op: make_route(toolkit, op) for op in toolkit.operations}
    if "mask" in toolkit.operations:  # /v1/masks/subject, /v1/masks/grow, ...: one per kind
        for kind in MASK_KINDS:
            routes[f"masks/{kind}"] = make_route(toolkit, "mask", kind)
    jobs = JobManager(
        limiter,
        executor,
        store,
        lambda result, index: _encode(settings.png_compress_level, result, index, "PNG"),
        ttl=settings.job_ttl_s,
        max_jobs=settings.max_jobs,
    )
    service = Service(toolkit, settings, limiter, jobs, routes, executor)
    registry, requests_total, latency = _metrics(lambda: service.jobs, limiter)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await asyncio.to_thread(_warm_up, toolkit)
        await executor.start()
        jobs.closing = False  # an app may be started again after a stop
        jobs.restore()
        try:
            yield
        finally:
            await jobs.shutdown(settings.shutdown_grace_s)
            await executor.close()

    app = FastAPI(
        title="retouch",
        version=__version__,
        description="AI image editing over HTTP: native routes per operation (generated from "
        "the operations' declaration; GET /v1/operations lists them), OpenAI-compatible "
        "/v1/images/edits and /variations, /sd-inpaint, and async jobs with progress.",
        lifespan=lifespan,
        # Counted as the body streams in (chunked too): three images at the upload limit
        # and the form around them.
        max_body_size=settings.max_upload_bytes * 3 + 2**20,
    )
    app.state.service = service

    def problem(exc: Exception) -> JSONResponse:
        status, payload, headers = for_exception(exc)
        if status == 500:
            log.exception("unexpected error", exc_info=exc)
        return JSONResponse(payload, status_code=status, headers=headers)

    @app.exception_handler(RetouchError)
    async def _retouch_error(_: Request, exc: RetouchError) -> JSONResponse:
        return problem(exc)

    @app.exception_handler(HTTPProblem)
    async def _http_problem(_: Request, exc: HTTPProblem) -> JSONResponse:
        return problem(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p not in ("body", "path"))
        return JSONResponse(
            body(
                f"{where}: {first.get('msg', 'invalid')}",
                "invalid_request_error",
                param=where or None,
            ),
            status_code=400,
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        kind = {404: "not_found", 405: "method_not_allowed"}.get(
            exc.status_code, "invalid_request_error"
        )
        headers = dict(exc.headers or {})
        if exc.status_code == 405:  # every method the path takes, not the first route's
            headers["Allow"] = ", ".join(_methods(app, request.scope))
        return JSONResponse(
            body(str(exc.detail), kind), status_code=exc.status_code, headers=headers
        )

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        return problem(exc)

    def observe(route: str, status: int, seconds: float) -> None:
        requests_total.labels(route, str(status)).inc()
        latency.labels(route).observe(seconds)

    app.add_middleware(
        Guard,
        keys=settings.api_keys,
        signed=lambda scope: signed_link_valid(settings.url_secret, scope),
        observe=observe,
    )

    if settings.cors_origins:  # outside the key check, so a browser's preflight gets through
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(settings.cors_origins),
            allow_methods=["GET", "POST", "DELETE", "OPTIONS"],
            allow_headers=["Authorization", "X-API-Key", "Content-Type"],
            expose_headers=["X-Seed", "X-Provider", "X-Model", "X-Retouch-Mode", "Retry-After"],
        )

    # --- health ---------------------------------------------------------------------------

    @app.get("/health", summary="Liveness")
    async def health() -> dict[str, str]:
        return {"status": "ok", "version": __version__}

    @app.get("/ready", summary="Readiness: which providers can run")
    async def ready() -> JSONResponse:
        reports = await asyncio.to_thread(toolkit.providers)
        providers = {
            r.name: {"ready": r.ready, "operations": r.operations, "detail": r.detail}
            for r in reports
        }
        ok = any(r.ready for r in reports)
        return JSONResponse({"ready": ok, "providers": providers}, status_code=200 if ok else 503)

    @app.get(
        "/metrics",
        summary="Prometheus metrics",
        response_class=Response,
        responses={200: {"content": {"text/plain": {}}}},
    )
    async def metrics() -> Response:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    @app.get(
        "/v1/operations",
        tags=["operations"],
        summary="Every operation with its fields (type, range, default, help) and the "
        "providers that can run it now",
    )
    async def operations() -> JSONResponse:
        described = await asyncio.to_thread(toolkit.describe_operations)
        return JSONResponse({"object": "list", "data": described})

    # --- native routes, one per operation, generated ----------------------------------------

    def native(route: Route) -> Callable[[Request], Awaitable[Response]]:
        async def handler(request: Request) -> Response:
            async with limiter.slot(route.operation):  # a place in line before the body is read
                raw, images = await read_input(service, request, route.image_names)
                fmt = _output_format(raw, request)
                values = _parse(route, raw, images)
                result = await execute(service, Task(route.operation, values), request)
            if fmt == "json":
                return JSONResponse(await json_result(service, result))
            return await image_response(service, result, OUTPUT_FORMATS[fmt])

        return handler

    for path, route in routes.items():
        cls = toolkit.operations[route.operation]
        app.add_api_route(
            f"/v1/{path}",
            native(route),
            methods=["POST"],
            summary=cls.summary if not route.fixed else f"{cls.summary} ({route.fixed})",
            tags=["operations"],
            openapi_extra=request_body(route.fields, [RESPONSE_FORMAT]),
            responses={
                200: {"content": {"image/png": {}, "application/json": {}}},
                **ERROR_RESPONSES,
            },
        )

    # --- jobs ------------------------------------------------------------------------------

    @app.post(
        "/v1/jobs",
        status_code=202,
        tags=["jobs"],
        summary="Start an operation; returns at once",
        openapi_extra=_jobs_openapi(routes),
        responses=ERROR_RESPONSES,
    )
    async def create_job(request: Request) -> JSONResponse:
        jobs.admit()  # before the body is read
        all_images = {n for r in routes.values() for n in r.image_names}
        raw, images = await read_input(service, request, all_images)
        name = str(raw.pop("operation", "") or "")
        if name not in routes:
            raise InvalidRequest(
                f"operation must be one of {', '.join(routes)}, not {name!r}", param="operation"
            )
        route = routes[name]
        unexpected = sorted(set(images) - route.image_names)
        if unexpected:
            raise InvalidRequest(
                f"{name}: unknown image field(s) {', '.join(unexpected)}", param=unexpected[0]
            )
        values = _parse(route, raw, images)
        job = jobs.submit(name, Task(route.operation, values), owner=_owner(request))
        return JSONResponse(
            job.describe(_base(request)),
            status_code=202,
            headers={"Location": f"/v1/jobs/{job.id}"},
        )

    job_answers: dict[int | str, dict[str, Any]] = {
        404: {"model": ErrorBody, "description": "no such job (or another key's)"},
        410: {"model": ErrorBody, "description": "the job's results were deleted"},
    }

    @app.get(
        "/v1/jobs/{job_id}",
        tags=["jobs"],
        summary="A job's status, progress, result or error",
        responses=job_answers,
    )
    async def get_job(job_id: str, request: Request) -> dict[str, Any]:
        return jobs.get(job_id, _owner(request)).describe(_base(request))

    @app.delete("/v1/jobs/{job_id}", tags=["jobs"], summary="Cancel a job", responses=job_answers)
    async def cancel_job(job_id: str, request: Request) -> dict[str, Any]:
        return jobs.cancel(job_id, _owner(request)).describe(_base(request))

    @app.get(
        "/v1/jobs/{job_id}/events",
        tags=["jobs"],
        summary="Server-sent events with progress until the job ends",
        responses={200: {"content": {"text/event-stream": {}}}, **job_answers},
    )
    async def job_events(job_id: str, request: Request) -> StreamingResponse:
        owner = _owner(request)
        jobs.get(job_id, owner)  # 404 / 410 before the stream starts

        async def stream() -> AsyncIterator[bytes]:
            async for state in jobs.events(job_id, owner, _base(request)):
                yield f"event: {state['status']}\ndata: {json.dumps(state)}\n\n".encode()

        return StreamingResponse(
            stream(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"}
        )

    @app.get(
        "/v1/jobs/{job_id}/images/{index}",
        tags=["jobs"],
        summary="A finished job's image (PNG)",
        responses={
            200: {"content": {"image/png": {}}},
            409: {"model": ErrorBody, "description": "the job has no images (yet)"},
            **job_answers,
        },
    )
    async def job_image(job_id: str, index: int, request: Request) -> Response:
        signed = signed_link_valid(settings.url_secret, request.scope)
        job = jobs.get(job_id, None if signed else _owner(request))
        if job.status != "succeeded":
            raise HTTPProblem(409, f"job {job_id} is {job.status}; it has no images", "not_ready")
        if not 0 <= index < job.images:
            raise HTTPProblem(404, f"job {job_id} has {job.images} image(s)", "not_found")
        data = await asyncio.to_thread(jobs.store.image(job_id, index).read_bytes)
        return Response(data, media_type="image/png")

    # --- OpenAI-compatible --------------------------------------------------------------------

    openai_answers: dict[int | str, dict[str, Any]] = {
        **ERROR_RESPONSES,
        404: {"model": ErrorBody, "description": "no such model here"},
    }

    @app.post(
        "/v1/images/edits",
        tags=["openai"],
        summary="OpenAI-compatible image edits (transparent mask = edit; no model + prompt = inpaint)",
        openapi_extra=_form_openapi(
            OpenAIEditForm,
            images=("image", "mask"),
            required=("image", "prompt"),
            models=tuple(settings.model_map),
        ),
        responses=openai_answers,
    )
    async def openai_edits(request: Request) -> JSONResponse:
        async with limiter.slot("images/edits"):  # a place in line before the body is read
            return await _openai(service, request, edits=True)

    @app.post(
        "/v1/images/variations",
        tags=["openai"],
        summary="OpenAI-compatible image variations",
        openapi_extra=_form_openapi(
            OpenAIVariationForm,
            images=("image",),
            required=("image",),
            models=tuple(settings.model_map),
        ),
        responses=openai_answers,
    )
    async def openai_variations(request: Request) -> JSONResponse:
        async with limiter.slot("images/variations"):
            return await _openai(service, request, edits=False)

    # --- /sd-inpaint --------------------------------------------------------------------------

    if settings.sd_inpaint:
        _add_sd_inpaint(app, service)
    add_studio(app, toolkit)
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    return app


def _methods(app: FastAPI, scope: Any) -> list[str]:
    from starlette.routing import Match

    found: set[str] = set()
    for route in app.router.routes:
        if route.matches(scope)[0] != Match.NONE:
            found |= set(getattr(route, "methods", None) or ())
    return sorted(found)


def _openapi(app: FastAPI) -> dict[str, Any]:
    """FastAPI's schema with the answers this service really gives: its validation errors
    are 400s in the one error shape, never 422."""
    if app.openapi_schema:
        return app.openapi_schema
    from fastapi.openapi.utils import get_openapi

    schema = get_openapi(
        title=app.title, version=app.version, description=app.description, routes=app.routes
    )
    error = {"$ref": "#/components/schemas/ErrorBody"}
    for item in schema.get("paths", {}).values():
        for operation in item.values():
            responses = operation.setdefault("responses", {})
            responses.pop("422", None)
            responses.setdefault(
                "400",
                {"description": "bad input", "content": {"application/json": {"schema": error}}},
            )
    for name in ("HTTPValidationError", "ValidationError"):
        schema.get("components", {}).get("schemas", {}).pop(name, None)
    app.openapi_schema = schema
    return schema


def _warm_up(toolkit: Toolkit) -> None:
    """Import OpenCV and check providers once, before requests run on worker threads."""
    import cv2  # noqa: F401 - its first import is not safe to race from many threads

    toolkit.providers()


def _base(request: Request) -> str:
    return str(request.base_url).rstrip("/")


def _owner(request: Request) -> str:
    """The opaque id of the caller's API key (set by the guard)."""
    return str(request.scope.get("state", {}).get("owner", ""))


# --- hand-shaped bodies (contracts of other APIs), declared as models -----------------------------


class OpenAIVariationForm(BaseModel):
    """OpenAI's /v1/images/variations fields (image is an upload)."""

    model_config = ConfigDict(extra="forbid")
    model: str | None = Field(
        None, description="retouch-variations (default) or another mapped model"
    )
    n: int | None = Field(None, ge=1, le=10, description="how many images")
    size: str | None = Field(None, description=", ".join(sorted(OPENAI_SIZES)))
    response_format: str | None = Field(None, description="url or b64_json")
    user: str | None = None


class OpenAIEditForm(OpenAIVariationForm):
    """OpenAI's /v1/images/edits fields (image and mask are uploads)."""

    prompt: str | None = Field(None, max_length=32000)
    output_format: str | None = Field(None, description="png, jpeg or webp")
    output_compression: int | None = Field(None, ge=0, le=100)
    quality: str | None = None
    background: str | None = None
    input_fidelity: str | None = None


def _validate(model: type[BaseModel], raw: Mapping[str, Any], where: str) -> Any:
    from pydantic import ValidationError

    try:
        return model.model_validate(dict(raw))
    except ValidationError as exc:
        first = exc.errors()[0]
        name = str(first["loc"][0]) if first.get("loc") else None
        if first.get("type") == "extra_forbidden":
            raise InvalidRequest(f"{where}: unknown field(s) {name}", param=name) from None
        raise InvalidRequest(f"{where}: {name}: {first.get('msg')}", param=name) from None


def _form_openapi(
    model: type[BaseModel],
    *,
    images: tuple[str, ...],
    required: tuple[str, ...],
    models: tuple[str, ...] = (),
) -> dict[str, Any]:
    schema = model.model_json_schema()
    props = dict(schema.get("properties", {}))
    if models:  # the names this server knows
        props["model"] = {"type": "string", "enum": list(models)}
    for name in images:
        props[name] = {"type": "string", "format": "binary"}
    return {
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": {
                    "schema": {"type": "object", "properties": props, "required": list(required)}
                }
            },
        }
    }


def _jobs_openapi(routes: Mapping[str, Route]) -> dict[str, Any]:
    """One JSON body per operation, told apart by ``operation``."""
    variants = []
    for name, route in routes.items():
        body_schema = request_body(route.fields)["requestBody"]["content"]["application/json"][
            "schema"
        ]
        props = {"operation": {"type": "string", "enum": [name]}, **body_schema["properties"]}
        variants.append(
            {
                "type": "object",
                "properties": props,
                "required": ["operation", *body_schema["required"]],
                "additionalProperties": False,
            }
        )
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {"oneOf": variants}}},
        }
    }


# --- OpenAI routes ------------------------------------------------------------------------------


def _has_alpha(data: bytes | str) -> bool:
    """Whether an uploaded image has an alpha channel (read from its header only)."""
    if not isinstance(data, bytes):
        return False
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as im:
            return "A" in im.getbands() or "transparency" in im.info
    except (UnidentifiedImageError, OSError, ValueError):
        return False  # decoding in the worker says what is wrong with it


async def _openai(service: Service, request: Request, *, edits: bool) -> JSONResponse:
    """OpenAI's image routes on the generic operation routes.

    The model picks the operation; with no model, a prompt inpaints. Masks mean what they mean
    to OpenAI: transparent (alpha 0) = edit, so a fully opaque mask edits nothing (400) and a
    fully transparent one everything; a mask with no alpha is read by brightness (white =
    edit). With no mask, the image's own transparency is the mask if it has any (as DALL-E 2
    did), else the whole image is edited (as GPT image models do)."""
    raw, images = await read_input(service, request, {"image", "mask"} if edits else {"image"})
    form = _validate(OpenAIEditForm if edits else OpenAIVariationForm, raw, "images")
    if "image" not in images:
        raise InvalidRequest("image is required", param="image")
    default = service.settings.default_image_model if edits else "retouch-variations"
    model = str(form.model or default)
    if model not in service.settings.model_map:
        raise HTTPProblem(
            404,
            f"the model {model!r} does not exist here; models: {', '.join(service.settings.model_map)}",
            "model_not_found",
            param="model",
        )
    operation, provider = service.settings.model_map[model]
    values: dict[str, Any] = {"image": images["image"], "provider": provider}
    if edits:
        if not form.prompt:
            raise InvalidRequest("prompt is required", param="prompt")
        for unsupported in ("quality", "background", "input_fidelity"):
            if getattr(form, unsupported) not in (None, "", "auto"):
                raise UnsupportedOperation(
                    f"{unsupported} is not supported by the model {model!r}", param=unsupported
                )
        if form.model is None and operation == "erase":
            operation, values["provider"] = "inpaint", None  # a prompt with no model inpaints
        mask = images.get("mask")
        if mask is None and _has_alpha(images["image"]):
            mask = images["image"]
        if mask is not None:
            values.update(mask=mask, mask_from="alpha" if _has_alpha(mask) else "luminance")
        elif operation == "erase":
            raise InvalidRequest(
                f"the model {model!r} erases what a mask covers: send a mask (transparent = "
                "erase), or an image whose transparent pixels mark the area",
                param="mask",
            )
        else:
            operation = "edit"  # no mask: the whole image, as GPT image models edit
        if operation != "erase":
            values["prompt"] = form.prompt
    if form.n not in (None, 1):
        if operation == "erase":
            raise UnsupportedOperation(f"the model {model!r} returns one image; use n=1", param="n")
        values["n"] = form.n
    size = str(form.size or "auto")
    if size not in OPENAI_SIZES:
        raise InvalidRequest(f"size must be one of {', '.join(sorted(OPENAI_SIZES))}", param="size")
    route = service.routes[operation]
    check_given(route.fields, values)
    result = await execute(service, Task(operation, values), request)
    if size != "auto":
        width, height = (int(v) for v in size.split("x"))
        from retouch.compose import resize_pixels

        for image in result.images:
            image.pixels = resize_pixels(image.pixels, (width, height))
    output_format = str(getattr(form, "output_format", None) or "png")
    if output_format not in OUTPUT_FORMATS:
        raise InvalidRequest("output_format must be png, jpeg or webp", param="output_format")
    compression = getattr(form, "output_compression", None)
    if form.response_format == "url":  # unguessable, signed, expiring: no key needed
        job = await service.jobs.finished(operation, result, owner=_owner(request))
        expires = int(time.time() + service.settings.url_ttl_s)
        data = []
        for i in range(len(result.images)):
            path = f"/v1/jobs/{job.id}/images/{i}"
            signature = sign_link(service.settings.url_secret, path, expires)
            data.append({"url": f"{_base(request)}{path}?expires={expires}&signature={signature}"})
    elif form.response_format in (None, "b64_json"):
        fmt = OUTPUT_FORMATS[output_format]
        quality = max(1, compression) if compression is not None else None
        level = service.settings.png_compress_level
        data = [
            {"b64_json": base64.b64encode(encoded).decode()}
            for encoded in [
                await asyncio.to_thread(_encode, level, result, i, fmt, quality)
                for i in range(len(result.images))
            ]
        ]
    else:
        raise InvalidRequest("response_format must be url or b64_json", param="response_format")
    usage = {
        "input_tokens": 0,
        "output_tokens": 0,
        "total_tokens": 0,
        "input_tokens_details": {"image_tokens": 0, "text_tokens": 0},
    }
    return JSONResponse(
        {
            "created": int(time.time()),
            "data": data,
            "output_format": output_format,
            "size": size,
            "usage": usage,
        }
    )


# --- /sd-inpaint -------------------------------------------------------------------------------

# The /sd-inpaint API's names for InpaintRequest's fields; ranges and help come from there.
SD_NAMES = {"num_inference_steps": "steps", "guidance_scale": "guidance"}
SD_DEFAULTS = {"num_inference_steps": 50, "guidance_scale": 7.5, "seed": 42}
SD_SERVICE = "stable-diffusion-inpaint"


class SDHealth(BaseModel):
    status: str = Field(description="healthy, or unavailable (503)")
    service: str = SD_SERVICE
    model: str | None = Field(description="the model id that serves, when healthy")
    detail: str | None = Field(None, description="what to pull or set, when unavailable")
    fallback: str | None = Field(None, description="erase, when the operator chose it")


class SDInpaintForm(BaseModel):
    model_config = ConfigDict(extra="forbid")
    prompt: str | None = None
    negative_prompt: str | None = None
    num_inference_steps: int | None = None
    guidance_scale: float | None = None
    seed: int | None = None


def _sd_fields() -> list[FieldSpec]:
    import dataclasses

    by_name = {s.name: s for s in request_fields(InpaintRequest)}
    return [
        dataclasses.replace(
            by_name[SD_NAMES.get(name, name)],
            name=name,
            default=SD_DEFAULTS.get(name),
            required=name == "prompt",
            nullable=name != "prompt",
        )
        for name in SDInpaintForm.model_fields
    ]


def _inpainting_model(toolkit: Toolkit) -> tuple[str | None, str]:
    """The inpainting model that would serve, or None and what to do to get one."""
    try:
        provider = toolkit.provider_for("inpaint")
    except RetouchError as exc:
        return None, str(exc)
    status = provider.status()
    return status.model or provider.info.name, ""


def _add_sd_inpaint(app: FastAPI, service: Service) -> None:
    toolkit = service.toolkit
    fields = _sd_fields()
    fallback = service.settings.sd_inpaint_fallback == "erase"
    image_specs = [s for s in request_fields(InpaintRequest) if s.name in ("image", "mask")]

    @app.get(
        "/sd-inpaint/health",
        tags=["sd-inpaint"],
        summary="Whether an inpainting model is loaded, and which",
        response_model=SDHealth,
        responses={503: {"model": SDHealth, "description": "no inpainting model is ready"}},
    )
    async def sd_health() -> JSONResponse:
        model, why = await asyncio.to_thread(_inpainting_model, toolkit)
        if model is not None:
            return JSONResponse({"status": "healthy", "service": SD_SERVICE, "model": model})
        body = {"status": "unavailable", "service": SD_SERVICE, "model": None, "detail": why}
        if fallback:
            body["fallback"] = "erase"
        return JSONResponse(body, status_code=503)

    @app.post(
        "/sd-inpaint/inpaint",
        tags=["sd-inpaint"],
        summary="Inpaint: multipart in, PNG out (X-Seed header)",
        openapi_extra={"requestBody": request_body([*image_specs, *fields])["requestBody"]},
        responses={200: {"content": {"image/png": {}}}, **ERROR_RESPONSES},
    )
    async def sd_inpaint(request: Request) -> Response:
        async with service.limiter.slot("sd-inpaint"):  # a place in line before the body
            return await _sd_inpaint(request)

    async def _sd_inpaint(request: Request) -> Response:
        raw, images = await read_input(service, request, {"image", "mask"})
        form = _validate(SDInpaintForm, raw, "sd-inpaint")
        for name in ("image", "mask"):
            if name not in images:
                raise InvalidRequest(f"{name} is required", param=name)
        given = form.model_dump(exclude_none=True)
        if not given.get("prompt"):
            raise InvalidRequest("prompt is required", param="prompt")
        check_given(fields, given)
        sd = {**SD_DEFAULTS, **given}
        values: dict[str, Any] = {"image": images["image"], "mask": images["mask"]}
        values["mask_from"] = "luminance"
        values["seed"] = sd["seed"]
        model, why = await asyncio.to_thread(_inpainting_model, toolkit)
        if model is not None:
            operation = "inpaint"
            values.update(
                prompt=sd["prompt"],
                negative_prompt=sd.get("negative_prompt"),
                steps=sd["num_inference_steps"],
                guidance=sd["guidance_scale"],
            )
        elif fallback:
            operation = "erase"  # the operator chose it; the header says so
        else:
            raise HTTPProblem(
                503,
                f"no inpainting model is ready ({why}); or set RETOUCH_SD_INPAINT_FALLBACK=erase "
                "to erase the masked area instead",
                "provider_unavailable",
            )
        route = service.routes[operation]
        result = await execute(service, Task(route.operation, values), request)
        response = await image_response(service, result, "PNG")
        response.headers["X-Seed"] = str(
            result.image.seed if result.image.seed is not None else sd["seed"]
        )
        response.headers["X-Retouch-Mode"] = "diffusion" if model else "erase-fallback"
        return response
