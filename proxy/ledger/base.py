"""The ledger interface plus the batching every backend shares.

Inference rows go through a bounded in-memory queue written in batches by one background task,
so the response never waits on storage; when the queue is full the row is dropped and counted.
Feedback is written before it is acknowledged.

The queue is also the buffer that carries inference through a storage outage: while the backend
says it is unavailable (`ServiceUnavailable`: the database down or unreachable) the writer holds
its batch and retries it until storage is back, rows keep queueing behind it, and only the queue's
bound drops any. Feedback meanwhile fails with that 503, so nothing unacknowledged is presumed saved.

Data governance lives here too: the content policy (content.py) is applied to each row before it
is stored, and to what is read back for the compiler and exports; the retention purge
(proxy/retention.py) runs beside the writer; `forget_user` erases one end user.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import dataclasses
import logging
import secrets
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from .. import identity, metrics
from ..errors import Conflict, InvalidRequest, ServiceUnavailable
from .content import ContentPolicy
from .records import DecisionRecord, FeedbackEvent, FeedbackRecord, InferenceRecord, Outcome, ThumbTally

if TYPE_CHECKING:
    from ..retention import Retention

log = logging.getLogger(__name__)
RETRY_PAUSES = (0.1, 0.5, 2.0, 0.0)  # pause after each failed attempt; the last attempt gives up
# storage away: the held batch is retried after 0.1, 0.2, 0.4 ... s, then every second, so rows are
# written within about a second of its return; a refused connection a second costs nothing
OUTAGE_FIRST_PAUSE, OUTAGE_MAX_PAUSE = 0.1, 1.0
ADDRESS_KEY = "address_key"  # the ledger_secrets row: the key client addresses are hashed with
KEEP = object()  # update_feedback: leave the comment as it is
ERASED_MEMORY = 600.0  # seconds an erased user's still-queued rows are watched for

#: A change to one stored judgment: the new record, or None to write nothing.
Change = Callable[[FeedbackRecord], "FeedbackRecord | None"]


class Ledger(abc.ABC):
    def __init__(
        self,
        queue_size: int = 10_000,
        batch_size: int = 512,
        flush_interval: float = 0.05,
        content: ContentPolicy | None = None,
        retention: Retention | None = None,
    ) -> None:
        self._queue: asyncio.Queue[InferenceRecord] | None = None
        self._queue_size = queue_size
        self._batch_size = batch_size
        self._flush_interval = flush_interval
        self._pending: dict[str, InferenceRecord] = {}  # queued or being written, by id
        self._writer: asyncio.Task[None] | None = None
        self.address_key = b""  # see proxy.identity; read from storage on start
        self.content = content or ContentPolicy()
        self.retention = retention
        self._purger: asyncio.Task[None] | None = None
        self._write_lock = asyncio.Lock()  # held while a batch is filtered and written
        self._erased: dict[str, float] = {}  # user -> when erased: their rows still queued are dropped
        self._outage: _Outage | None = None  # set while the writer holds a batch storage refused
        self._closing = False

    # -- lifecycle -------------------------------------------------------------------------
    async def start(self) -> None:
        await self._open()
        # one key per ledger, made by whichever worker or replica starts first: the same address
        # is the same voice everywhere the ledger is shared, and after a restart
        self.address_key = bytes.fromhex(await self._secret(ADDRESS_KEY, secrets.token_hex(32)))
        self.content.key = self.address_key
        self._queue = asyncio.Queue(self._queue_size)
        self._writer = asyncio.create_task(self._write_loop())
        if self.retention is not None:
            self._purger = asyncio.create_task(self.retention.run(self))

    async def close(self) -> None:
        """Flush what is queued, then release the storage."""
        if self._purger is not None:
            self._purger.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._purger
            self._purger = None
        if self._writer is not None:
            assert self._queue is not None
            self._closing = True  # during an outage, what is still held is dropped, not waited on
            await self._queue.join()
            self._writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._writer
            self._writer = None
        self._closing, self._outage = False, None
        await self._close()

    # -- inference rows (hot path) ------------------------------------------------------------
    def record(self, rec: InferenceRecord) -> bool:
        """Queue a row without waiting; False (and counted) when the queue is full."""
        assert self._queue is not None, "ledger not started"
        try:
            self._queue.put_nowait(rec)
        except asyncio.QueueFull:
            metrics.LEDGER_DROPPED.inc()
            if self._outage is not None:
                self._outage.dropped(self._queue_size)
            return False
        self._pending[rec.id] = rec
        return True

    @property
    def queue_depth(self) -> int:
        return self._queue.qsize() if self._queue else 0

    @property
    def buffered(self) -> int:
        """Inference rows accepted here and not stored yet: queued, or in the batch being written."""
        return len(self._pending)

    @property
    def unavailable(self) -> str | None:
        """Why the writer is holding rows storage refused, None while writes go through."""
        return self._outage.reason if self._outage is not None else None

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
                await self._write_batch(batch)
            finally:
                for rec in batch:
                    if self._pending.get(rec.id) is rec:
                        del self._pending[rec.id]
                    queue.task_done()

    async def _stored_form(self, batch: list[InferenceRecord]) -> list[InferenceRecord]:
        """The batch as the content policy stores it, without rows of users erased since they were
        queued. Redaction runs in a worker thread: the event loop keeps serving requests."""
        if self._erased:
            batch = [r for r in batch if not self._erased_row(r)]
        if not self.content.changes_rows or not batch:
            return batch
        return await asyncio.to_thread(lambda: [self._apply_content(r) for r in batch])

    def _apply_content(self, rec: InferenceRecord) -> InferenceRecord:
        try:
            return self.content.inference(rec)
        except Exception:  # a redaction bug must not store the text it failed to redact
            log.exception("content policy failed on inference %s: storing it without text", rec.id)
            return self.content.stripped(rec)

    def _erased_row(self, rec: InferenceRecord) -> bool:
        user = (rec.metadata or {}).get("user")
        erased_at = self._erased.get(user) if isinstance(user, str) else None
        return erased_at is not None and rec.created_at <= erased_at

    async def _write_batch(self, batch: list[InferenceRecord]) -> None:
        """Store one batch. A failing write is retried (`RETRY_PAUSES`), then dropped and counted;
        a write storage refuses as unavailable is held and retried until storage is back, however
        long, while rows keep arriving in the queue and only its bound decides what is dropped.
        The write lock is let go between tries, so an erasure can run meanwhile: each try first
        drops the rows of users erased since."""
        rows: list[InferenceRecord] | None = None
        failures = away = 0
        while True:
            async with self._write_lock:
                rows = await self._stored_form(batch) if rows is None else [r for r in rows if not self._erased_row(r)]
                if not rows:
                    return
                if self._closing and self._outage is not None:
                    self._drop_on_close(len(rows))
                    return
                try:
                    await self._write_inferences(rows)
                except ServiceUnavailable as exc:
                    if self._closing:
                        self._drop_on_close(len(rows))
                        return
                    if self._outage is None:
                        self._outage = _Outage(_why(exc))
                        log.warning(
                            "ledger storage unavailable (%s): holding inference rows in memory, up to %d, until "
                            "it is back", self._outage.reason, self._queue_size,
                        )  # fmt: skip
                    pause = min(OUTAGE_FIRST_PAUSE * 2**away, OUTAGE_MAX_PAUSE)
                    away += 1
                except Exception:
                    if failures == len(RETRY_PAUSES) - 1:
                        log.exception("ledger write of %d inference rows failed; dropping them", len(rows))
                        metrics.LEDGER_DROPPED.inc(len(rows))
                        return
                    pause = RETRY_PAUSES[failures]
                    failures += 1
                    log.warning("ledger write failed; retrying in %.1f s", pause, exc_info=True)
                else:
                    metrics.LEDGER_WRITTEN.inc(len(rows))
                    if self._outage is not None:
                        self._storage_back(len(rows))
                    return
            if self._outage is not None:  # the held batch counts too: it is not stored either
                metrics.LEDGER_QUEUE_DEPTH.set(self.buffered)
            await asyncio.sleep(pause)

    def _storage_back(self, written: int) -> None:
        assert self._outage is not None
        outage, self._outage = self._outage, None
        metrics.LEDGER_QUEUE_DEPTH.set(self.queue_depth)
        log.warning(
            "ledger storage is back after %.1f s: %d held inference rows written, %d more buffered to write; "
            "%d were dropped while the buffer was full",
            time.monotonic() - outage.since, written, self.buffered - written, outage.dropped_rows,
        )  # fmt: skip

    def _drop_on_close(self, n: int) -> None:
        """Closing during an outage: nothing waits for storage to return (a stopping replica must
        stop); the rows are counted lost, batch by batch without another try."""
        metrics.LEDGER_DROPPED.inc(n)
        log.error("ledger closing while storage is unavailable: %d inference rows dropped", n)

    async def storage_problem(self) -> str | None:
        """Why storage cannot take writes now, None when it can: for readiness. Here, the writer's
        view (a batch held since storage refused it); a backend that can ask its server adds that."""
        return self.unavailable

    # -- feedback ---------------------------------------------------------------------------
    async def lookup(self, inference_id: str) -> InferenceRecord | None:
        """The inference, whether still queued here or already stored."""
        return self._pending.get(inference_id) or await self.get_inference(inference_id)

    # a deadline between polls, not a cancellation: a storage query is never cut off mid-flight
    async def wait_for_inference(self, inference_id: str, timeout: float) -> InferenceRecord | None:  # noqa: ASYNC109
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

    # -- governance: retention and erasure ---------------------------------------------------
    async def purge_batch(self, cutoff: float, limit: int) -> tuple[int, int]:
        """One bounded step of the retention purge: (inference rows, feedback rows) deleted."""
        return await self._purge_batch(cutoff, limit)

    async def forget_user(self, user: str, batch: int = 1000, pause: float = 0.0) -> tuple[int, int]:
        """Erase an end user: every inference row of theirs (recorded under their id, or with no
        user of its own and judged by them) with every judgment on it, then every judgment they
        gave; durably, in bounded batches. Rows of theirs still queued in this process are
        dropped. Returns (inference rows, feedback rows) erased."""
        now = time.time()
        self._erased = {u: t for u, t in self._erased.items() if t > now - ERASED_MEMORY}
        for form in (user, self.content.user(user)):
            self._erased[form] = now
        async with self._write_lock:
            pass  # a batch filtered before the mark is written before the erasure starts
        forms = self.content.stored_forms(user)
        inferences = feedback = 0
        while True:
            n_inf, n_fb = await self._forget_batch(forms, batch)
            inferences, feedback = inferences + n_inf, feedback + n_fb
            if not n_inf and not n_fb:
                return inferences, feedback
            await asyncio.sleep(pause)

    @abc.abstractmethod
    async def _purge_batch(self, cutoff: float, limit: int) -> tuple[int, int]:
        """In one short transaction: up to `limit` inference rows created before `cutoff`, oldest
        first, with every judgment on them (chosen or rejected side); when none is left, up to
        `limit` judgments created before it (their inference was never stored). Counts deleted."""

    @abc.abstractmethod
    async def _forget_batch(self, users: list[str], limit: int) -> tuple[int, int]:
        """In one short, durable transaction: up to `limit` inference rows of `users` (see
        `forget_user`) with every judgment on them; when none is left, up to `limit` judgments
        whose `user_id` is one of `users`. Counts deleted."""

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
        fb = self._normalize(self.content.feedback(fb))
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
            new = self._normalize(self.content.feedback(new))
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
        events = await self._feedback_events(spec, since, until)
        if self.content.changes_rows:  # rows stored before the mode changed are read as it says now
            events = await asyncio.to_thread(lambda: [self._governed(ev) for ev in events])
        return [identity.attribute(ev) for ev in events]

    def _governed(self, ev: FeedbackEvent) -> FeedbackEvent:
        def row(rec: InferenceRecord) -> InferenceRecord:
            stored_as = (rec.metadata or {}).get("content")
            return rec if stored_as in (self.content.mode, "none") else self._apply_content(rec)

        rejected = row(ev.rejected) if ev.rejected is not None else None
        return FeedbackEvent(self.content.feedback(ev.feedback), row(ev.inference), rejected)

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
    async def _feedback_events(self, spec: str | None, since: float | None, until: float | None) -> list[FeedbackEvent]:
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

    # -- what compile rounds concluded about each rule (compiler/memory.py) ---------------------
    @abc.abstractmethod
    async def add_conclusions(self, spec: str, records: Sequence[dict[str, Any]]) -> None:
        """Append conclusions (JSON objects with an `at` time), committed before returning."""

    @abc.abstractmethod
    async def conclusions(self, spec: str) -> list[dict[str, Any]]:
        """`spec`'s conclusions, oldest first."""

    # -- the compiler's default model --------------------------------------------------------
    @abc.abstractmethod
    async def model_counts(self, spec: str | None, since: float | None = None) -> dict[str, int]:
        """Answered inference rows (status ok) per recorded model, of `spec` (None: every spec)
        since `since`: the model a spec's traffic uses, which the compiler asks by default."""


def _why(exc: ServiceUnavailable) -> str:
    """The message with the error under it, for operators: which call failed, and how."""
    return f"{exc.message}: {exc.__cause__!r}" if exc.__cause__ is not None else exc.message


@dataclasses.dataclass
class _Outage:
    """A storage outage as the writer sees it: since when, why, and the rows the full queue refused."""

    reason: str
    since: float = dataclasses.field(default_factory=time.monotonic)
    dropped_rows: int = 0

    def dropped(self, bound: int) -> None:
        if not self.dropped_rows:  # once per outage, not once per row
            log.error(
                "ledger buffer full (%d inference rows) while storage is unavailable: dropping new rows, "
                "counted in speclearn_ledger_dropped_total", bound,
            )  # fmt: skip
        self.dropped_rows += 1


class _NotOwned(Exception):
    """Inside a change: the row is not the caller's, so it is reported as unknown."""


def _retracted(feedback_id: str) -> Conflict:
    return Conflict(
        f"feedback {feedback_id!r} was retracted: send a new vote under a new feedback_id",
        param="feedback_id", code="feedback_retracted",
    )  # fmt: skip
