"""PostgreSQL stopped under load: inference keeps being served (its ledger rows held in memory,
dropped and counted only once the buffer is full), feedback answers 503 `storage_unavailable` with
`Retry-After`, `/readyz` says the database is why, and all of it comes back by itself when the
database does: the buffered rows are written, feedback is taken again, readiness returns.

The database is a throwaway cluster of this module's own (initdb + pg_ctl in a temp dir on a free
port, with the binaries the suite's server runs: scripts/ci-postgres.sh), so stopping it disturbs
no other test. Without those binaries the tests skip, except under CI, where they fail.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from openai import AsyncOpenAI

from helpers import FakeUpstream, ProxyProcess, free_port, start_proxy
from proxy import metrics
from proxy.errors import ServiceUnavailable
from proxy.ledger import THUMB, FeedbackRecord, InferenceRecord

IN_CI = os.environ.get("CI", "").lower() in ("true", "1")
DEADLINE = 60.0  # for each condition polled for: generous on a loaded 2-core box, never a timing claim
OUTAGE_HELD = 3.0  # the database stays down this long at least: 30 registry polls, several writer retries


# -- a PostgreSQL cluster of this module's own -----------------------------------------------------
def _bindir() -> Path | None:
    """The newest installed server's binaries, as scripts/ci-postgres.sh picks its version."""
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"), key=lambda p: int(p.parts[-3]))
    if versions:
        return versions[-1].parent
    found = shutil.which("pg_ctl")
    return Path(found).resolve().parent if found else None


@dataclass
class Cluster:
    """initdb'd into `root`; `stop` is `pg_ctl stop -m fast`, as an operator (or a failover) does."""

    bindir: Path
    root: Path
    port: int = field(default_factory=free_port)

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *argv: str) -> None:
        as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []  # initdb refuses root
        done = subprocess.run([*as_postgres, *argv], capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            log = (self.root / "server.log").read_text(errors="replace") if (self.root / "server.log").exists() else ""
            raise RuntimeError(f"{argv[0]} failed: {done.stdout}{done.stderr}\n{log}")

    def init(self) -> None:
        self._run(str(self.bindir / "initdb"), "-D", str(self.root / "data"), "-U", "postgres",
                  "--auth=trust", "-E", "UTF8", "--no-sync")  # fmt: skip

    def start(self) -> None:
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1"
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.root / "data"), "-l", str(self.root / "server.log"),
                  "-o", options, "-w", "start")  # fmt: skip

    def stop(self, mode: str = "fast") -> None:
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.root / "data"), "-m", mode, "-w", "stop")

    @property
    def running(self) -> bool:
        return (self.root / "data" / "postmaster.pid").exists()

    def processes(self) -> list[int]:
        """The postmaster and every process it started (backends, checkpointer, ...)."""
        postmaster = int((self.root / "data" / "postmaster.pid").read_text().split()[0])
        children = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            with contextlib.suppress(OSError, IndexError, ValueError):
                if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == postmaster:
                    children.append(int(stat.parent.name))
        return [postmaster, *children]


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    bindir = _bindir()
    if bindir is None or (os.geteuid() == 0 and shutil.which("runuser") is None):
        message = "PostgreSQL server binaries (initdb, pg_ctl) not found: run scripts/ci-postgres.sh"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    root = Path(tempfile.mkdtemp(prefix="speclearn-outage-"))  # not pytest's tmp: the postgres user must enter it
    if os.geteuid() == 0:
        shutil.chown(root, "postgres")
    handle = Cluster(bindir, root)
    try:
        handle.init()
        handle.start()
        yield handle
    finally:
        if handle.running:
            with contextlib.suppress(Exception):
                handle.stop("immediate")
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def running(cluster: Cluster) -> Iterator[Cluster]:
    """The cluster, up at the start of the test and again after it, whatever the test did."""
    if not cluster.running:
        cluster.start()
    yield cluster
    if not cluster.running:
        cluster.start()


async def fresh_schema(cluster: Cluster) -> str:
    """A DSN on a schema of its own, so each test's rows are its own."""
    import asyncpg

    from proxy.pg import with_search_path

    schema = f"t_{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(cluster.dsn)
    try:
        await conn.execute(f"CREATE SCHEMA {schema}")
    finally:
        await conn.close()
    return with_search_path(cluster.dsn, schema)


