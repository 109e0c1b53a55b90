"""Serving the app with uvicorn, with what uvicorn does not do by itself.

- A client has ``header_timeout_s`` to send its request headers (a slow-drip client holds
  no connection for long): uvicorn's own keep-alive timer is reset by every byte that
  arrives, so headers sent a byte at a time would keep a connection forever.
- On SIGTERM/SIGINT the jobs hear about it at once: new ones are refused, running ones get
  the grace, then are cancelled (their workers stopped), so event streams send their final
  event before uvicorn closes the connections.
"""

from __future__ import annotations

import asyncio
from types import FrameType
from typing import Any

import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol


class HeaderDeadline(H11Protocol):
    """h11 with a deadline for each request's headers."""

    header_timeout: float = 10.0
    _header_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        self._arm()

    def _arm(self) -> None:
        self._header_timer = self.loop.call_later(self.header_timeout, self._too_slow)

    def handle_events(self) -> None:
        super().handle_events()
        if self.cycle is not None and self._header_timer is not None:  # headers are in
            self._header_timer.cancel()
            self._header_timer = None

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self._header_timer is None and not self.transport.is_closing():
            self._arm()  # the next request on this connection gets the same deadline

    def _too_slow(self) -> None:
        self._header_timer = None
        if self.cycle is None and not self.transport.is_closing():
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None
        super().connection_lost(exc)


class Server(uvicorn.Server):
    loop: asyncio.AbstractEventLoop | None = None
    stopping: asyncio.Future[None] | None = None

    async def startup(self, sockets: Any = None) -> None:
        self.loop = asyncio.get_running_loop()
        await super().startup(sockets)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        """The jobs' shutdown starts now (new ones refused, running ones given the grace,
        then cancelled), while uvicorn waits for connections to close."""
        service = getattr(getattr(self.config.app, "state", None), "service", None)
        if service is not None and self.loop is not None and self.stopping is None:
            grace = service.settings.shutdown_grace_s
            self.stopping = asyncio.run_coroutine_threadsafe(  # type: ignore[assignment]
                service.jobs.shutdown(grace), self.loop
            )
        super().handle_exit(sig, frame)


def config(app: Any, *, host: str, port: int, **extra: Any) -> uvicorn.Config:
    """uvicorn's configuration for ``app`` (from ``create_app``) with the header deadline."""
    settings = app.state.service.settings
    protocol = type("Protocol", (HeaderDeadline,), {"header_timeout": settings.header_timeout_s})
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        http=protocol,
        timeout_keep_alive=5,
        # Jobs get their grace first (handle_exit), then their final events go out.
        timeout_graceful_shutdown=int(settings.shutdown_grace_s + settings.stop_grace_s + 5),
        **extra,
    )


def serve(app: Any, *, host: str, port: int) -> None:
    """Run ``app`` until SIGTERM/SIGINT."""
    Server(config(app, host=host, port=port)).run()
