"""The shared write queue: a storage hiccup is retried, a full queue drops and counts, close flushes."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from proxy import metrics
from proxy.ledger.base import Ledger
from proxy.ledger.records import InferenceRecord
from proxy.ledger.sqlite import SqliteLedger


def record(i: int) -> InferenceRecord:
    return InferenceRecord(f"i-{i}", time.time(), "chat", "m", None, None, None, {"messages": []})


async def test_failed_batch_is_retried_not_dropped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("proxy.ledger.base.RETRY_PAUSES", (0.01, 0.01, 0.0))
    ledger = SqliteLedger(tmp_path / "l.db", flush_interval=0)
    await ledger.start()
    real_write = ledger._write_inferences
    failures = [2]

    async def flaky(batch: list[InferenceRecord]) -> None:
        if failures[0]:
            failures[0] -= 1
            raise ConnectionError("database restarting")
        await real_write(batch)

    monkeypatch.setattr(ledger, "_write_inferences", flaky)
    dropped = metrics.LEDGER_DROPPED._value.get()
    ledger.record(record(1))
    await ledger.close()
    await ledger.start()
    assert await ledger.inference_exists("i-1")
    assert metrics.LEDGER_DROPPED._value.get() == dropped
    await ledger.close()


async def test_full_queue_drops_and_counts_without_blocking(tmp_path: Path) -> None:
    ledger: Ledger = SqliteLedger(tmp_path / "l.db", queue_size=3, flush_interval=0.5)
    await ledger.start()
    dropped = metrics.LEDGER_DROPPED._value.get()
    accepted = [ledger.record(record(i)) for i in range(5)]
    assert accepted.count(False) >= 1
    assert metrics.LEDGER_DROPPED._value.get() - dropped == accepted.count(False)
    await ledger.close()  # flushes what was accepted
    await ledger.start()
    stored = [await ledger.inference_exists(f"i-{i}") for i in range(5)]
    assert stored == accepted
    await ledger.close()
