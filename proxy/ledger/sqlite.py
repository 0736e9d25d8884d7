"""The embedded ledger: SQLite in WAL mode, one file under the data dir.

Two connections: one for batched inference rows (synchronous=NORMAL: a killed process keeps them,
only a power cut can cost the last batch) and one for feedback and reads (synchronous=FULL: an
acknowledged judgment is on disk). Each is used from worker threads under its own lock.
"""

from __future__ import annotations

import asyncio
import dataclasses
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import orjson

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

T = TypeVar("T")

SCHEMA = """
CREATE TABLE IF NOT EXISTS inferences (
    id TEXT PRIMARY KEY,
    created_at REAL NOT NULL,
    route TEXT NOT NULL,
    model TEXT,
    spec_name TEXT,
    spec_version INTEGER,
    spec_hash TEXT,
    request TEXT NOT NULL,
    response_text TEXT,
    tool_calls TEXT,
    usage TEXT,
    latency_ms REAL,
    ttft_ms REAL,
    status TEXT NOT NULL,
    http_status INTEGER NOT NULL,
    error TEXT,
    metadata TEXT
);
CREATE INDEX IF NOT EXISTS inferences_by_spec ON inferences (spec_name, created_at);
CREATE TABLE IF NOT EXISTS feedback (
    id TEXT PRIMARY KEY,
    inference_id TEXT NOT NULL,
    rejected_id TEXT,
    kind TEXT NOT NULL,
    value REAL NOT NULL,
    comment TEXT,
    tags TEXT,
    created_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS feedback_by_inference ON feedback (inference_id);
CREATE INDEX IF NOT EXISTS feedback_by_time ON feedback (created_at);
"""

# Steps after the base schema, applied once each in order and counted in PRAGMA user_version, so
# a ledger file written by an older speclearn gains them in place. Append only.
MIGRATIONS: tuple[str, ...] = (
    """
    ALTER TABLE inferences ADD COLUMN assignment_unit TEXT;
    ALTER TABLE inferences ADD COLUMN arm TEXT;
    CREATE TABLE experiment_decisions (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        created_at REAL NOT NULL,
        spec TEXT NOT NULL,
        candidate INTEGER NOT NULL,
        production INTEGER NOT NULL,
        decision TEXT NOT NULL,
        reason TEXT NOT NULL,
        p_value REAL,
        lift REAL,
        candidate_ups INTEGER NOT NULL,
        candidate_n INTEGER NOT NULL,
        production_ups INTEGER NOT NULL,
        production_n INTEGER NOT NULL,
        details TEXT
    );
    CREATE INDEX experiment_decisions_by_spec ON experiment_decisions (spec, id);
    """,
    # feedback as apps send it: who judged, which publishable key may change it, changes and
    # retractions in place; and the key client addresses are hashed with (proxy.identity)
    """
    ALTER TABLE feedback ADD COLUMN user_id TEXT;
    ALTER TABLE feedback ADD COLUMN owner TEXT;
    ALTER TABLE feedback ADD COLUMN updated_at REAL;
    ALTER TABLE feedback ADD COLUMN retracted_at REAL;
    CREATE TABLE ledger_secrets (name TEXT PRIMARY KEY, value TEXT NOT NULL);
    """,
    # data governance: the retention purge takes the oldest rows, forget one user's, and both
    # take the judgments on them (docs/data.md)
    """
    CREATE INDEX IF NOT EXISTS inferences_by_time ON inferences (created_at);
    CREATE INDEX IF NOT EXISTS inferences_by_user ON inferences (json_extract(metadata, '$.user'));
    CREATE INDEX IF NOT EXISTS feedback_by_rejected ON feedback (rejected_id);
    CREATE INDEX IF NOT EXISTS feedback_by_user ON feedback (user_id);
    """,
    # several upstreams: which one answered (proxy/upstreams.py)
    """
    ALTER TABLE inferences ADD COLUMN upstream TEXT;
    """,
    # what compile rounds concluded about each rule (compiler/memory.py): one JSON record each
    """
    CREATE TABLE rule_conclusions (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        spec TEXT NOT NULL,
        created_at REAL NOT NULL,
        record TEXT NOT NULL
    );
    CREATE INDEX rule_conclusions_by_spec ON rule_conclusions (spec, id);
    """,
)
_USER = "json_extract(metadata, '$.user')"  # the expression inferences_by_user indexes