async def fetch(dsn: str, sql: str, *args: Any) -> list[Any]:
    import asyncpg

    from proxy.pg import normalize_dsn

    conn = await asyncpg.connect(normalize_dsn(dsn))
    try:
        return list(await conn.fetch(sql, *args))
    finally:
        await conn.close()


async def eventually(what: str, check: Callable[[], Awaitable[bool]]) -> None:
    """Poll `check` until it holds; fail naming `what` past the deadline."""
    deadline = time.monotonic() + DEADLINE
    while not await check():
        if time.monotonic() > deadline:
            pytest.fail(f"not reached within {DEADLINE:.0f} s: {what}")
        await asyncio.sleep(0.1)


def inference(id_: str) -> InferenceRecord:
    return InferenceRecord(id_, time.time(), "chat", "m", "default", 1, None, {"messages": []})


# -- the proxy under load, PostgreSQL stopped and started ------------------------------------------
@dataclass
class Load:
    """Clients sending completions through the official openai client, each one's outcome kept."""

    client: AsyncOpenAI
    phase: str = "before"
    served: dict[str, list[tuple[str, str]]] = field(default_factory=dict)  # phase -> (id, X-Spec-Version)
    failures: list[str] = field(default_factory=list)
    stopping: bool = False

    async def run(self) -> None:
        n = 0
        while not self.stopping:
            began, n = self.phase, n + 1
            try:
                raw = await self.client.chat.completions.with_raw_response.create(
                    model="fake-model", messages=[{"role": "user", "content": f"question {n}"}]
                )
                completion = raw.parse()
            except Exception as exc:  # noqa: BLE001 - every failure is the finding
                self.failures.append(f"{began}: {exc!r}")
                continue
            if began == self.phase:  # began and ended in one phase: not a request across the stop
                self.served.setdefault(began, []).append((completion.id, raw.headers.get("x-spec-version", "")))
            await asyncio.sleep(0.005)  # steady load, not a benchmark: the cores are shared

    def ids(self, phase: str | None = None) -> list[str]:
        return [i for p, got in self.served.items() if phase in (None, p) for i, _ in got]


async def feedback(
    client: httpx.AsyncClient, proxy: ProxyProcess, inference_id: str, feedback_id: str
) -> httpx.Response:
    body = {"inference_id": inference_id, "value": "down", "comment": "too long", "feedback_id": feedback_id}
    return await client.post(f"{proxy.base_url}/feedback", json=body)


def metric(text: str, name: str) -> float:
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(name + " "))


@pytest.fixture
async def outage_proxy(running: Cluster, fake_upstream: FakeUpstream, tmp_path: Path) -> AsyncIterator[ProxyProcess]:
    """A `speclearn serve` on the cluster, with a `default` spec published in its registry."""
    from proxy.registry.postgres import PostgresRegistry

    registry = PostgresRegistry(running.dsn, poll_interval=0)
    await registry.publish("default", "OUTAGE SPEC")
    await registry.close()
    proxy = await asyncio.to_thread(
        start_proxy, tmp_path, fake_upstream.url, {"SPECLEARN_DATABASE_URL": running.dsn}, specs={}
    )
    yield proxy
    await asyncio.to_thread(proxy.stop)


