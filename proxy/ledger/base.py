"""The ledger interface plus the batching every backend shares.

Inference rows go through a bounded in-memory queue written in batches by one background task,
so the response never waits on storage; when the queue is full the row is dropped and counted.
Feedback is written before it is acknowledged.
"""
from __future__ import annotations

import abc
import asyncio
import contextlib
import logging

from .. import metrics
from ..errors import Conflict
from .records import DecisionRecord, FeedbackEvent, FeedbackRecord, InferenceRecord, Outcome, ThumbTally

log = logging.getLogger(__name__)
RETRY_PAUSES = (0.1, 0.5, 2.0, 0.0)  # pause after each failed attempt; the last attempt gives up


class Ledger(abc.ABC):
    def __init__(self, queue_size: int = 10_000, batch_size: int = 512, flush_interval: float = 0.05) -> None:
        self._queue: asyncio.Queue[InferenceRecord] | None = None
        self._queue_size = queue_size
        self._batch_size = batch_size
        self._flush_interval = flush_interval
        self._pending: dict[str, InferenceRecord] = {}  # queued or being written, by id
        self._writer: asyncio.Task[None] | None = None

    # -- lifecycle -------------------------------------------------------------------------
    async def start(self) -> None:
        await self._open()
        self._queue = asyncio.Queue(self._queue_size)
        self._writer = asyncio.create_task(self._write_loop())

    async def close(self) -> None:
        """Flush what is queued, then release the storage."""
        if self._writer is not None:
            assert self._queue is not None
            await self._queue.join()
            self._writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._writer
            self._writer = None
        await self._close()

    # -- inference rows (hot path) ------------------------------------------------------------
    def record(self, rec: InferenceRecord) -> bool:
        """Queue a row without waiting; False (and counted) when the queue is full."""
        assert self._queue is not None, "ledger not started"
        try:
            self._queue.put_nowait(rec)
        except asyncio.QueueFull:
            metrics.LEDGER_DROPPED.inc()
            return False
        self._pending[rec.id] = rec
        return True

    @property
    def queue_depth(self) -> int:
        return self._queue.qsize() if self._queue else 0

    def is_pending(self, inference_id: str) -> bool:
        return inference_id in self._pending

    async def _write_loop(self) -> None:
        assert self._queue is not None
        queue = self._queue
        while True:
            batch = [await queue.get()]
            if self._flush_interval and queue.qsize() < self._batch_size:
                await asyncio.sleep(self._flush_interval)  # let a batch gather
            while len(batch) < self._batch_size and not queue.empty():
                batch.append(queue.get_nowait())
            metrics.LEDGER_QUEUE_DEPTH.set(queue.qsize())
            try:
                await self._write_with_retries(batch)
            finally:
                for rec in batch:
                    if self._pending.get(rec.id) is rec:
                        del self._pending[rec.id]
                    queue.task_done()

    async def _write_with_retries(self, batch: list[InferenceRecord]) -> None:
        """Ride out a short storage outage (a restarting database); rows keep arriving in the
        queue meanwhile, and only its bound decides what is dropped."""
        for attempt, pause in enumerate(RETRY_PAUSES):
            try:
                await self._write_inferences(batch)
                metrics.LEDGER_WRITTEN.inc(len(batch))
                return
            except Exception:
                if attempt == len(RETRY_PAUSES) - 1:
                    log.exception("ledger write of %d inference rows failed; dropping them", len(batch))
                    metrics.LEDGER_DROPPED.inc(len(batch))
                    return
                log.warning("ledger write failed; retrying in %.1f s", pause, exc_info=True)
                await asyncio.sleep(pause)

    # -- feedback ---------------------------------------------------------------------------
    async def lookup(self, inference_id: str) -> InferenceRecord | None:
        """The inference, whether still queued here or already stored."""
        return self._pending.get(inference_id) or await self.get_inference(inference_id)

    async def wait_for_inference(self, inference_id: str, timeout: float) -> InferenceRecord | None:
        """The inference once it is queued here or stored; polls storage for other workers' rows,
        since feedback may race ahead of the batch that writes its inference."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        delay = 0.02
        while True:
            found = await self.lookup(inference_id)
            if found is not None:
                return found
            if loop.time() >= deadline:
                return None
            await asyncio.sleep(min(delay, max(0.0, deadline - loop.time())))
            delay = min(delay * 2, 0.25)

    # -- backend ----------------------------------------------------------------------------
    @abc.abstractmethod
    async def _open(self) -> None: ...

    @abc.abstractmethod
    async def _close(self) -> None: ...

    @abc.abstractmethod
    async def _write_inferences(self, batch: list[InferenceRecord]) -> None: ...

    @abc.abstractmethod
    async def inference_exists(self, inference_id: str) -> bool: ...

    @abc.abstractmethod
    async def get_inference(self, inference_id: str) -> InferenceRecord | None: ...

    async def add_feedback(self, fb: FeedbackRecord) -> tuple[FeedbackRecord, bool]:
        """Store durably; returns (stored record, created). The same id with the same judgment is
        a retry (no-op); the same id with a different judgment is a client bug: `Conflict`."""
        fb = self._normalize(fb)
        stored, created = await self._insert_feedback(fb)
        if not created and not stored.same_judgment(fb):
            raise Conflict(f"feedback_id {fb.id!r} was already used for a different judgment", param="feedback_id")
        return stored, created

    def _normalize(self, fb: FeedbackRecord) -> FeedbackRecord:
        """The record as this backend will store it, so a retry compares equal to the stored row."""
        return fb

    @abc.abstractmethod
    async def _insert_feedback(self, fb: FeedbackRecord) -> tuple[FeedbackRecord, bool]:
        """Insert unless the id exists, committed before returning; (row as stored, inserted?)."""

    @abc.abstractmethod
    async def count_feedback(self, spec: str, after: float | None = None) -> int:
        """Feedback on `spec`'s inferences stored after `after`: the sidecar's "is it due?",
        answered without loading the events."""

    @abc.abstractmethod
    async def feedback_events(
        self, spec: str | None = None, since: float | None = None, until: float | None = None
    ) -> list[FeedbackEvent]:
        """Feedback joined to its inferences, oldest first; rows whose inference is not stored yet wait."""

    @abc.abstractmethod
    async def thumb_tallies(self, spec: str, bucket_seconds: float) -> list[ThumbTally]:
        """Thumbs up and total per version of `spec` and per time bucket of the feedback
        (buckets start at multiples of `bucket_seconds` since the epoch), by start then version:
        the console's up-rate plot, counted by the database rather than loaded event by event."""

    # -- experiments (the compiler's auto-promote) -----------------------------------------
    @abc.abstractmethod
    async def outcomes(self, spec: str, since: float | None = None) -> list[Outcome]:
        """Status, latency and tokens of `spec`'s inference rows assigned to an arm (`arm` set)
        since `since`: what the guardrails compare."""

    @abc.abstractmethod
    async def add_decision(self, rec: DecisionRecord) -> None:
        """Append one auto-promote decision (committed before returning)."""

    @abc.abstractmethod
    async def decisions(self, spec: str, limit: int | None = None) -> list[DecisionRecord]:
        """`spec`'s decision log, oldest first; with `limit`, only the newest `limit` entries."""
