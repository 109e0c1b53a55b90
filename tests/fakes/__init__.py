"""Fake services that speak the real APIs' documented contracts, run on 127.0.0.1."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn


@contextmanager
def live(app: Any) -> Iterator[str]:
    """Serve an ASGI app on 127.0.0.1 for the duration; yields its base URL."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_level="warning", timeout_graceful_shutdown=2
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 20
    while not server.started and time.time() < deadline:
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


def toolkit_with(**providers: Any) -> Any:
    """A Toolkit whose only providers are ``providers`` (instances wired to fakes)."""
    from retouch.api import Toolkit
    from retouch.registry import Registry

    return Toolkit(registry=Registry(providers, builtins=False, entry_points=False))