async def test_inference_rides_out_a_postgres_outage_and_everything_recovers(
    running: Cluster, outage_proxy: ProxyProcess
) -> None:
    proxy, cluster = outage_proxy, running
    load = Load(AsyncOpenAI(base_url=proxy.base_url, api_key="sk-test", max_retries=0, timeout=30))
    workers = [asyncio.create_task(load.run()) for _ in range(4)]
    try:
        async with httpx.AsyncClient(timeout=30) as client:

            async def stored(ids: list[str]) -> int:
                rows = await fetch(cluster.dsn, "SELECT count(*) FROM inferences WHERE id = ANY($1::text[])", ids)
                return int(rows[0][0])

            await eventually("rows written before the outage", lambda: _at_least(stored(load.ids("before")), 10))

            await asyncio.to_thread(cluster.stop)  # pg_ctl stop -m fast, mid-load
            load.phase = "down"

            async def served_while_down() -> bool:
                return len(load.ids("down")) >= 40

            await eventually("completions served while the database is down", served_while_down)
            assert not load.failures, load.failures[:5]
            assert {version for _, version in load.served["down"]} == {"default@1"}  # the registry's last snapshot

            # feedback is refused, not presumed saved: on a row only in the buffer, and on a stored one
            buffered_id, stored_id = load.ids("down")[0], load.ids("before")[0]
            for inference_id, feedback_id in ((buffered_id, "fb-outage-buffered"), (stored_id, "fb-outage-stored")):
                refused = await feedback(client, proxy, inference_id, feedback_id)
                assert refused.status_code == 503, refused.text
                assert refused.json() == {"error": {"message": refused.json()["error"]["message"],
                                                    "type": "server_error", "param": None,
                                                    "code": "storage_unavailable"}}  # fmt: skip
                assert int(refused.headers["retry-after"]) > 0
            changed = await client.put(f"{proxy.base_url}/feedback/fb-anything", json={"value": "up"})
            assert changed.status_code == 503 and changed.json()["error"]["code"] == "storage_unavailable"

            ready = await client.get(f"{proxy.root_url}/readyz")
            assert ready.status_code == 503, ready.text
            body = ready.json()
            assert body["status"] == "not ready" and body["checks"]["database"] is False
            assert f"PostgreSQL at 127.0.0.1:{cluster.port}/postgres" in body["reason"], body
            assert body["reasons"]["database"] == body["reason"]
            # the probe the Kubernetes manifest uses: this replica still answers, so it stays in service
            serving = await client.get(f"{proxy.root_url}/readyz?exclude=database&exclude=ledger_queue")
            assert serving.status_code == 200 and serving.json()["checks"]["database"] is False, serving.text
            typo = await client.get(f"{proxy.root_url}/readyz?exclude=databse")
            assert typo.status_code == 400 and "databse" in typo.json()["error"]["message"]

            async def buffer_gauge_up() -> bool:
                text = (await client.get(f"{proxy.root_url}/metrics")).text
                return metric(text, "speclearn_ledger_queue_depth") > 0

            await eventually("the buffered rows show in speclearn_ledger_queue_depth", buffer_gauge_up)
            assert (await client.get(f"{proxy.root_url}/readyz")).json()["ledger_buffered"] > 0
            await asyncio.sleep(OUTAGE_HELD)  # under load, through dozens of registry polls and writer retries
            assert not load.failures, load.failures[:5]

            await asyncio.to_thread(cluster.start)
            load.phase = "after"

            async def ready_again() -> bool:
                return (await client.get(f"{proxy.root_url}/readyz")).status_code == 200

            await eventually("/readyz back to 200", ready_again)
            await eventually("completions served after the return", lambda: _true(len(load.ids("after")) >= 10))
            load.stopping = True
            await asyncio.gather(*workers)
            assert not load.failures, load.failures[:5]

            every = load.ids()
            await eventually(
                "every served inference's row in the database", lambda: _at_least(stored(every), len(every))
            )

            # the same feedback, sent again, is taken now: it was never stored while refused
            for inference_id, feedback_id in ((buffered_id, "fb-outage-buffered"), (stored_id, "fb-outage-stored")):
                accepted = await feedback(client, proxy, inference_id, feedback_id)
                assert accepted.status_code == 200, accepted.text
                assert accepted.json() == {"feedback_id": feedback_id, "status": "created"}
            rows = await fetch(cluster.dsn, "SELECT id, inference_id FROM feedback ORDER BY id")
            assert [tuple(r) for r in rows] == [("fb-outage-buffered", buffered_id), ("fb-outage-stored", stored_id)]

            text = (await client.get(f"{proxy.root_url}/metrics")).text
            assert metric(text, "speclearn_ledger_dropped_total") == 0
    finally:
        load.stopping = True
        for task in workers:
            task.cancel()
        await asyncio.gather(*workers, return_exceptions=True)

    log = proxy.log()
    # said once each, not once per poll (every 0.1 s here) or per batch retried
    assert log.count("spec registry unavailable") == 1, log
    assert log.count("holding inference rows in memory") == 1, log
    assert "spec registry reload failed" not in log
    assert "Failed to restore the pool connection floor" not in log  # asyncpg's own retries, each with a traceback
    assert log.count("spec registry reachable again") == 1
    assert log.count("ledger storage is back") == 1


