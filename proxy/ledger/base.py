"""The ledger interface plus the batching every backend shares.

Inference rows go through a bounded in-memory queue written in batches by one background task,
so the response never waits on storage; when the queue is full the row is dropped and counted.
Feedback is written before it is acknowledged.
"""
from __future__ import annotations

import abc
import asyncio
import contextlib
import dataclasses
import logging
import secrets
from typing import Callable

from .. import identity, metrics
from ..errors import Conflict, InvalidRequest
from .records import DecisionRecord, FeedbackEvent, FeedbackRecord, InferenceRecord, Outcome, ThumbTally

log = logging.getLogger(__name__)
RETRY_PAUSES = (0.1, 0.5, 2.0, 0.0)  # pause after each failed attempt; the last attempt gives up
ADDRESS_KEY = "address_key"  # the ledger_secrets row: the key client addresses are hashed with
KEEP = object()  # update_feedback: leave the comment as it is

#: A change to one stored judgment: the new record, or None to write nothing.
Change = Callable[[FeedbackRecord], "FeedbackRecord | None"]


class Ledger(abc.ABC):
    def __init__(self, queue_size: int = 10_000, batch_size: int = 512, flush_interval: float = 0.05) -> None:
        self._queue: asyncio.Queue[InferenceRecord] | None = None
        self._queue_size = queue_size
        self._batch_size = batch_size
        self._flush_interval = flush_interval
        self._pending: dict[str, InferenceRecord] = {}  # queued or being written, by id
        self._writer: asyncio.Task[None] | None = None
        self.address_key = b""  # see proxy.identity; read from storage on start

    # -- lifecycle -------------------------------------------------------------------------
    async def start(self) -> None:
        await self._open()
        # one key per ledger, made by whichever worker or replica starts first: the same address
        # is the same voice everywhere the ledger is shared, and after a restart
        self.address_key = bytes.fromhex(await self._secret(ADDRESS_KEY, secrets.token_hex(32)))
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
        a retry (no-op); the same id with a different judgment is a client bug: `Conflict`, as is
        the id of a retracted judgment (a new vote takes a new id)."""
        fb = self._normalize(fb)
        stored, created = await self._insert_feedback(fb)
        if not created and stored.retracted_at is not None:
            raise _retracted(fb.id)
        if not created and not stored.same_judgment(fb):
            raise Conflict(f"feedback_id {fb.id!r} was already used for a different judgment", param="feedback_id")
        return stored, created

    async def update_feedback(
        self,
        feedback_id: str,
        at: float,
        *,
        owner: str | None = None,
        value: tuple[str, float] | None = None,
        comment: object = KEEP,
    ) -> tuple[FeedbackRecord, bool] | None:
        """Change a judgment in place, durably: its (kind, value), which must keep the kind, and/or
        its comment (None erases it). (record as stored, changed?); None when no such judgment
        exists, or with `owner`, when that publishable key did not create it. `Conflict` once retracted."""

        def change(fb: FeedbackRecord) -> FeedbackRecord | None:
            if fb.retracted_at is not None:
                raise _retracted(fb.id)
            new = fb
            if value is not None:
                kind, number = value
                if kind != fb.kind:
                    raise InvalidRequest(f"this feedback is a {fb.kind}: 'value' must be one too", param="value")
                new = dataclasses.replace(new, value=number)
            if comment is not KEEP:
                new = dataclasses.replace(new, comment=comment)  # type: ignore[arg-type]
            new = self._normalize(new)
            return None if new == fb else dataclasses.replace(new, updated_at=at)

        return await self._apply(feedback_id, owner, change)

    async def retract_feedback(
        self, feedback_id: str, at: float, *, owner: str | None = None
    ) -> tuple[FeedbackRecord, bool] | None:
        """Take a judgment back, durably: no reader of judgments sees it again and its comment is
        erased. (tombstone, retracted now?): a second retraction changes nothing. None as for update."""

        def change(fb: FeedbackRecord) -> FeedbackRecord | None:
            if fb.retracted_at is not None:
                return None
            return dataclasses.replace(fb, retracted_at=at, comment=None)

        return await self._apply(feedback_id, owner, change)

    async def _apply(self, feedback_id: str, owner: str | None, change: Change) -> tuple[FeedbackRecord, bool] | None:
        """`change` on the row, if it exists and (with `owner`) that key created it; else None."""

        def guarded(fb: FeedbackRecord) -> FeedbackRecord | None:
            if owner is not None and fb.owner != owner:
                raise _NotOwned  # rolls the transaction back: nothing written
            return change(fb)

        try:
            return await self._change_feedback(feedback_id, guarded)
        except _NotOwned:
            return None

    async def feedback_events(
        self, spec: str | None = None, since: float | None = None, until: float | None = None
    ) -> list[FeedbackEvent]:
        """Feedback joined to its inferences, oldest first (by `created_at`, the time of the first
        vote, so a change keeps its place); retracted judgments are left out, a changed one appears
        once with its latest value, and each carries its judge's voice (`identity.attribute`).
        Rows whose inference is not stored yet wait."""
        return [identity.attribute(ev) for ev in await self._feedback_events(spec, since, until)]

    def _normalize(self, fb: FeedbackRecord) -> FeedbackRecord:
        """The record as this backend will store it, so a retry compares equal to the stored row."""
        return fb

    @abc.abstractmethod
    async def _insert_feedback(self, fb: FeedbackRecord) -> tuple[FeedbackRecord, bool]:
        """Insert unless the id exists, committed before returning; (row as stored, inserted?)."""

    @abc.abstractmethod
    async def get_feedback(self, feedback_id: str) -> FeedbackRecord | None:
        """One judgment as stored (a retracted one too, with `retracted_at` set)."""

    @abc.abstractmethod
    async def _change_feedback(self, feedback_id: str, change: Change) -> tuple[FeedbackRecord, bool] | None:
        """In one transaction: read the row (None if missing), apply `change`; write its value,
        comment, updated_at and retracted_at when it returns a record, committed before returning."""

    @abc.abstractmethod
    async def _secret(self, name: str, default: str) -> str:
        """The stored secret `name`, storing `default` first if there is none (the first writer wins)."""

    @abc.abstractmethod
    async def count_feedback(self, spec: str, after: float | None = None) -> int:
        """Feedback on `spec`'s inferences stored or changed after `after`, retractions left out:
        the sidecar's "is it due?", answered without loading the events."""

    @abc.abstractmethod
    async def _feedback_events(
        self, spec: str | None, since: float | None, until: float | None
    ) -> list[FeedbackEvent]:
        """`feedback_events` as stored: not retracted, joined, oldest first."""

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

    # -- the compiler's default model --------------------------------------------------------
    @abc.abstractmethod
    async def model_counts(self, spec: str | None, since: float | None = None) -> dict[str, int]:
        """Answered inference rows (status ok) per recorded model, of `spec` (None: every spec)
        since `since`: the model a spec's traffic uses, which the compiler asks by default."""


class _NotOwned(Exception):
    """Inside a change: the row is not the caller's, so it is reported as unknown."""


def _retracted(feedback_id: str) -> Conflict:
    return Conflict(
        f"feedback {feedback_id!r} was retracted: send a new vote under a new feedback_id",
        param="feedback_id", code="feedback_retracted",
    )  # fmt: skip
