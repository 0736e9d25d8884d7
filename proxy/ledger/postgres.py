"""The shared ledger: PostgreSQL, for several replicas writing one history.

Same tables and semantics as the SQLite ledger. An inference batch is one transaction of
pipelined `INSERT ... ON CONFLICT (id) DO UPDATE` (last write wins, as INSERT OR REPLACE),
committed with `synchronous_commit = off`: a killed replica loses nothing already sent, only a
database crash can cost the last fraction of a second of rows (like SQLite's synchronous=NORMAL).
Feedback commits with `synchronous_commit = on` whatever the server default, so an acknowledged
judgment is on disk.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from typing import Any

import asyncpg

from .. import pg
from ..errors import InvalidRequest, ServiceUnavailable
from .base import Change, Ledger
from .records import (
    DECISION_COLUMNS,
    FEEDBACK_COLUMNS,
    N_FEEDBACK,
    THUMB,
    DecisionRecord,
    FeedbackEvent,
    FeedbackRecord,
    InferenceRecord,
    Outcome,
    ThumbTally,
    total_tokens,
)

# Bounds on one statement, after which its connection is taken for lost (and the call retried once
# on a fresh one, then a 503): a server that stops answering (a partition, a frozen host) otherwise
# holds the caller until TCP gives up, many minutes.
# A request's read or feedback commit takes ~2 ms (~770 commits/s measured, docs/operations.md):
# 3 s is a server that stopped answering, and feedback gets its 503 in seconds.
REQUEST_TIMEOUT = 3.0
# One batch of 512 rows writes in ~25-40 ms (12-20k rows/s): 30 s never cuts a slow write short.
WRITE_TIMEOUT = 30.0
# GET /readyz asks `SELECT 1` at most twice (a pooled connection the restart killed, then a fresh
# one) within the 2 s a readiness probe usually waits (deploy/k8s: timeoutSeconds 2).
PROBE_TIMEOUT = 0.9

INFERENCE_FIELDS: tuple[tuple[str, str], ...] = (
    ("id", "text"),
    ("created_at", "float8"),
    ("route", "text"),
    ("model", "text"),
    ("spec_name", "text"),
    ("spec_version", "int4"),
    ("spec_hash", "text"),
    ("request", "json"),
    ("response_text", "text"),
    ("tool_calls", "json"),
    ("usage", "json"),
    ("latency_ms", "float8"),
    ("ttft_ms", "float8"),
    ("status", "text"),
    ("http_status", "int4"),
    ("error", "text"),
    ("metadata", "json"),
    ("assignment_unit", "text"),
    ("arm", "text"),
    ("upstream", "text"),
)
_METADATA = [name for name, _ in INFERENCE_FIELDS].index("metadata")
INFERENCE_COLUMNS = ", ".join(name for name, _ in INFERENCE_FIELDS)
_TEXT_FIELDS = {i for i, (_, kind) in enumerate(INFERENCE_FIELDS) if kind == "text"}
_FEEDBACK_PLACEHOLDERS = ", ".join(f"${i + 1}" for i in range(N_FEEDBACK))

# executemany pipelines the batch's rows on one connection in one transaction: measured as fast as
# a single unnest() statement here (~20k rows/s either way), with plainer SQL.
_UPSERT_INFERENCES = (
    f"INSERT INTO inferences ({INFERENCE_COLUMNS}) VALUES ("
    + ", ".join(f"${i + 1}" for i in range(len(INFERENCE_FIELDS)))
    + ") ON CONFLICT (id) DO UPDATE SET "
    + ", ".join(f"{name} = EXCLUDED.{name}" for name, _ in INFERENCE_FIELDS[1:])
)


_DELETE_FEEDBACK_ON = "DELETE FROM feedback WHERE inference_id = ANY($1::text[]) OR rejected_id = ANY($1::text[])"
_DELETE_INFERENCES = "DELETE FROM inferences WHERE id = ANY($1::text[])"


def _count(status: str) -> int:
    """The row count of a command status such as `DELETE 42`."""
    return int(status.rsplit(" ", 1)[-1])


async def _delete_inferences(conn: asyncpg.Connection, ids: list[str]) -> tuple[int, int]:
    """Delete these inference rows and every judgment on them (inside the caller's transaction)."""
    n_feedback = _count(await conn.execute(_DELETE_FEEDBACK_ON, ids))
    return _count(await conn.execute(_DELETE_INFERENCES, ids)), n_feedback


def _no_nul(value: Any) -> Any:
    """PostgreSQL text cannot hold NUL; one such row must not sink the whole batch."""
    return value.replace("\x00", "\ufffd") if isinstance(value, str) and "\x00" in value else value


def inference_row(rec: InferenceRecord) -> tuple[Any, ...]:
    row = (
        rec.id, rec.created_at, rec.route, rec.model, rec.spec_name, rec.spec_version, rec.spec_hash,
        rec.request, rec.response_text, rec.tool_calls, rec.usage, rec.latency_ms, rec.ttft_ms,
        rec.status, rec.http_status, rec.error, rec.metadata, rec.assignment_unit, rec.arm,
        rec.upstream,
    )  # fmt: skip
    return tuple(_no_nul(v) if i in _TEXT_FIELDS else v for i, v in enumerate(row))


def inference_from_row(row: asyncpg.Record | tuple[Any, ...]) -> InferenceRecord:
    values = list(row)
    values[_METADATA] = values[_METADATA] or {}
    return InferenceRecord(*values)


def feedback_from_row(row: asyncpg.Record | tuple[Any, ...]) -> FeedbackRecord:
    return FeedbackRecord(*row)


class PostgresLedger(Ledger):
    # Per worker process: the writer task holds one connection, feedback and reads share the rest
    # (a feedback commit holds one ~2 ms). Small on purpose: replicas x workers x (this + the
    # registry's 2 + its LISTEN connection) must stay under the server's max_connections (100).
    def __init__(self, database_url: str, pool_size: int = 4, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.database_url = database_url
        self.pool_min_size, self.pool_max_size = 0, max(2, pool_size)  # no floor: see pg.create_pool
        self._pool: asyncpg.Pool | None = None

    async def _open(self) -> None:
        self._pool = await pg.create_pool(self.database_url, min_size=self.pool_min_size, max_size=self.pool_max_size)

    async def _close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    @property
    def pool(self) -> asyncpg.Pool:
        assert self._pool is not None, "ledger not started"
        return self._pool

    async def _write_inferences(self, batch: list[InferenceRecord]) -> None:
        rows = [inference_row(rec) for rec in batch]  # in order: a later record of an id wins

        async def write(conn: asyncpg.Connection) -> None:
            async with conn.transaction():
                await conn.execute("SET LOCAL synchronous_commit = off")
                await conn.executemany(_UPSERT_INFERENCES, rows)

        await pg.with_retry(self.pool, write, "writing inferences", WRITE_TIMEOUT)  # an upsert: safe to repeat

    async def storage_problem(self) -> str | None:
        """The database's answer to `SELECT 1` (a quick one, for readiness), then the writer's view."""
        try:
            await pg.with_retry(self.pool, lambda c: c.fetchval("SELECT 1"), "checking readiness", PROBE_TIMEOUT)
        except ServiceUnavailable as exc:
            cause = f": {exc.__cause__!r}" if exc.__cause__ is not None else ""
            return f"the database (PostgreSQL at {pg.describe(self.database_url)}) is unavailable{cause}"
        return await super().storage_problem()

    async def _purge_batch(self, cutoff: float, limit: int) -> tuple[int, int]:
        # SKIP LOCKED: replicas purging at once take disjoint batches instead of waiting on each
        # other; row locks only, so inserts of new rows never wait on a purge
        async def purge(conn: asyncpg.Connection) -> tuple[int, int]:
            async with conn.transaction():
                await conn.execute("SET LOCAL synchronous_commit = off")
                ids = [r[0] for r in await conn.fetch(
                    "SELECT id FROM inferences WHERE created_at < $1 ORDER BY created_at LIMIT $2 FOR UPDATE SKIP LOCKED",
                    cutoff, limit,
                )]  # fmt: skip
                if ids:
                    return await _delete_inferences(conn, ids)
                status = await conn.execute(
                    "DELETE FROM feedback WHERE id IN (SELECT id FROM feedback WHERE created_at < $1 "
                    "LIMIT $2 FOR UPDATE SKIP LOCKED)", cutoff, limit,
                )  # fmt: skip
                return 0, _count(status)

        return await pg.with_retry(self.pool, purge, "purging old rows")  # deleting again is harmless

    async def _forget_batch(self, users: list[str], limit: int) -> tuple[int, int]:
        async def forget(conn: asyncpg.Connection) -> tuple[int, int]:
            async with conn.transaction():
                await conn.execute("SET LOCAL synchronous_commit = on")
                ids = [r[0] for r in await conn.fetch(
                    "SELECT id FROM inferences WHERE (metadata->>'user') = ANY($1::text[]) LIMIT $2", users, limit
                )]  # fmt: skip
                if len(ids) < limit:  # what they judged on an inference that names no user
                    ids += [r[0] for r in await conn.fetch(
                        "SELECT DISTINCT i.id FROM feedback f JOIN inferences i ON i.id = f.inference_id "
                        "WHERE f.user_id = ANY($1::text[]) AND (i.metadata->>'user') IS NULL LIMIT $2",
                        users, limit - len(ids),
                    )]  # fmt: skip
                if ids:
                    return await _delete_inferences(conn, ids)
                status = await conn.execute(
                    "DELETE FROM feedback WHERE id IN (SELECT id FROM feedback WHERE user_id = ANY($1::text[]) LIMIT $2)",
                    users, limit,
                )  # fmt: skip
                return 0, _count(status)

        return await pg.with_retry(self.pool, forget, "erasing a user")

    async def inference_exists(self, inference_id: str) -> bool:
        sql = "SELECT EXISTS (SELECT 1 FROM inferences WHERE id = $1)"
        reading = pg.with_retry(
            self.pool, lambda c: c.fetchval(sql, inference_id), "reading an inference", REQUEST_TIMEOUT
        )
        return bool(await reading)

    async def get_inference(self, inference_id: str) -> InferenceRecord | None:
        sql = f"SELECT {INFERENCE_COLUMNS} FROM inferences WHERE id = $1"
        row = await pg.with_retry(
            self.pool, lambda c: c.fetchrow(sql, inference_id), "reading an inference", REQUEST_TIMEOUT
        )
        return inference_from_row(row) if row else None

    def _normalize(self, fb: FeedbackRecord) -> FeedbackRecord:
        """PostgreSQL text cannot hold NUL: the comment and user id are stored with U+FFFD instead."""
        if any("\x00" in (v or "") for v in (fb.id, fb.inference_id, fb.rejected_id)):
            raise InvalidRequest("ids must not contain NUL characters", param="feedback_id")
        if any("\x00" in (v or "") for v in (fb.comment, fb.user_id)):
            return dataclasses.replace(fb, comment=_no_nul(fb.comment), user_id=_no_nul(fb.user_id))
        return fb

    async def _insert_feedback(self, fb: FeedbackRecord) -> tuple[FeedbackRecord, bool]:
        values = dataclasses.astuple(fb)

        async def insert(conn: asyncpg.Connection) -> tuple[FeedbackRecord, bool]:
            async with conn.transaction():
                await conn.execute("SET LOCAL synchronous_commit = on")
                # ON CONFLICT waits for a concurrent insert of the same id to commit or roll back,
                # and the SELECT after it (a new snapshot under READ COMMITTED) sees the winner.
                inserted = await conn.fetchval(
                    f"INSERT INTO feedback ({FEEDBACK_COLUMNS}) VALUES ({_FEEDBACK_PLACEHOLDERS}) "
                    "ON CONFLICT (id) DO NOTHING RETURNING true",
                    *values,
                )
                if inserted:
                    return fb, True
                row = await conn.fetchrow(f"SELECT {FEEDBACK_COLUMNS} FROM feedback WHERE id = $1", fb.id)
                return feedback_from_row(row), False

        # Idempotent by id: if the connection died after the commit, the retry finds the row.
        stored, created = await pg.with_retry(self.pool, insert, "storing feedback", REQUEST_TIMEOUT)
        return stored, created

    async def get_feedback(self, feedback_id: str) -> FeedbackRecord | None:
        if "\x00" in feedback_id:
            return None  # no stored id holds one
        sql = f"SELECT {FEEDBACK_COLUMNS} FROM feedback WHERE id = $1"
        row = await pg.with_retry(
            self.pool, lambda c: c.fetchrow(sql, feedback_id), "reading feedback", REQUEST_TIMEOUT
        )
        return feedback_from_row(row) if row else None

    async def _change_feedback(self, feedback_id: str, change: Change) -> tuple[FeedbackRecord, bool] | None:
        if "\x00" in feedback_id:
            return None

        async def apply(conn: asyncpg.Connection) -> tuple[FeedbackRecord, bool] | None:
            async with conn.transaction():
                await conn.execute("SET LOCAL synchronous_commit = on")
                row = await conn.fetchrow(
                    f"SELECT {FEEDBACK_COLUMNS} FROM feedback WHERE id = $1 FOR UPDATE", feedback_id
                )
                if row is None:
                    return None
                old = feedback_from_row(row)
                new = change(old)  # may raise: the transaction rolls back
                if new is None:
                    return old, False
                await conn.execute(
                    "UPDATE feedback SET value = $2, comment = $3, updated_at = $4, retracted_at = $5 WHERE id = $1",
                    feedback_id, new.value, new.comment, new.updated_at, new.retracted_at,
                )  # fmt: skip
                return new, True

        # Safe to retry after a lost connection: a change already committed reads back as unchanged.
        return await pg.with_retry(self.pool, apply, "changing feedback", REQUEST_TIMEOUT)

    async def _secret(self, name: str, default: str) -> str:
        async def read(conn: asyncpg.Connection) -> str:
            async with conn.transaction():
                await conn.execute(
                    "INSERT INTO ledger_secrets (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
                    name,
                    default,
                )
                return str(await conn.fetchval("SELECT value FROM ledger_secrets WHERE name = $1", name))

        return await pg.with_retry(self.pool, read, "reading the ledger's secrets")

    async def count_feedback(self, spec: str, after: float | None = None) -> int:
        sql = (
            "SELECT count(*) FROM feedback f JOIN inferences i ON i.id = f.inference_id "
            "WHERE i.spec_name = $1 AND f.retracted_at IS NULL"
        )
        args: list[Any] = [spec]
        if after is not None:
            args.append(after)
            sql += " AND coalesce(f.updated_at, f.created_at) > $2"
        return int(await pg.with_retry(self.pool, lambda c: c.fetchval(sql, *args), "counting feedback"))

    async def thumb_tallies(self, spec: str, bucket_seconds: float) -> list[ThumbTally]:
        sql = (
            "SELECT i.spec_version, floor(f.created_at / $1)::int8 AS b, "
            "count(*) FILTER (WHERE f.value > 0), count(*) FROM feedback f "
            "JOIN inferences i ON i.id = f.inference_id WHERE i.spec_name = $2 AND f.kind = $3 "
            "AND f.retracted_at IS NULL GROUP BY i.spec_version, b ORDER BY b, i.spec_version NULLS FIRST"
        )
        rows = await pg.with_retry(
            self.pool, lambda c: c.fetch(sql, float(bucket_seconds), spec, THUMB), "counting thumbs"
        )
        return [ThumbTally(v, b * bucket_seconds, int(ups), int(n)) for v, b, ups, n in rows]

    async def _feedback_events(self, spec: str | None, since: float | None, until: float | None) -> list[FeedbackEvent]:
        names = [name for name, _ in INFERENCE_FIELDS]
        fcols = ", ".join(f"f.{c.strip()}" for c in FEEDBACK_COLUMNS.split(","))
        icols = ", ".join(f"i.{c}" for c in names)
        rcols = ", ".join(f"r.{c}" for c in names)
        sql = (
            f"SELECT {fcols}, {icols}, {rcols} FROM feedback f "
            "JOIN inferences i ON i.id = f.inference_id "
            "LEFT JOIN inferences r ON r.id = f.rejected_id "
            # a pair whose rejected side is not stored yet waits, as in the SQLite ledger
            "WHERE (f.rejected_id IS NULL OR r.id IS NOT NULL) AND f.retracted_at IS NULL"
        )
        args: list[Any] = []
        if spec is not None:
            args.append(spec)
            sql += f" AND i.spec_name = ${len(args)}"
        if since is not None:
            args.append(since)
            sql += f" AND f.created_at >= ${len(args)}"
        if until is not None:
            args.append(until)
            sql += f" AND f.created_at < ${len(args)}"
        sql += ' ORDER BY f.created_at, f.id COLLATE "C"'  # byte order, as SQLite sorts
        rows = await pg.with_retry(self.pool, lambda c: c.fetch(sql, *args), "reading feedback events")
        f, n = N_FEEDBACK, len(names)
        events = []
        for row in rows:
            values = tuple(row)
            rejected = values[f + n : f + 2 * n]
            events.append(
                FeedbackEvent(
                    feedback_from_row(values[:f]),
                    inference_from_row(values[f : f + n]),
                    inference_from_row(rejected) if rejected[0] is not None else None,
                )
            )
        return events

    async def outcomes(self, spec: str, since: float | None = None) -> list[Outcome]:
        sql = (
            "SELECT spec_version, arm, status, latency_ms, usage FROM inferences "
            "WHERE spec_name = $1 AND arm IS NOT NULL AND created_at >= $2"
        )
        rows = await pg.with_retry(self.pool, lambda c: c.fetch(sql, spec, since or 0.0), "reading outcomes")
        return [Outcome(r[0], r[1], r[2], r[3], total_tokens(r[4])) for r in rows]

    async def add_decision(self, rec: DecisionRecord) -> None:
        sql = (
            f"INSERT INTO experiment_decisions ({DECISION_COLUMNS}) VALUES "
            "($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)"
        )
        args = (
            rec.spec, rec.candidate, rec.production, _no_nul(rec.decision), _no_nul(rec.reason), rec.created_at,
            rec.p_value, rec.lift, rec.candidate_ups, rec.candidate_n, rec.production_ups, rec.production_n,
            rec.details,
        )  # fmt: skip
        # not retried: a decision committed before a lost connection must not be logged twice
        async with self.pool.acquire() as conn:
            await conn.execute(sql, *args)

    async def decisions(self, spec: str, limit: int | None = None) -> list[DecisionRecord]:
        sql = f"SELECT {DECISION_COLUMNS} FROM experiment_decisions WHERE spec = $1 ORDER BY id DESC LIMIT $2"
        rows = await pg.with_retry(self.pool, lambda c: c.fetch(sql, spec, limit), "reading decisions")
        return [DecisionRecord.from_row(tuple(r), r[12]) for r in reversed(rows)]

    async def add_conclusions(self, spec: str, records: Sequence[dict[str, Any]]) -> None:
        rows = [(spec, float(r.get("at") or time.time()), r) for r in records]
        if not rows:
            return
        sql = "INSERT INTO rule_conclusions (spec, created_at, record) VALUES ($1, $2, $3)"
        # not retried: a batch committed before a lost connection must not be logged twice
        async with self.pool.acquire() as conn:
            await conn.executemany(sql, rows)

    async def conclusions(self, spec: str) -> list[dict[str, Any]]:
        sql = "SELECT record FROM rule_conclusions WHERE spec = $1 ORDER BY id"
        rows = await pg.with_retry(self.pool, lambda c: c.fetch(sql, spec), "reading rule conclusions")
        return [dict(r[0]) for r in rows]

    async def model_counts(self, spec: str | None, since: float | None = None) -> dict[str, int]:
        sql = (
            "SELECT model, count(*) FROM inferences WHERE status = 'ok' AND model IS NOT NULL "
            "AND created_at >= $1 AND ($2::text IS NULL OR spec_name = $2) GROUP BY model"
        )
        rows = await pg.with_retry(self.pool, lambda c: c.fetch(sql, since or 0.0, spec), "counting models")
        return {str(r[0]): int(r[1]) for r in rows}