INFERENCE_COLUMNS = (
    "id, created_at, route, model, spec_name, spec_version, spec_hash, request, response_text, "
    "tool_calls, usage, latency_ms, ttft_ms, status, http_status, error, metadata, assignment_unit, arm, upstream"
)
N_INFERENCE = INFERENCE_COLUMNS.count(",") + 1
_TAGS = FEEDBACK_COLUMNS.split(", ").index("tags")


def _json(value: Any) -> str | None:
    return None if value is None else orjson.dumps(value).decode()


def _unjson(value: str | None) -> Any:
    return None if value is None else orjson.loads(value)


def inference_row(rec: InferenceRecord) -> tuple[Any, ...]:
    return (
        rec.id, rec.created_at, rec.route, rec.model, rec.spec_name, rec.spec_version, rec.spec_hash,
        _json(rec.request), rec.response_text, _json(rec.tool_calls), _json(rec.usage),
        rec.latency_ms, rec.ttft_ms, rec.status, rec.http_status, rec.error, _json(rec.metadata),
        rec.assignment_unit, rec.arm, rec.upstream,
    )  # fmt: skip


def inference_from_row(row: tuple[Any, ...]) -> InferenceRecord:
    (id_, created_at, route, model, spec_name, spec_version, spec_hash, request, response_text,
     tool_calls, usage, latency_ms, ttft_ms, status, http_status, error, metadata, unit, arm, upstream) = row  # fmt: skip
    return InferenceRecord(
        id_, created_at, route, model, spec_name, spec_version, spec_hash, _unjson(request),
        response_text, _unjson(tool_calls), _unjson(usage), latency_ms, ttft_ms, status,
        http_status, error, _unjson(metadata) or {}, unit, arm, upstream,
    )  # fmt: skip


def feedback_from_row(row: tuple[Any, ...]) -> FeedbackRecord:
    values = list(row)
    values[_TAGS] = _unjson(values[_TAGS])
    return FeedbackRecord(*values)


def feedback_row(fb: FeedbackRecord) -> tuple[Any, ...]:
    return tuple(_json(v) if i == _TAGS else v for i, v in enumerate(dataclasses.astuple(fb)))


def delete_inferences(c: sqlite3.Connection, ids: list[str]) -> tuple[int, int]:
    """Delete these inference rows and every judgment on them (inside the caller's transaction)."""
    marks = ",".join("?" * len(ids))
    feedback = c.execute(f"DELETE FROM feedback WHERE inference_id IN ({marks}) OR rejected_id IN ({marks})", ids + ids)
    n_feedback = feedback.rowcount
    return c.execute(f"DELETE FROM inferences WHERE id IN ({marks})", ids).rowcount, n_feedback


def migrate(c: sqlite3.Connection) -> None:
    """The base schema, then each step of MIGRATIONS not yet applied, under one write lock."""
    c.executescript(SCHEMA)
    with c:
        c.execute("BEGIN IMMEDIATE")  # a second process opening the same file waits here
        done = c.execute("PRAGMA user_version").fetchone()[0]
        for number, script in enumerate(MIGRATIONS, start=1):
            if number > done:
                for statement in filter(str.strip, script.split(";")):
                    c.execute(statement)
        if len(MIGRATIONS) > done:
            c.execute(f"PRAGMA user_version = {len(MIGRATIONS)}")


class _Connection:
    """A sqlite3 connection used from worker threads, one statement group at a time."""

    def __init__(self, path: Path, synchronous: str) -> None:
        self.conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=30)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute(f"PRAGMA synchronous={synchronous}")
        self.lock = threading.Lock()

    async def run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        def locked() -> T:
            with self.lock:
                return fn(self.conn)

        return await asyncio.to_thread(locked)

    def close(self) -> None:
        with self.lock:
            self.conn.close()