async def _at_least(count: Awaitable[int], n: int) -> bool:
    return await count >= n


async def _true(value: bool) -> bool:
    return value


# -- the ledger alone: a full buffer, a close during the outage, a server that stops answering -----
async def test_a_full_buffer_drops_and_counts_rows_while_the_database_is_down(running: Cluster) -> None:
    from proxy.ledger.postgres import PostgresLedger

    dsn = await fresh_schema(running)
    ledger = PostgresLedger(dsn, queue_size=4, batch_size=2, flush_interval=0)
    await ledger.start()
    try:
        await asyncio.to_thread(running.stop)
        dropped = metrics.LEDGER_DROPPED._value.get()
        assert ledger.record(inference("held-0")) and ledger.record(inference("held-1"))
        await eventually("the writer holds its batch", lambda: _true(ledger.unavailable is not None))
        accepted = [ledger.record(inference(f"queued-{i}")) for i in range(4)]  # the buffer: the queue's 4
        refused = [ledger.record(inference(f"over-{i}")) for i in range(3)]
        assert accepted == [True] * 4 and refused == [False] * 3
        assert metrics.LEDGER_DROPPED._value.get() - dropped == 3
        assert ledger.buffered == 6
        await eventually("the gauge counts the held batch too",
                         lambda: _true(metrics.LEDGER_QUEUE_DEPTH._value.get() == 6))  # fmt: skip
        problem = await ledger.storage_problem()
        assert problem is not None and f"PostgreSQL at 127.0.0.1:{running.port}" in problem
        with pytest.raises(ServiceUnavailable) as refused_feedback:  # on a row only in the buffer
            await ledger.add_feedback(FeedbackRecord("fb-1", "held-0", THUMB, 1.0, time.time()))
        assert refused_feedback.value.code == "storage_unavailable"

        await asyncio.to_thread(running.start)
        wanted = ["held-0", "held-1", *(f"queued-{i}" for i in range(4))]

        async def all_written() -> bool:
            return all([await ledger.inference_exists(i) for i in wanted])

        await eventually("the buffered rows written", all_written)
        assert not any([await ledger.inference_exists(f"over-{i}") for i in range(3)])
        await eventually("the writer past the outage", lambda: _true(ledger.unavailable is None))
        assert await ledger.storage_problem() is None
        assert (await ledger.add_feedback(FeedbackRecord("fb-1", "held-0", THUMB, 1.0, time.time())))[1]
        assert metrics.LEDGER_DROPPED._value.get() - dropped == 3
    finally:
        await ledger.close()


async def test_closing_during_an_outage_drops_and_counts_what_is_held(running: Cluster) -> None:
    from proxy.ledger.postgres import PostgresLedger

    ledger = PostgresLedger(await fresh_schema(running), batch_size=2, flush_interval=0)
    await ledger.start()
    closed = False
    try:
        await asyncio.to_thread(running.stop)
        dropped = metrics.LEDGER_DROPPED._value.get()
        for i in range(5):
            ledger.record(inference(f"r-{i}"))
        await eventually("the writer holds its batch", lambda: _true(ledger.unavailable is not None))
        await asyncio.wait_for(ledger.close(), DEADLINE)  # a stopping replica does not wait for the database
        closed = True
        assert metrics.LEDGER_DROPPED._value.get() - dropped == 5
    finally:
        if not closed:
            await ledger.close()


async def test_feedback_fails_fast_when_the_server_stops_answering(running: Cluster) -> None:
    """A frozen server (every process SIGSTOPped: a partition looks the same) accepts connections
    and answers nothing; asyncpg would wait 60 s to connect and forever on a query."""
    from proxy.ledger.postgres import PostgresLedger

    ledger = PostgresLedger(await fresh_schema(running), flush_interval=0)
    await ledger.start()
    frozen = running.processes()
    try:
        for pid in frozen:
            os.kill(pid, signal.SIGSTOP)
        with pytest.raises(ServiceUnavailable):  # the deadline only catches a hang: 2 x 3 s expected
            await asyncio.wait_for(ledger.add_feedback(FeedbackRecord("fb-f", "i-f", THUMB, 1.0, time.time())), 40)
        assert await asyncio.wait_for(ledger.storage_problem(), 10) is not None
    finally:
        for pid in frozen:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
        await ledger.close()
