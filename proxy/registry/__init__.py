"""Spec storage: versions, labels and instructions behind one interface."""

from __future__ import annotations

from ..settings import Settings
from .base import APPROVED, HELD, LATEST, PRODUCTION, REJECTED, Hold, Registry, RegistrySnapshot, SpecState, SpecVersion
from .files import FileRegistry

__all__ = [
    "APPROVED",
    "HELD",
    "LATEST",
    "REJECTED",
    "Hold",
    "PRODUCTION",
    "FileRegistry",
    "Registry",
    "RegistrySnapshot",
    "SpecState",
    "SpecVersion",
    "open_registry",
]


def open_registry(settings: Settings) -> Registry:
    """The PostgreSQL registry when a database URL is set, else files under `specs_dir`."""
    if settings.database_url:
        from .. import pg  # noqa: F401 - first: without the `postgres` extra, one clear MissingExtra
        from .postgres import PostgresRegistry  # optional extra

        return PostgresRegistry(settings.database_url, poll_interval=settings.registry_poll_interval)
    return FileRegistry(settings.specs_dir, poll_interval=settings.registry_poll_interval)
