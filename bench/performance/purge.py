"""``python -m bench.performance.purge``: the retention purge on a big ledger while a writer keeps inserting.

For each backend: fill a ledger with N inference rows (half of them older than the retention,
every tenth with a thumb) by a bulk insert, then run `Retention.purge` (proxy/retention.py: the
batches the proxy runs) while another process inserts the way a proxy worker's ledger writer
does (a transaction of 10 rows every 10 ms) and times each of its transactions. Reported: the
purge's duration and rows, and the writer's worst and 99th-percentile transaction latency
during the purge against a baseline of the same writer with no purge. With `--naive` (SQLite)
the same is measured for one unbatched `DELETE ... WHERE created_at < cutoff`, on a copy of the
file, to show what the batches avoid.

PostgreSQL needs the `postgres` extra and a server (`--pg-url`, default the tests' database;
a throw-away schema is dropped afterwards).
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import io
import json
import multiprocessing as mp
import os
import platform
import shutil
import sqlite3
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from proxy.ledger.sqlite import SqliteLedger
from proxy.retention import Retention

DAY = 86400.0
DEFAULT_OUT = Path(__file__).resolve().parents[1] / "results" / "purge.json"
WRITER_ROWS, WRITER_EVERY = 10, 0.010  # one writer transaction: rows, seconds between them
COLUMNS = (
    "id, created_at, route, model, spec_name, spec_version, spec_hash, request, response_text, usage, latency_ms, "
    "status, http_status, metadata"
)


def _row(i: int, now: float, n: int) -> tuple[Any, ...]:
    """Row i of n: the first half 60 to 90 days old (past a 30-day retention), the rest recent."""
    old = i < n // 2
    at = now - (60 + 30 * i / n) * DAY if old else now - 10 * DAY * (i - n // 2) / n
    request = json.dumps(
        {"model": "m", "messages": [{"role": "user", "content": f"question {i}: how do I reset my password?"}]}
    )
    return (f"b-{i}", at, "chat", "m", "support", 1, "ab" * 32, request,
            f"answer {i}: open Settings, then Security, then Reset.", '{"total_tokens": 42}', 812.5, "ok", 200,
            json.dumps({"user": f"u{i % 5000}"}))  # fmt: skip


# -- the writer: another process, as another worker's ledger writer would be ------------------------
def _sqlite_writer(path: str, stop: Any, out: Any) -> None:
    conn = sqlite3.connect(path, isolation_level=None, timeout=30)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    latencies, k, now = [], 0, time.time()
    marks = ",".join("?" * len(COLUMNS.split(",")))
    while not stop.is_set():
        rows = [_live(k + j, now) for j in range(WRITER_ROWS)]
        k += WRITER_ROWS
        t = time.perf_counter()
        conn.execute("BEGIN")
        conn.executemany(f"INSERT OR REPLACE INTO inferences ({COLUMNS}) VALUES ({marks})", rows)
        conn.execute("COMMIT")
        latencies.append(time.perf_counter() - t)
        time.sleep(WRITER_EVERY)
    out.send(latencies)


def _live(k: int, now: float) -> tuple[Any, ...]:
    row = list(_row(k, now, 2))
    row[0], row[1] = f"live-{os.getpid()}-{k}", time.time()
    return tuple(row)


def _pg_writer(dsn: str, stop: Any, out: Any) -> None:
    from proxy.ledger.postgres import _UPSERT_INFERENCES
    from proxy.pg import connect

    async def run() -> list[float]:
        conn = await connect(dsn)
        latencies, k, now = [], 0, time.time()
        while not stop.is_set():
            rows = []
            for j in range(WRITER_ROWS):
                r = _live(k + j, now)
                rows.append((r[0], r[1], r[2], r[3], r[4], r[5], r[6], json.loads(r[7]), r[8], None, json.loads(r[9]),
                             r[10], None, r[11], r[12], None, json.loads(r[13]), None, None))  # fmt: skip
            k += WRITER_ROWS
            t = time.perf_counter()
            async with conn.transaction():
                await conn.execute("SET LOCAL synchronous_commit = off")
                await conn.executemany(_UPSERT_INFERENCES, rows)
            latencies.append(time.perf_counter() - t)
            await asyncio.sleep(WRITER_EVERY)
        await conn.close()
        return latencies

    out.send(asyncio.run(run()))


class Writer:
    """The writer process: started, then stopped with its transaction latencies."""

    def __init__(self, target: Any, where: str) -> None:
        ctx = mp.get_context("spawn")
        self.stop = ctx.Event()
        self.recv, send = ctx.Pipe(duplex=False)
        self.proc = ctx.Process(target=target, args=(where, self.stop, send), daemon=True)

    def __enter__(self) -> Writer:
        self.proc.start()
        time.sleep(1.0)  # let it connect and warm up
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.proc.is_alive():
            self.stop.set()
            self.proc.join(30)

    def latencies(self) -> list[float]:
        self.stop.set()
        got = self.recv.recv()
        self.proc.join(30)
        return got[5:]  # the first transactions open the connection's caches


def summary(latencies: list[float]) -> dict[str, Any]:
    ms = sorted(x * 1000 for x in latencies)
    if not ms:
        return {"transactions": 0}
    return {"transactions": len(ms), "p50_ms": round(statistics.median(ms), 2),
            "p99_ms": round(ms[min(len(ms) - 1, int(0.99 * len(ms)))], 2), "max_ms": round(ms[-1], 2)}  # fmt: skip


# -- SQLite ------------------------------------------------------------------------------------------
def fill_sqlite(path: Path, n: int) -> float:
    asyncio.run(_create_sqlite(path))
    started, now = time.monotonic(), time.time()
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA synchronous=OFF")
    marks = ",".join("?" * len(COLUMNS.split(",")))
    conn.execute("BEGIN")
    for start in range(0, n, 50_000):
        conn.executemany(f"INSERT INTO inferences ({COLUMNS}) VALUES ({marks})",
                         (_row(i, now, n) for i in range(start, min(n, start + 50_000))))  # fmt: skip
    conn.executemany(
        "INSERT INTO feedback (id, inference_id, kind, value, created_at, user_id) VALUES (?, ?, 'thumb', 1.0, ?, ?)",
        ((f"fb-{i}", f"b-{i}", _row(i, now, n)[1] + 60, f"u{i % 5000}") for i in range(0, n, 10)),
    )  # fmt: skip
    conn.execute("COMMIT")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    return time.monotonic() - started


async def _create_sqlite(path: Path) -> None:
    ledger = SqliteLedger(path)
    await ledger.start()
    await ledger.close()


async def _purge_sqlite(path: Path, retention: Retention) -> dict[str, Any]:
    ledger = SqliteLedger(path)
    await ledger.start()
    try:
        done = await retention.purge(ledger)
    finally:
        await ledger.close()
    return {
        "inferences": done.inferences,
        "feedback": done.feedback,
        "seconds": round(done.seconds, 2),
        "batches": done.batches,
    }


def naive_delete(path: Path, cutoff: float) -> dict[str, Any]:
    conn = sqlite3.connect(path, isolation_level=None, timeout=60)
    started = time.monotonic()
    conn.execute("BEGIN IMMEDIATE")
    fb = conn.execute(
        "DELETE FROM feedback WHERE inference_id IN (SELECT id FROM inferences WHERE created_at < ?)", (cutoff,)
    ).rowcount
    inf = conn.execute("DELETE FROM inferences WHERE created_at < ?", (cutoff,)).rowcount
    conn.execute("COMMIT")
    conn.close()
    return {"inferences": inf, "feedback": fb, "seconds": round(time.monotonic() - started, 2), "batches": 1}


def bench_sqlite(n: int, retention: Retention, naive: bool, baseline: float) -> dict[str, Any]:
    folder = Path(tempfile.mkdtemp(prefix="speclearn-purge-"))
    try:
        path = folder / "ledger.sqlite3"
        fill = fill_sqlite(path, n)
        print(f"sqlite: {n} rows in {fill:.1f} s ({path.stat().st_size / 1e6:.0f} MB)", flush=True)
        if naive:
            shutil.copy(path, folder / "naive.sqlite3")
        with Writer(_sqlite_writer, str(path)) as w:
            time.sleep(baseline)
            quiet = w.latencies()
        with Writer(_sqlite_writer, str(path)) as w:
            purge = asyncio.run(_purge_sqlite(path, retention))
            during = w.latencies()
        out: dict[str, Any] = {"rows": n, "fill_seconds": round(fill, 1), "purge": purge,
                               "writer_without_purge": summary(quiet), "writer_during_purge": summary(during)}  # fmt: skip
        print(
            f"sqlite purge: {purge}; writer {out['writer_during_purge']} (alone {out['writer_without_purge']})",
            flush=True,
        )
        if naive:
            with Writer(_sqlite_writer, str(folder / "naive.sqlite3")) as w:
                one = naive_delete(folder / "naive.sqlite3", retention.cutoff())
                time.sleep(0.2)
                naive_during = w.latencies()
            out["naive_single_delete"] = {"purge": one, "writer_during_purge": summary(naive_during)}
            print(f"sqlite naive delete: {one}; writer {summary(naive_during)}", flush=True)
        return out
    finally:
        shutil.rmtree(folder, ignore_errors=True)


# -- PostgreSQL ----------------------------------------------------------------------------------------
async def _pg(dsn: str, statement: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


def _csv(rows: Any) -> io.BytesIO:
    buf = io.StringIO()
    csv.writer(buf).writerows(rows)
    return io.BytesIO(buf.getvalue().encode())


async def fill_pg(dsn: str, n: int) -> float:
    from proxy.ledger.postgres import PostgresLedger
    from proxy.pg import connect

    ledger = PostgresLedger(dsn)
    await ledger.start()  # the schema, with every migration
    await ledger.close()
    started, now = time.monotonic(), time.time()
    conn = await connect(dsn)
    try:
        cols = [c.strip() for c in COLUMNS.split(",")]
        for start in range(0, n, 50_000):  # CSV through COPY: json columns go as text
            rows = (_row(i, now, n) for i in range(start, min(n, start + 50_000)))
            await conn.copy_to_table("inferences", source=_csv(rows), columns=cols, format="csv")
        fb = ((f"fb-{i}", f"b-{i}", "thumb", 1.0, _row(i, now, n)[1] + 60, f"u{i % 5000}") for i in range(0, n, 10))
        await conn.copy_to_table("feedback", source=_csv(fb), format="csv",
                                 columns=["id", "inference_id", "kind", "value", "created_at", "user_id"])  # fmt: skip
        await conn.execute("ANALYZE inferences; ANALYZE feedback")
    finally:
        await conn.close()
    return time.monotonic() - started


async def _purge_pg(dsn: str, retention: Retention) -> dict[str, Any]:
    from proxy.ledger.postgres import PostgresLedger

    ledger = PostgresLedger(dsn)
    await ledger.start()
    try:
        done = await retention.purge(ledger)
    finally:
        await ledger.close()
    return {
        "inferences": done.inferences,
        "feedback": done.feedback,
        "seconds": round(done.seconds, 2),
        "batches": done.batches,
    }


def bench_pg(url: str, n: int, retention: Retention, baseline: float) -> dict[str, Any]:
    from proxy.pg import with_search_path

    schema = f"bench_purge_{uuid.uuid4().hex[:8]}"
    asyncio.run(_pg(url, f"CREATE SCHEMA {schema}"))
    dsn = with_search_path(url, schema)
    try:
        fill = asyncio.run(fill_pg(dsn, n))
        print(f"postgres: {n} rows in {fill:.1f} s", flush=True)
        with Writer(_pg_writer, dsn) as w:
            time.sleep(baseline)
            quiet = w.latencies()
        with Writer(_pg_writer, dsn) as w:
            purge = asyncio.run(_purge_pg(dsn, retention))
            during = w.latencies()
        out = {"rows": n, "fill_seconds": round(fill, 1), "purge": purge,
               "writer_without_purge": summary(quiet), "writer_during_purge": summary(during)}  # fmt: skip
        print(
            f"postgres purge: {purge}; writer {out['writer_during_purge']} (alone {out['writer_without_purge']})",
            flush=True,
        )
        return out
    finally:
        asyncio.run(_pg(url, f"DROP SCHEMA {schema} CASCADE"))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.performance.purge", description=__doc__.split("\n")[0])
    p.add_argument("--rows", type=int, default=1_000_000, help="SQLite ledger rows (half purged)")
    p.add_argument("--pg-rows", type=int, default=1_000_000, help="PostgreSQL ledger rows (0 skips)")
    p.add_argument(
        "--pg-url", default=os.environ.get("SPECLEARN_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")
    )
    p.add_argument("--batch", type=int, default=1000, help="rows per purge statement (proxy.tuning.LEDGER_PURGE_BATCH)")
    p.add_argument(
        "--pause", type=float, default=0.05, help="seconds between batches (proxy.tuning.LEDGER_PURGE_PAUSE)"
    )
    p.add_argument("--baseline", type=float, default=5.0, help="seconds of writer latency measured with no purge")
    p.add_argument("--no-naive", action="store_true", help="skip the single unbatched DELETE on SQLite")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    a = p.parse_args(argv)
    retention = Retention(30, batch=a.batch, pause=a.pause)
    result: dict[str, Any] = {"machine": f"{platform.machine()}, {os.cpu_count()} cores", "retention_days": 30,
                              "batch": a.batch, "pause": a.pause, "writer": f"{WRITER_ROWS} rows per transaction every "
                              f"{WRITER_EVERY * 1000:.0f} ms, another process"}  # fmt: skip
    result["sqlite"] = bench_sqlite(a.rows, retention, not a.no_naive, a.baseline)
    if a.pg_rows:
        result["postgres"] = bench_pg(a.pg_url, a.pg_rows, retention, a.baseline)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
