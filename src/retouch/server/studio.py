"""The studio: the web page at ``/`` (static files shipped in ``retouch/studio``), and the one
read-only route its style gallery needs that the rest of the API does not answer.

The page is plain HTML, CSS and JavaScript modules: nothing is built at install or run time,
nothing is fetched from elsewhere. It is built from ``GET /v1/operations`` and talks to the
same routes as any client (jobs, ``/v1/masks/*``, ``/v1/stylize``), with the user's API key;
the page itself holds nothing secret, so it is served without one (``guard.OPEN_PATHS``).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

from retouch.api import Toolkit

STUDIO_DIR = Path(__file__).resolve().parent.parent / "studio"
"""The page's files, inside the package (included in the wheel as package data)."""


def add_studio(app: FastAPI, toolkit: Toolkit) -> None:
    """``/`` (the page), ``/studio/*`` (its scripts, styles and sample photo) and
    ``GET /v1/styles``."""

    @app.get("/", include_in_schema=False)
    async def studio_page() -> FileResponse:
        return FileResponse(STUDIO_DIR / "index.html", headers={"Cache-Control": "no-cache"})

    app.mount("/studio", StaticFiles(directory=STUDIO_DIR), name="studio")

    @app.get(
        "/v1/styles",
        tags=["operations"],
        summary="The built-in styles of the providers that stylize: index, name and the "
        "value of the style field that picks each",
    )
    async def styles() -> dict[str, Any]:
        providers = await asyncio.to_thread(toolkit.loaded_providers)
        data = []
        for provider in providers:
            if "stylize" not in provider.info.operations:
                continue
            for index, name in enumerate(getattr(provider, "styles", ())):
                data.append(
                    {
                        "provider": provider.info.name,
                        "index": index,
                        "name": name,
                        "style": str(index),
                    }
                )
        return {"object": "list", "data": data}
