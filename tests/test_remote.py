"""The shared remote layer: error shapes, retries, slow services; the example plugin; and
how `retouch providers` reports remote providers without keys."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tomllib
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from retouch.api import Toolkit
from retouch.errors import ProviderTimeout, ServerError
from retouch.registry import Registry
from retouch.remote import RemoteClient, service_message

from .fakes import live

REMOTE = {
    "openai": "OPENAI_API_KEY",
    "stability": "STABILITY_API_KEY",
    "replicate": "REPLICATE_API_TOKEN",
    "vertex": "VERTEX_PROJECT",
    "automatic1111": "A1111_BASE_URL",
    "comfyui": "COMFYUI_BASE_URL",
    "firefly": "FIREFLY_CLIENT_ID",
}


class Answer:
    def __init__(self, body: Any, status: int = 400) -> None:
        self.body, self.status_code = body, status
        self.text = str(body)

    def json(self) -> Any:
        if isinstance(self.body, str):
            raise ValueError
        return self.body


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (
            {"error": {"message": "Invalid mask", "type": "invalid_request_error"}},
            "Invalid mask",
        ),  # OpenAI
        (
            {"id": "1", "name": "bad_request", "errors": ["prompt: required", "seed: too big"]},
            "prompt: required; seed: too big",
        ),  # Stability
        (
            {"error": "HTTPException", "detail": "Not authenticated", "body": "", "errors": ""},
            "HTTPException",
        ),  # A1111
        (
            {"title": "Unauthenticated", "detail": "Invalid token", "status": 401},
            "Invalid token",
        ),  # Replicate
        (
            {"error": {"code": 400, "message": "Bad mask", "status": "INVALID_ARGUMENT"}},
            "Bad mask",
        ),  # Vertex
        ("<html>gateway</html>", "<html>gateway</html>"),
    ],
)
def test_service_messages_of_every_shape(body: Any, expected: str) -> None:
    assert service_message(Answer(body)) == expected


@pytest.mark.slow
def test_slow_and_failing_services(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = {"slow": 0, "down": 0}

    async def slow(request: Request) -> JSONResponse:
        calls["slow"] += 1
        await asyncio.sleep(1.0)
        return JSONResponse({})

    async def down(request: Request) -> JSONResponse:
        calls["down"] += 1
        return JSONResponse({"error": "maintenance"}, status_code=502)

    app = Starlette(routes=[Route("/slow", slow), Route("/down", down)])
    with live(app) as url:
        client = RemoteClient("fake", url, timeout=0.2, retries=2, backoff=0.01)
        with pytest.raises(ProviderTimeout, match="after 3 tries"):
            client.request("GET", "/slow")
        with pytest.raises(ServerError, match="maintenance"):
            client.request("GET", "/down")
    assert calls == {"slow": 3, "down": 3}
    with pytest.raises(ServerError, match="cannot reach"):
        RemoteClient("fake", "http://127.0.0.1:9", retries=0).request("GET", "/")


def test_remote_providers_say_what_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    for variable in (
        *REMOTE.values(),
        "GOOGLE_CLOUD_PROJECT",
        "VERTEX_ACCESS_TOKEN",
        "GOOGLE_OAUTH_ACCESS_TOKEN",
        "STABLE_DIFFUSION_LOCAL_BASE_URL",
    ):
        monkeypatch.delenv(variable, raising=False)
    reports = {r.name: r for r in Toolkit().providers()}
    for name, variable in REMOTE.items():
        assert reports[name].kind == "remote" and not reports[name].ready
        assert variable in reports[name].detail, (name, reports[name].detail)
    monkeypatch.setenv("STABILITY_API_KEY", "k")
    assert {r.name: r for r in Toolkit().providers()}["stability"].ready


def test_the_example_plugin_package_registers_and_runs(
    monkeypatch: pytest.MonkeyPatch, small_photo: np.ndarray
) -> None:
    root = Path(__file__).resolve().parent.parent / "examples" / "retouch-example-provider"
    entry_points = tomllib.loads((root / "pyproject.toml").read_text())["project"]["entry-points"][
        "retouch.providers"
    ]
    monkeypatch.syspath_prepend(str(root / "src"))
    monkeypatch.delitem(sys.modules, "retouch_example_provider", raising=False)
    toolkit = Toolkit(registry=Registry(entry_points))  # what the installed entry point does
    out = toolkit.stylize(small_photo, style="sepia", provider="sepia").image.pixels
    r, g, b = out[..., 0].mean(), out[..., 1].mean(), out[..., 2].mean()
    assert r > g > b  # sepia: warm
    assert np.array_equal(
        toolkit.stylize(small_photo, style="sepia", strength=0, provider="sepia").image.pixels,
        small_photo,
    )


def test_retries_by_safety() -> None:
    import httpx

    answers: list[object] = []
    sent: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(request.method)
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        assert isinstance(answer, httpx.Response)
        return answer

    slept: list[float] = []
    client = RemoteClient(
        "fake",
        "http://svc",
        transport=httpx.MockTransport(handler),
        backoff=0.5,
        sleep=slept.append,
    )
    ok = httpx.Response(200, json={})
    # Never reached the service: a POST is retried too.
    answers[:] = [httpx.ConnectError("refused"), ok]
    client.request("POST", "/jobs")
    assert sent == ["POST", "POST"] and slept == [0.5]
    # Reached it, no answer: a POST is not sent again, a GET is.
    sent.clear()
    answers[:] = [httpx.ReadTimeout("slow")]
    with pytest.raises(ProviderTimeout, match="may still be running"):
        client.request("POST", "/jobs")
    answers[:] = [httpx.ReadTimeout("slow"), ok]
    client.request("GET", "/jobs/1")
    assert sent == ["POST", "GET", "GET"]
    # A gateway timeout on a create: the work may be running behind it.
    sent.clear()
    answers[:] = [httpx.Response(504, json={"error": "upstream timed out"})]
    with pytest.raises(ProviderTimeout, match="gateway timed out"):
        client.request("POST", "/jobs")
    assert sent == ["POST"]
    # Retry-After in milliseconds or as a date; x-should-retry: false is obeyed.
    slept.clear()
    answers[:] = [httpx.Response(429, headers={"retry-after-ms": "250"}), ok]
    client.request("POST", "/jobs")
    assert slept == [0.25]
    answers[:] = [httpx.Response(503, headers={"x-should-retry": "false"}, json={"error": "no"})]
    with pytest.raises(ServerError, match="after 1 tries"):
        client.request("POST", "/jobs")


def test_the_local_server_kind_is_remembered(monkeypatch: pytest.MonkeyPatch) -> None:
    import httpx

    from retouch import remote

    probes: list[str] = []

    def nobody(request: httpx.Request) -> httpx.Response:
        probes.append(request.url.path)
        return httpx.Response(404)

    monkeypatch.setattr(remote, "_DETECTED", {})
    transport = httpx.MockTransport(nobody)
    assert remote.local_server_kind("http://sd", transport=transport) is None
    assert remote.local_server_kind("http://sd", transport=transport) is None
    assert probes == ["/sdapi/v1/options", "/system_stats"]  # not asked again at once
    remote._DETECTED["http://sd"] = (None, 0.0)  # 30 s later
    remote.local_server_kind("http://sd", transport=transport)
    assert len(probes) == 4
