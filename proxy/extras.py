"""Optional extras (`pip install 'speclearn[EXTRA]'`): one clear line when one is missing.

A feature that needs an extra checks for it where it starts (the command line), so the user
reads which extra, why, and the exact pip command, never an ImportError traceback.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .settings import Settings


class MissingExtra(ImportError):
    """An optional extra a configured feature needs is not installed."""

    def __init__(self, extra: str, feature: str, detail: str = "") -> None:
        self.extra = extra
        more = f" ({detail})" if detail else ""
        super().__init__(f"{feature} needs the `{extra}` extra{more}: pip install 'speclearn[{extra}]'")


def check_storage(settings: Settings) -> None:
    """Raise MissingExtra now if the configured storage needs an extra that is not installed;
    `proxy.pg` is where asyncpg is first imported (by both PostgreSQL backends and the lock)."""
    if settings.database_url:
        from . import pg  # noqa: F401
    if settings.ledger_content == "redacted":  # the ledger redacts with the `redact` extra
        from . import redaction  # noqa: F401
