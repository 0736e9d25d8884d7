"""The inference and feedback ledger behind one interface."""

from __future__ import annotations

from typing import Any

from ..settings import Settings
from .base import Ledger
from .content import ContentPolicy
from .records import (
    PAIR,
    SCORE,
    THUMB,
    DecisionRecord,
    FeedbackEvent,
    FeedbackRecord,
    InferenceRecord,
    Outcome,
    ThumbTally,
)

__all__ = [
    "PAIR",
    "SCORE",
    "THUMB",
    "DecisionRecord",
    "FeedbackEvent",
    "FeedbackRecord",
    "InferenceRecord",
    "Ledger",
    "ThumbTally",
    "Outcome",
    "open_ledger",
]


def open_ledger(settings: Settings) -> Ledger:
    """PostgreSQL when a database URL is set, else SQLite under `data_dir`; with the configured
    content policy and retention (docs/data.md)."""
    from ..retention import Retention

    batching: dict[str, Any] = {
        "queue_size": settings.ledger_queue_size,
        "batch_size": settings.ledger_batch_size,
        "flush_interval": settings.ledger_flush_interval,
        "content": ContentPolicy.from_settings(settings),
        "retention": Retention.from_settings(settings),
    }
    if settings.database_url:
        from .. import pg  # noqa: F401 - first: without the `postgres` extra, one clear MissingExtra
        from .postgres import PostgresLedger  # optional extra

        return PostgresLedger(settings.database_url, pool_size=settings.database_pool_size, **batching)
    from .sqlite import SqliteLedger

    return SqliteLedger(settings.ledger_path, **batching)
