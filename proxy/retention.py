"""`SPECLEARN_LEDGER_RETENTION_DAYS`: rows older than that are deleted, in small batches.

The purge runs inside the proxy, beside the ledger's writer (Ledger.start starts it): every
deployment runs a proxy, while the compiler sidecar is optional and may run elsewhere, and the
proxy already holds the ledger connections. Each worker and replica runs it; that is safe, since
each batch is a bounded delete of the oldest rows (PostgreSQL: `FOR UPDATE SKIP LOCKED`, so
replicas take disjoint batches; SQLite: one writer at a time), and the first pass after start
waits a while, so a short-lived command never purges.

Why batches: one `DELETE ... WHERE created_at < cutoff` of half a million rows holds SQLite's
write lock (or PostgreSQL's WAL and I/O) for seconds and would stall the inference writer. A
batch deletes at most `batch` inferences with their feedback in one short transaction, then
the purge sleeps `pause` seconds so a waiting writer takes the lock first (bench/performance/purge.py).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from prometheus_client import Counter

if TYPE_CHECKING:
    from .ledger import Ledger
    from .settings import Settings

log = logging.getLogger("speclearn.retention")
DAY = 86400.0
FIRST_PASS_DELAY = 60.0  # seconds after start (at most the interval, jittered)

PURGED = Counter("speclearn_ledger_purged", "Ledger rows deleted by the retention purge", ["table"])


@dataclass(frozen=True, slots=True)
class Purged:
    inferences: int = 0
    feedback: int = 0
    seconds: float = 0.0
    batches: int = 0


@dataclass(frozen=True, slots=True)
class Retention:
    days: float
    interval: float = 3600.0
    batch: int = 1000
    pause: float = 0.05

    @classmethod
    def from_settings(cls, settings: Settings) -> Retention | None:
        """None when rows are kept forever (no retention configured)."""
        if settings.ledger_retention_days is None:
            return None
        return cls(settings.ledger_retention_days, settings.ledger_purge_interval,
                   settings.ledger_purge_batch, settings.ledger_purge_pause)  # fmt: skip

    def cutoff(self, now: float | None = None) -> float:
        return (time.time() if now is None else now) - self.days * DAY

    async def purge(self, ledger: Ledger, now: float | None = None) -> Purged:
        """Delete everything older than the cutoff, batch by batch; counted in the metric."""
        cutoff, started = self.cutoff(now), time.monotonic()
        inferences = feedback = batches = 0
        while True:
            n_inf, n_fb = await ledger.purge_batch(cutoff, self.batch)
            batches += 1
            if n_inf:
                PURGED.labels("inferences").inc(n_inf)
            if n_fb:
                PURGED.labels("feedback").inc(n_fb)
            inferences, feedback = inferences + n_inf, feedback + n_fb
            if not n_inf and not n_fb:
                return Purged(inferences, feedback, time.monotonic() - started, batches)
            await asyncio.sleep(self.pause)

    async def run(self, ledger: Ledger) -> None:
        """Purge every `interval` seconds (jittered, so workers spread out) until cancelled."""
        await asyncio.sleep(min(FIRST_PASS_DELAY, self.interval) * random.uniform(0.5, 1.5))
        while True:
            try:
                done = await self.purge(ledger)
                if done.inferences or done.feedback:
                    log.info("retention: purged %d inference and %d feedback rows older than %g days in %.1f s",
                             done.inferences, done.feedback, self.days, done.seconds)  # fmt: skip
            except asyncio.CancelledError:
                raise
            except Exception:  # storage away: the next pass tries again
                log.warning("retention purge failed; retrying in %.0f s", self.interval, exc_info=True)
            await asyncio.sleep(self.interval * random.uniform(0.9, 1.1))
