"""The HTTP service: ``create_app(toolkit, settings)`` builds the FastAPI app.

Needs the ``server`` extra: ``pip install 'retouch[server]'``.
"""

from retouch.server.app import create_app
from retouch.server.settings import ServerSettings

__all__ = ["ServerSettings", "create_app"]
