"""The spec console: server-rendered pages under /console (off unless the admin key is set)."""

from .routes import ROUTES

__all__ = ["ROUTES"]