class SqliteLedger(Ledger):
    def __init__(self, path: Path, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.path = Path(path)
        self._writer_conn: _Connection | None = None
        self._conn: _Connection | None = None

    async def _open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = _Connection(self.path, "FULL")
        await self._conn.run(migrate)
        self._writer_conn = _Connection(self.path, "NORMAL")

    async def _close(self) -> None:
        for conn in (self._writer_conn, self._conn):
            if conn is not None:
                conn.close()

    @property
    def _db(self) -> _Connection:
        assert self._conn is not None, "ledger not started"
        return self._conn

    async def _write_inferences(self, batch: list[InferenceRecord]) -> None:
        rows = [inference_row(r) for r in batch]
        placeholders = ",".join("?" * N_INFERENCE)

        def write(c: sqlite3.Connection) -> None:
            with c:
                c.execute("BEGIN")
                c.executemany(f"INSERT OR REPLACE INTO inferences ({INFERENCE_COLUMNS}) VALUES ({placeholders})", rows)

        assert self._writer_conn is not None
        await self._writer_conn.run(write)

    async def _purge_batch(self, cutoff: float, limit: int) -> tuple[int, int]:
        def purge(c: sqlite3.Connection) -> tuple[int, int]:
            with c:
                c.execute("BEGIN IMMEDIATE")
                sql = "SELECT id FROM inferences WHERE created_at < ? ORDER BY created_at LIMIT ?"
                ids = [row[0] for row in c.execute(sql, (cutoff, limit))]
                if ids:
                    return delete_inferences(c, ids)
                sql = "DELETE FROM feedback WHERE id IN (SELECT id FROM feedback WHERE created_at < ? LIMIT ?)"
                return 0, c.execute(sql, (cutoff, limit)).rowcount

        # on the writer's connection: this process's inference batches and the purge take turns
        # on its lock instead of waiting in SQLite's busy handler; NORMAL sync (a purge lost to a
        # power cut is done again by the next pass)
        assert self._writer_conn is not None
        return await self._writer_conn.run(purge)

    async def _forget_batch(self, users: list[str], limit: int) -> tuple[int, int]:
        marks = ",".join("?" * len(users))

        def forget(c: sqlite3.Connection) -> tuple[int, int]:
            with c:
                c.execute("BEGIN IMMEDIATE")
                sql = f"SELECT id FROM inferences WHERE {_USER} IN ({marks}) LIMIT ?"
                ids = [row[0] for row in c.execute(sql, (*users, limit))]
                if len(ids) < limit:  # what they judged on an inference that names no user
                    sql = (
                        f"SELECT DISTINCT i.id FROM feedback f JOIN inferences i ON i.id = f.inference_id "
                        f"WHERE f.user_id IN ({marks}) AND json_extract(i.metadata, '$.user') IS NULL LIMIT ?"
                    )
                    ids += [row[0] for row in c.execute(sql, (*users, limit - len(ids)))]
                if ids:
                    return delete_inferences(c, ids)
                sql = f"DELETE FROM feedback WHERE id IN (SELECT id FROM feedback WHERE user_id IN ({marks}) LIMIT ?)"
                return 0, c.execute(sql, (*users, limit)).rowcount

        return await self._db.run(forget)  # synchronous=FULL: an erasure reported is on disk

    async def inference_exists(self, inference_id: str) -> bool:
        row = await self._db.run(
            lambda c: c.execute("SELECT 1 FROM inferences WHERE id = ?", (inference_id,)).fetchone()
        )
        return row is not None

    async def get_inference(self, inference_id: str) -> InferenceRecord | None:
        row = await self._db.run(
            lambda c: c.execute(f"SELECT {INFERENCE_COLUMNS} FROM inferences WHERE id = ?", (inference_id,)).fetchone()
        )
        return inference_from_row(row) if row else None

    async def _insert_feedback(self, fb: FeedbackRecord) -> tuple[FeedbackRecord, bool]:
        def insert(c: sqlite3.Connection) -> tuple[FeedbackRecord, bool]:
            with c:
                c.execute("BEGIN IMMEDIATE")
                row = c.execute(f"SELECT {FEEDBACK_COLUMNS} FROM feedback WHERE id = ?", (fb.id,)).fetchone()
                if row is not None:
                    return feedback_from_row(row), False
                c.execute(
                    f"INSERT INTO feedback ({FEEDBACK_COLUMNS}) VALUES ({','.join('?' * N_FEEDBACK)})", feedback_row(fb)
                )
                return fb, True

        stored, created = await self._db.run(insert)
        return stored, created

    async def get_feedback(self, feedback_id: str) -> FeedbackRecord | None:
        sql = f"SELECT {FEEDBACK_COLUMNS} FROM feedback WHERE id = ?"
        row = await self._db.run(lambda c: c.execute(sql, (feedback_id,)).fetchone())
        return feedback_from_row(row) if row else None

    async def _change_feedback(self, feedback_id: str, change: Change) -> tuple[FeedbackRecord, bool] | None:
        def apply(c: sqlite3.Connection) -> tuple[FeedbackRecord, bool] | None:
            with c:
                c.execute("BEGIN IMMEDIATE")
                row = c.execute(f"SELECT {FEEDBACK_COLUMNS} FROM feedback WHERE id = ?", (feedback_id,)).fetchone()
                if row is None:
                    return None
                old = feedback_from_row(row)
                new = change(old)  # may raise: the transaction rolls back
                if new is None:
                    return old, False
                c.execute(
                    "UPDATE feedback SET value = ?, comment = ?, updated_at = ?, retracted_at = ? WHERE id = ?",
                    (new.value, new.comment, new.updated_at, new.retracted_at, feedback_id),
                )
                return new, True

        return await self._db.run(apply)

    async def _secret(self, name: str, default: str) -> str:
        def read(c: sqlite3.Connection) -> str:
            with c:
                c.execute("BEGIN IMMEDIATE")
                c.execute("INSERT OR IGNORE INTO ledger_secrets (name, value) VALUES (?, ?)", (name, default))
                return str(c.execute("SELECT value FROM ledger_secrets WHERE name = ?", (name,)).fetchone()[0])

        return await self._db.run(read)

    async def count_feedback(self, spec: str, after: float | None = None) -> int:
        sql = (
            "SELECT count(*) FROM feedback f JOIN inferences i ON i.id = f.inference_id "
            "WHERE i.spec_name = ? AND f.retracted_at IS NULL"
        )
        args: list[Any] = [spec]
        if after is not None:
            sql += " AND coalesce(f.updated_at, f.created_at) > ?"
            args.append(after)
        return int(await self._db.run(lambda c: c.execute(sql, args).fetchone()[0]))

    async def thumb_tallies(self, spec: str, bucket_seconds: float) -> list[ThumbTally]:
        sql = (
            "SELECT i.spec_version, CAST(f.created_at / ? AS INTEGER) AS b, "
            "SUM(CASE WHEN f.value > 0 THEN 1 ELSE 0 END), COUNT(*) FROM feedback f "
            "JOIN inferences i ON i.id = f.inference_id WHERE i.spec_name = ? AND f.kind = ? "
            "AND f.retracted_at IS NULL GROUP BY i.spec_version, b ORDER BY b, i.spec_version"
        )
        rows = await self._db.run(lambda c: c.execute(sql, (bucket_seconds, spec, THUMB)).fetchall())
        return [ThumbTally(v, b * bucket_seconds, int(ups), int(n)) for v, b, ups, n in rows]

    async def _feedback_events(self, spec: str | None, since: float | None, until: float | None) -> list[FeedbackEvent]:
        icols = ", ".join(f"i.{c.strip()}" for c in INFERENCE_COLUMNS.split(","))
        rcols = ", ".join(f"r.{c.strip()}" for c in INFERENCE_COLUMNS.split(","))
        fcols = ", ".join(f"f.{c.strip()}" for c in FEEDBACK_COLUMNS.split(","))
        sql = (
            f"SELECT {fcols}, {icols}, {rcols} FROM feedback f "
            "JOIN inferences i ON i.id = f.inference_id "
            "LEFT JOIN inferences r ON r.id = f.rejected_id WHERE f.retracted_at IS NULL"
        )
        args: list[Any] = []
        if spec is not None:
            sql += " AND i.spec_name = ?"
            args.append(spec)
        if since is not None:
            sql += " AND f.created_at >= ?"
            args.append(since)
        if until is not None:
            sql += " AND f.created_at < ?"
            args.append(until)
        sql += " ORDER BY f.created_at, f.id"
        rows = await self._db.run(lambda c: c.execute(sql, args).fetchall())
        events = []
        f, n = N_FEEDBACK, N_INFERENCE
        r = f + n
        for row in rows:
            rejected = inference_from_row(row[r : r + n]) if row[r] is not None else None
            if row[7] is not None and rejected is None:
                continue  # a pair whose rejected side is not stored yet
            events.append(FeedbackEvent(feedback_from_row(row[:f]), inference_from_row(row[f:r]), rejected))
        return events

    async def outcomes(self, spec: str, since: float | None = None) -> list[Outcome]:
        sql = (
            "SELECT spec_version, arm, status, latency_ms, usage FROM inferences "
            "WHERE spec_name = ? AND arm IS NOT NULL AND created_at >= ?"
        )
        rows = await self._db.run(lambda c: c.execute(sql, (spec, since or 0.0)).fetchall())
        return [
            Outcome(v, arm, status, latency, total_tokens(_unjson(usage))) for v, arm, status, latency, usage in rows
        ]

    async def add_decision(self, rec: DecisionRecord) -> None:
        row = (
            rec.spec, rec.candidate, rec.production, rec.decision, rec.reason, rec.created_at, rec.p_value,
            rec.lift, rec.candidate_ups, rec.candidate_n, rec.production_ups, rec.production_n, _json(rec.details),
        )  # fmt: skip

        def insert(c: sqlite3.Connection) -> None:
            with c:
                c.execute("BEGIN IMMEDIATE")
                c.execute(f"INSERT INTO experiment_decisions ({DECISION_COLUMNS}) VALUES ({','.join('?' * 13)})", row)

        await self._db.run(insert)

    async def decisions(self, spec: str, limit: int | None = None) -> list[DecisionRecord]:
        sql = f"SELECT {DECISION_COLUMNS} FROM experiment_decisions WHERE spec = ? ORDER BY id DESC LIMIT ?"
        rows = await self._db.run(lambda c: c.execute(sql, (spec, -1 if limit is None else limit)).fetchall())
        return [DecisionRecord.from_row(row, _unjson(row[12])) for row in reversed(rows)]

    async def add_conclusions(self, spec: str, records: Sequence[dict[str, Any]]) -> None:
        rows = [(spec, float(r.get("at") or time.time()), _json(r)) for r in records]

        def insert(c: sqlite3.Connection) -> None:
            with c:
                c.execute("BEGIN IMMEDIATE")
                c.executemany("INSERT INTO rule_conclusions (spec, created_at, record) VALUES (?, ?, ?)", rows)

        if rows:
            await self._db.run(insert)

    async def conclusions(self, spec: str) -> list[dict[str, Any]]:
        sql = "SELECT record FROM rule_conclusions WHERE spec = ? ORDER BY id"
        rows = await self._db.run(lambda c: c.execute(sql, (spec,)).fetchall())
        return [_unjson(row[0]) for row in rows]

    async def model_counts(self, spec: str | None, since: float | None = None) -> dict[str, int]:
        sql = "SELECT model, count(*) FROM inferences WHERE status = 'ok' AND model IS NOT NULL AND created_at >= ?"
        args: list[Any] = [since or 0.0]
        if spec is not None:
            sql += " AND spec_name = ?"
            args.append(spec)
        rows = await self._db.run(lambda c: c.execute(sql + " GROUP BY model", args).fetchall())
        return {str(model): int(n) for model, n in rows}
