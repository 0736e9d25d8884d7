"""One storage suite, run against every backend: the ledger on SQLite and PostgreSQL, the
registry on files and PostgreSQL. A behaviour that differs between backends is a bug.

PostgreSQL tests each get a fresh schema (dropped afterwards) on `SPECLEARN_TEST_DATABASE_URL`
(default: the local server's `test` database). Without a server they skip, except under CI
(`CI=true`), where a missing PostgreSQL fails the run instead of quietly testing less.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import os
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from prometheus_client import REGISTRY

from compiler.memory import Conclusion, Verdict
from proxy.errors import Conflict, InvalidRequest, NotFound
from proxy.ledger import PAIR, SCORE, THUMB, DecisionRecord, FeedbackRecord, InferenceRecord, Ledger
from proxy.ledger.sqlite import SqliteLedger
from proxy.registry import FileRegistry, Registry, specfile

T = TypeVar("T")

PG_URL = os.environ.get("SPECLEARN_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")
IN_CI = os.environ.get("CI", "").lower() in ("true", "1")


# -- PostgreSQL: one throw-away schema per test ---------------------------------------------------
def run_async(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to completion from sync fixture code, whatever loop the test has."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


_pg_problem: list[str | None] = []


def pg_unavailable() -> str | None:
    """Why PostgreSQL cannot be used here (None when it can); checked once per session."""
    if not _pg_problem:
        try:
            import asyncpg

            async def probe() -> None:
                conn = await asyncpg.connect(PG_URL, timeout=5)
                await conn.close()

            run_async(probe())
            _pg_problem.append(None)
        except Exception as exc:  # noqa: BLE001 - any failure means "no usable server"
            _pg_problem.append(f"PostgreSQL at {PG_URL} unavailable: {exc!r}")
    return _pg_problem[0]


@pytest.fixture
def pg_dsn() -> Iterator[str]:
    """A DSN whose search_path is a brand-new schema, dropped after the test."""
    problem = pg_unavailable()
    if problem:
        if IN_CI:
            pytest.fail(f"{problem} (CI must test the PostgreSQL backends: run scripts/ci-postgres.sh)")
        pytest.skip(problem)
    import asyncpg

    from proxy.pg import with_search_path

    schema = f"t_{uuid.uuid4().hex[:12]}"

    async def sql(statement: str) -> None:
        conn = await asyncpg.connect(PG_URL)
        try:
            await conn.execute(statement)
        finally:
            await conn.close()

    run_async(sql(f"CREATE SCHEMA {schema}"))
    try:
        yield with_search_path(PG_URL, schema)
    finally:
        run_async(sql(f"DROP SCHEMA {schema} CASCADE"))


async def pg_execute(dsn: str, statement: str, *args: Any) -> Any:
    import asyncpg

    from proxy.pg import normalize_dsn

    conn = await asyncpg.connect(normalize_dsn(dsn))
    try:
        return await conn.fetch(statement, *args)
    finally:
        await conn.close()


async def wait_until(check: Callable[[], bool | Awaitable[bool]], timeout: float = 10.0) -> float:
    """Seconds until `check` holds; fails the test after `timeout`."""
    start = time.monotonic()
    while True:
        result = check()
        if not isinstance(result, bool):
            result = await result
        if result:
            return time.monotonic() - start
        if time.monotonic() - start > timeout:
            pytest.fail(f"condition not reached within {timeout}s")
        await asyncio.sleep(0.01)


def served(registry: Registry, name: str, ref: str | int | None = None) -> int | None:
    """The version `ref` resolves to in the registry's current snapshot, None if none (yet)."""
    try:
        return registry.snapshot.resolve(name, ref).version
    except NotFound:
        return None


def counter(name: str) -> float:
    return REGISTRY.get_sample_value(name) or 0.0


# -- ledger fixtures -----------------------------------------------------------------------------
@pytest.fixture(params=["sqlite", "postgres"])
def ledger_store(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, Any]:
    if request.param == "postgres":
        return "postgres", request.getfixturevalue("pg_dsn")
    return "sqlite", tmp_path / "ledger.sqlite3"


MakeLedger = Callable[..., Awaitable[Ledger]]


@pytest.fixture
async def make_ledger(ledger_store: tuple[str, Any]) -> AsyncIterator[MakeLedger]:
    """Opens ledgers on one store (several instances = several workers or replicas)."""
    kind, where = ledger_store
    opened: list[Ledger] = []

    async def make(**kwargs: Any) -> Ledger:
        kwargs.setdefault("flush_interval", 0.01)
        if kind == "postgres":
            from proxy.ledger.postgres import PostgresLedger

            ledger: Ledger = PostgresLedger(where, **kwargs)
        else:
            ledger = SqliteLedger(where, **kwargs)
        await ledger.start()
        opened.append(ledger)
        return ledger

    yield make
    for ledger in opened:
        with contextlib.suppress(Exception):
            await ledger.close()


async def flushed(ledger: Ledger, *ids: str) -> None:
    await wait_until(lambda: not any(ledger.is_pending(i) for i in ids))


def inference(id_: str, *, spec: str | None = "default", at: float | None = None, **fields: Any) -> InferenceRecord:
    return InferenceRecord(
        id=id_,
        created_at=time.time() if at is None else at,
        route="chat",
        model="m-1",
        spec_name=spec,
        spec_version=1 if spec else None,
        spec_hash="ab" * 32 if spec else None,
        request={"model": "support", "messages": [{"role": "user", "content": f"question {id_}"}]},
        **fields,
    )


def thumb(id_: str, inference_id: str, value: float = 1.0, at: float | None = None, **fields: Any) -> FeedbackRecord:
    return FeedbackRecord(id_, inference_id, THUMB, value, time.time() if at is None else at, **fields)


# -- ledger --------------------------------------------------------------------------------------
async def test_record_flush_get_roundtrips_every_field(make_ledger: MakeLedger) -> None:
    ledger = await make_ledger()
    rec = InferenceRecord(
        id="inf-1",
        created_at=1_700_000_000.123456,
        route="chat",
        model="gpt-x",
        spec_name="support",
        spec_version=3,
        spec_hash="f" * 64,
        # key order and unicode must survive: the compiler reads these bodies back
        request={"z": 1, "model": "support", "messages": [{"role": "user", "content": "héllo ✓"}], "temperature": 0.1},
        response_text="answer ✓",
        tool_calls=[{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}],
        usage={"prompt_tokens": 3, "completion_tokens": 5},
        latency_ms=12.5,
        ttft_ms=3.25,
        status="ok",
        http_status=200,
        error=None,
        metadata={"user": "u1", "nested": {"a": [1, 2.5, None]}},
        assignment_unit="user",
        arm="candidate",
        upstream="https://api.example.com/v1",
    )
    assert ledger.record(rec)
    assert ledger.is_pending("inf-1")
    await flushed(ledger, "inf-1")
    assert await ledger.inference_exists("inf-1")
    got = await ledger.get_inference("inf-1")
    assert got == rec
    assert list(got.request) == list(rec.request)  # same key order, not only equal
    assert await ledger.get_inference("nope") is None
    assert not await ledger.inference_exists("nope")


async def test_same_inference_id_twice_last_write_wins(make_ledger: MakeLedger) -> None:
    ledger = await make_ledger(flush_interval=0.2)
    ledger.record(inference("dup", status="incomplete"))
    ledger.record(inference("dup", status="ok", response_text="full"))  # same batch
    await flushed(ledger, "dup")
    got = await ledger.get_inference("dup")
    assert got is not None and (got.status, got.response_text) == ("ok", "full")
    ledger.record(inference("dup", status="error", error="late"))  # a later batch
    await flushed(ledger, "dup")
    got = await ledger.get_inference("dup")
    assert got is not None and (got.status, got.error) == ("error", "late")


async def test_many_rows_are_written_in_batches(make_ledger: MakeLedger) -> None:
    ledger = await make_ledger(queue_size=5000, batch_size=256)
    before = counter("speclearn_ledger_written_total")
    ids = [f"bulk-{i}" for i in range(2000)]
    assert all(ledger.record(inference(i)) for i in ids)
    await flushed(ledger, *ids)
    assert counter("speclearn_ledger_written_total") - before == 2000
    for i in ids[::97]:
        assert await ledger.inference_exists(i)


async def test_nul_characters_do_not_sink_a_batch(make_ledger: MakeLedger) -> None:
    ledger = await make_ledger(flush_interval=0.2)
    bad = inference("nul", response_text="a\x00b", error="e\x00")
    bad.request["messages"][0]["content"] = "with \x00 inside"
    ledger.record(bad)
    ledger.record(inference("neighbour"))
    await flushed(ledger, "nul", "neighbour")
    assert await ledger.inference_exists("neighbour")
    got = await ledger.get_inference("nul")
    assert got is not None
    assert got.request == bad.request  # JSON keeps it exactly
    # PostgreSQL text cannot hold NUL: it becomes U+FFFD rather than losing the row
    assert got.response_text in ("a\x00b", "a\ufffdb")
    fb = thumb("fb-nul", "nul", 1.0, comment="bad\x00comment", tags={"k": "v\x00"})
    assert (await ledger.add_feedback(fb))[1]
    stored, created = await ledger.add_feedback(fb)  # a retry is a duplicate, not a conflict
    assert not created and stored.tags == {"k": "v\x00"}


async def test_full_queue_drops_and_counts(make_ledger: MakeLedger) -> None:
    ledger = await make_ledger(queue_size=2)
    before = counter("speclearn_ledger_dropped_total")
    # record() never awaits, so the writer cannot drain the queue between these calls
    results = [ledger.record(inference(f"q{i}")) for i in range(3)]
    assert results == [True, True, False]
    assert counter("speclearn_ledger_dropped_total") - before == 1
    assert not ledger.is_pending("q2")
    await flushed(ledger, "q0", "q1")
    assert await ledger.inference_exists("q1")
    assert not await ledger.inference_exists("q2")


async def test_feedback_is_idempotent_and_conflicts_on_a_different_judgment(make_ledger: MakeLedger) -> None:
    ledger = await make_ledger()
    first = thumb("fb-1", "inf-1", 1.0, at=100.0, comment="good", tags={"app": "web"})
    stored, created = await ledger.add_feedback(first)
    assert created and stored == first
    retry = thumb("fb-1", "inf-1", 1.0, at=200.0, comment="good", tags={"app": "web"})
    stored, created = await ledger.add_feedback(retry)
    assert not created
    assert stored == first  # the original arrival time is kept
    with pytest.raises(Conflict):
        await ledger.add_feedback(thumb("fb-1", "inf-1", -1.0))
    with pytest.raises(Conflict):
        await ledger.add_feedback(thumb("fb-1", "inf-1", 1.0, comment="good", tags={"app": "ios"}))


async def test_concurrent_duplicate_feedback_creates_one_row(make_ledger: MakeLedger) -> None:
    a, b = await make_ledger(), await make_ledger()  # two workers or replicas
    fb = thumb("fb-race", "inf-1", -1.0, at=5.0)
    results = await asyncio.gather(*(ledger.add_feedback(fb) for ledger in [a, b] * 5))
    assert sum(created for _, created in results) == 1
    assert all(stored == fb for stored, _ in results)


async def test_acknowledged_feedback_is_visible_to_another_instance(make_ledger: MakeLedger) -> None:
    a = await make_ledger()
    fb = thumb("fb-durable", "inf-d", 1.0, at=7.0)
    assert (await a.add_feedback(fb))[1]
    b = await make_ledger()
    stored, created = await b.add_feedback(thumb("fb-durable", "inf-d", 1.0, at=8.0))
    assert not created and stored == fb


async def test_feedback_before_its_inference_is_joined_later(make_ledger: MakeLedger) -> None:
    ledger = await make_ledger()
    _, created = await ledger.add_feedback(thumb("fb-early", "inf-late", 1.0))
    assert created
    assert await ledger.feedback_events() == []  # waits for its inference, is not lost
    ledger.record(inference("inf-late"))
    await flushed(ledger, "inf-late")
    events = await ledger.feedback_events()
    assert [(e.feedback.id, e.inference.id) for e in events] == [("fb-early", "inf-late")]
    assert events[0].rejected is None


async def test_events_filter_by_spec_and_time(make_ledger: MakeLedger) -> None:
    ledger = await make_ledger()
    ledger.record(inference("i-a1", spec="alpha"))
    ledger.record(inference("i-a2", spec="alpha"))
    ledger.record(inference("i-b1", spec="beta"))
    ledger.record(inference("i-none", spec=None))
    await flushed(ledger, "i-a1", "i-a2", "i-b1", "i-none")
    await ledger.add_feedback(thumb("f3", "i-a2", -1.0, at=30.0))
    await ledger.add_feedback(thumb("f1", "i-a1", 1.0, at=10.0))
    await ledger.add_feedback(thumb("f2", "i-b1", 1.0, at=20.0))
    await ledger.add_feedback(FeedbackRecord("f4", "i-none", SCORE, 0.25, 40.0))
    await ledger.add_feedback(thumb("f0b", "i-a1", 1.0, at=10.0))  # same time: ordered by id

    def ids(events: list[Any]) -> list[str]:
        return [e.feedback.id for e in events]

    assert ids(await ledger.feedback_events()) == ["f0b", "f1", "f2", "f3", "f4"]
    assert ids(await ledger.feedback_events(spec="alpha")) == ["f0b", "f1", "f3"]
    assert ids(await ledger.feedback_events(spec="beta")) == ["f2"]
    assert ids(await ledger.feedback_events(spec="gamma")) == []
    assert ids(await ledger.feedback_events(since=20.0)) == ["f2", "f3", "f4"]  # since is inclusive
    assert ids(await ledger.feedback_events(until=20.0)) == ["f0b", "f1"]  # until is exclusive
    assert ids(await ledger.feedback_events(spec="alpha", since=10.0, until=30.0)) == ["f0b", "f1"]
    score = (await ledger.feedback_events(since=40.0))[0]
    assert (score.feedback.kind, score.feedback.value, score.inference.spec_name) == (SCORE, 0.25, None)
    # the sidecar's "is it due?": a count, with `after` exclusive (the end of the last window)
    assert [await ledger.count_feedback("alpha"), await ledger.count_feedback("alpha", after=10.0)] == [3, 1]
    assert [await ledger.count_feedback("beta", after=19.5), await ledger.count_feedback("gamma")] == [1, 0]


async def test_thumb_tallies_count_ups_per_version_and_time_bucket(make_ledger: MakeLedger) -> None:
    ledger = await make_ledger()
    ledger.record(inference("t-v1", spec="alpha"))
    ledger.record(dataclasses.replace(inference("t-v2", spec="alpha"), spec_version=2))
    ledger.record(inference("t-other", spec="beta"))
    await flushed(ledger, "t-v1", "t-v2", "t-other")
    await ledger.add_feedback(thumb("t1", "t-v1", 1.0, at=100.0))
    await ledger.add_feedback(thumb("t2", "t-v1", -1.0, at=119.0))  # same 60 s bucket as t1
    await ledger.add_feedback(thumb("t3", "t-v1", 1.0, at=130.0))  # the next one
    await ledger.add_feedback(thumb("t4", "t-v2", 1.0, at=125.0))
    await ledger.add_feedback(thumb("t5", "t-v2", 1.0, at=170.0))
    await ledger.add_feedback(FeedbackRecord("t6", "t-v2", SCORE, 0.9, 175.0))  # a score is no thumb
    await ledger.add_feedback(FeedbackRecord("t7", "t-v2", PAIR, 1.0, 176.0, rejected_id="t-v1"))  # nor a pair
    await ledger.add_feedback(thumb("t8", "t-other", 1.0, at=100.0))  # another spec

    rows = [(t.version, t.start, t.ups, t.total) for t in await ledger.thumb_tallies("alpha", 60)]
    assert rows == [(1, 60.0, 1, 2), (1, 120.0, 1, 1), (2, 120.0, 2, 2)]
    whole = [(t.version, t.start, t.ups, t.total) for t in await ledger.thumb_tallies("alpha", 1000)]
    assert whole == [(1, 0.0, 2, 3), (2, 0.0, 2, 2)]
    assert await ledger.thumb_tallies("gamma", 60) == []


async def test_pairs_are_joined_with_the_rejected_inference(make_ledger: MakeLedger) -> None:
    ledger = await make_ledger()
    ledger.record(inference("chosen"))
    await flushed(ledger, "chosen")
    pair = FeedbackRecord("p1", "chosen", PAIR, 1.0, 50.0, rejected_id="rejected")
    assert (await ledger.add_feedback(pair))[1]
    assert await ledger.feedback_events() == []  # the rejected side is not stored yet
    ledger.record(inference("rejected", response_text="worse"))
    await flushed(ledger, "rejected")
    [event] = await ledger.feedback_events()
    assert event.feedback == pair
    assert event.inference.id == "chosen"
    assert event.rejected is not None and event.rejected.response_text == "worse"
    assert event.to_dict()["rejected_inference"]["id"] == "rejected"


async def test_outcomes_read_the_arms_rows_with_their_tokens(make_ledger: MakeLedger) -> None:
    ledger = await make_ledger()
    ledger.record(inference("o1", at=100.0, arm="candidate", assignment_unit="user", latency_ms=5.0,
                            usage={"prompt_tokens": 3, "completion_tokens": 4}))  # fmt: skip
    ledger.record(inference("o2", at=101.0, arm="production", assignment_unit="session", status="error",
                            usage={"total_tokens": 9}))  # fmt: skip
    ledger.record(inference("o3", at=102.0))  # pinned: no arm, not an experiment row
    ledger.record(inference("o4", at=50.0, arm="candidate"))  # before `since`
    ledger.record(inference("o5", at=103.0, spec="other", arm="candidate"))
    await flushed(ledger, "o1", "o2", "o3", "o4", "o5")
    got = sorted(await ledger.outcomes("default", since=99.0), key=lambda o: o.arm or "")
    assert [(o.arm, o.status, o.latency_ms, o.tokens, o.spec_version) for o in got] == [
        ("candidate", "ok", 5.0, 7, 1),
        ("production", "error", None, 9, 1),
    ]
    assert len(await ledger.outcomes("default")) == 3


async def test_decision_log_roundtrips_in_order(make_ledger: MakeLedger) -> None:
    ledger = await make_ledger()
    first = DecisionRecord("s", 2, 1, "continue", "undecided", 10.0, 0.4, 0.01, 30, 60, 29, 60,
                           {"alpha": 0.05, "guardrails": {"error_rate": [0.0, 0.01]}})  # fmt: skip
    second = DecisionRecord("s", 2, 1, "promote", "p < alpha", 20.0, 0.01, 0.2, 50, 60, 29, 60)
    await ledger.add_decision(first)
    await ledger.add_decision(DecisionRecord("other", 5, 4, "rollback", "guardrail", 15.0))
    await ledger.add_decision(second)
    assert await ledger.decisions("s") == [first, second]
    assert await ledger.decisions("s", limit=1) == [second]
    assert await ledger.decisions("nope") == []
    again = await make_ledger()  # another worker or the CLI reads the same log
    assert [d.decision for d in await again.decisions("other")] == ["rollback"]


async def test_rule_conclusions_roundtrip_in_order_per_spec(make_ledger: MakeLedger) -> None:
    ledger = await make_ledger()
    refused = Conclusion("s", "check:max_words(25)", "Keep it short.", Verdict.REFUSED, 10.0, 9.0, "gate: p = 0.4",
                         None, {"support": 3, "relevant": 5})  # fmt: skip
    live = Conclusion("s", "check:list", "Use bullets.", Verdict.REFUSED_LIVE, 20.0, 20.0, "rolled back", 3,
                      {"lift": -0.12, "candidate": [20, 60]})  # fmt: skip
    await ledger.add_conclusions("s", [refused.to_json(), live.to_json()])
    await ledger.add_conclusions("other", [Conclusion("other", "text:x", "X.", Verdict.KEPT, 5.0, 5.0).to_json()])
    await ledger.add_conclusions("s", [])
    again = await make_ledger()  # the next round may run in another process
    assert [Conclusion.from_json(c) for c in await again.conclusions("s")] == [refused, live]
    assert len(await again.conclusions("other")) == 1 and await again.conclusions("nope") == []


async def test_a_ledger_written_by_an_older_version_gains_the_new_columns(ledger_store: tuple[str, Any]) -> None:
    """The ledger as it was before the experiment columns: opening it migrates it in place."""
    kind, where = ledger_store
    old_inference = ("old", 1.0, "chat", "m", "s", 1, "h", '{"messages": []}', "a", None, None, 1.0, None,
                     "ok", 200, None, None)  # fmt: skip
    if kind == "sqlite":
        import sqlite3

        from proxy.ledger.sqlite import SCHEMA

        conn = sqlite3.connect(where)
        conn.executescript(SCHEMA)
        conn.execute(f"INSERT INTO inferences VALUES ({','.join('?' * len(old_inference))})", old_inference)
        conn.commit()
        conn.close()
        ledger: Ledger = SqliteLedger(where)
    else:
        from proxy import pg
        from proxy.ledger.postgres import PostgresLedger

        conn = await pg.connect(where)  # the schema with only the migrations released before
        try:
            await conn.execute(
                "CREATE TABLE speclearn_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL,"
                " applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
            )
            for version, name, sql in pg.MIGRATIONS[:2]:
                await conn.execute(sql)
                await conn.execute("INSERT INTO speclearn_migrations (version, name) VALUES ($1, $2)", version, name)
            await conn.execute(
                "INSERT INTO inferences VALUES ($1, $2, $3, $4, $5, $6, $7, $8::text::json, $9, NULL, NULL, $10, NULL,"
                " $11, $12, NULL, NULL)",
                *old_inference[:9], old_inference[11], old_inference[13], old_inference[14],
            )  # fmt: skip
        finally:
            await conn.close()
        ledger = PostgresLedger(where)
    await ledger.start()
    try:
        got = await ledger.get_inference("old")
        assert got is not None and (got.assignment_unit, got.arm, got.response_text) == (None, None, "a")
        ledger.record(inference("new", arm="production", assignment_unit="request"))
        await flushed(ledger, "new")
        new = await ledger.get_inference("new")
        assert new is not None and (new.assignment_unit, new.arm) == ("request", "production")
        await ledger.add_decision(DecisionRecord("s", 2, 1, "continue", "", 1.0))
        assert len(await ledger.decisions("s")) == 1
    finally:
        await ledger.close()
    if kind == "sqlite":  # and opening it again applies nothing twice
        again = SqliteLedger(where)
        await again.start()
        assert (await again.get_inference("new")) is not None
        await again.close()


# -- registry fixtures ---------------------------------------------------------------------------
@pytest.fixture(params=["files", "postgres"])
def registry_store(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, Any]:
    if request.param == "postgres":
        return "postgres", request.getfixturevalue("pg_dsn")
    return "files", tmp_path / "specs"


MakeRegistry = Callable[..., Awaitable[Registry]]


@pytest.fixture
async def make_registry(registry_store: tuple[str, Any]) -> AsyncIterator[MakeRegistry]:
    """Opens registries on one store: each instance stands for one replica."""
    kind, where = registry_store
    opened: list[Registry] = []

    async def make(poll_interval: float = 0.0, start: bool = True) -> Registry:
        if kind == "postgres":
            from proxy.registry.postgres import PostgresRegistry

            registry: Registry = PostgresRegistry(where, poll_interval=poll_interval)
        else:
            registry = FileRegistry(where, poll_interval=poll_interval)
        if start:
            await registry.start()
        opened.append(registry)
        return registry

    yield make
    for registry in opened:
        with contextlib.suppress(Exception):
            await registry.close()


# -- registry ------------------------------------------------------------------------------------
async def test_publish_numbers_versions_and_records_provenance(make_registry: MakeRegistry) -> None:
    reg = await make_registry()
    v1 = await reg.publish("support", "Be brief.")
    v2 = await reg.publish("support", "Be brief and kind.\n", author="compiler", meta={"window": [1, 2]})
    v3 = await reg.publish("support", "Third.", parent=1, labels=["candidate"])
    other = await reg.publish("billing", "Other spec.")
    assert [v1.version, v2.version, v3.version, other.version] == [1, 2, 3, 1]
    assert v1.text == "Be brief.\n"  # a body always ends in a newline
    assert v1.sha256 == specfile.body_sha256(v1.text)
    assert [v1.meta["parent"], v2.meta["parent"], v3.meta["parent"]] == [None, 1, 1]
    assert v2.meta["author"] == "compiler" and v2.meta["window"] == [1, 2]
    assert list(v1.meta)[:5] == ["version", "parent", "sha256", "created_at", "author"]
    state = reg.snapshot.get("support")  # the publisher sees its own write at once
    assert sorted(state.versions) == [1, 2, 3]
    assert state.labels == {"candidate": 3}
    assert state.versions[2] == v2 and state.versions[2].meta == v2.meta
    with pytest.raises(InvalidRequest):
        await reg.publish("bad name!", "x")
    with pytest.raises(InvalidRequest):
        await reg.publish("support", "x", labels=["latest"])


async def test_concurrent_publishers_get_distinct_numbers(make_registry: MakeRegistry) -> None:
    a, b = await make_registry(), await make_registry()
    jobs = [(reg, f"text {who}{i}") for i in range(8) for who, reg in (("a", a), ("b", b))]
    published = await asyncio.gather(*(reg.publish("race", text) for reg, text in jobs))
    numbers = sorted(v.version for v in published)
    assert numbers == list(range(1, len(jobs) + 1))
    for reg in (a, b):
        await reg.refresh()
        state = reg.snapshot.get("race")
        assert {n: v.text for n, v in state.versions.items()} == {v.version: v.text for v in published}


async def test_labels_promote_and_roll_back(make_registry: MakeRegistry) -> None:
    reg = await make_registry()
    for i in range(3):
        await reg.publish("s", f"v{i + 1}")
    await reg.set_label("s", "production", 3)
    assert reg.snapshot.resolve("s").version == 3
    await reg.set_label("s", "production", 1)  # rollback
    assert reg.snapshot.resolve("s").version == 1
    assert reg.snapshot.get("s").labels == {"production": 1}
    await reg.publish("s", "v4", labels=["production", "candidate"])
    assert reg.snapshot.get("s").labels == {"production": 4, "candidate": 4}
    with pytest.raises(NotFound):
        await reg.set_label("s", "production", 99)
    with pytest.raises(NotFound):
        await reg.set_label("ghost", "production", 1)
    for bad in ("latest", "7", "-x"):
        with pytest.raises(InvalidRequest):
            await reg.set_label("s", bad, 1)
    assert reg.snapshot.get("s").labels == {"production": 4, "candidate": 4}


async def test_resolve_rules(make_registry: MakeRegistry) -> None:
    reg = await make_registry()
    for i in range(3):
        await reg.publish("s", f"v{i + 1}")
    snap = reg.snapshot
    assert snap.resolve("s").version == 3  # no production label: latest
    assert snap.resolve("s", None).version == 3
    await reg.set_label("s", "production", 2)
    await reg.set_label("s", "canary", 3)
    snap = reg.snapshot
    assert snap.resolve("s").version == 2  # production
    assert snap.resolve("s", "latest").version == 3
    assert snap.resolve("s", "1").version == 1  # digits: a version number
    assert snap.resolve("s", 1).version == 1
    assert snap.resolve("s", "canary").version == 3  # a label
    for missing in ("9", 9, "beta", "0"):
        with pytest.raises(NotFound):
            snap.resolve("s", missing)
    with pytest.raises(NotFound):
        snap.resolve("nobody")
    await reg.set_instruction("fresh", "Help users with billing.")
    state = reg.snapshot.get("fresh")  # a spec with an instruction but no version yet
    assert state.instruction == "Help users with billing." and state.versions == {}
    with pytest.raises(NotFound):
        reg.snapshot.resolve("fresh")


async def test_changes_reach_another_instance(make_registry: MakeRegistry) -> None:
    writer = await make_registry()
    reader = await make_registry(poll_interval=0.05)
    before = reader.snapshot
    await writer.publish("hot", "first", labels=["production"])
    await wait_until(lambda: "hot" in reader.snapshot.specs, timeout=5)
    assert reader.snapshot.resolve("hot").text == "first\n"
    assert before.specs == {}  # an old snapshot is never changed in place
    await writer.publish("hot", "second")
    await writer.set_label("hot", "production", 2)
    await wait_until(lambda: served(reader, "hot") == 2, timeout=5)
    await writer.set_instruction("hot", "Stay on topic.")
    await wait_until(lambda: reader.snapshot.get("hot").instruction == "Stay on topic.", timeout=5)
    generation = reader.snapshot.generation
    assert not await reader.refresh()  # nothing changed: no new snapshot
    assert reader.snapshot.generation == generation


async def test_a_registry_works_without_start(make_registry: MakeRegistry) -> None:
    """What `speclearn specs publish` does: no watcher, just refresh and write."""
    cli = await make_registry(start=False)
    await cli.refresh()
    assert cli.snapshot.specs == {}
    assert (await cli.publish("s", "text")).version == 1
    await cli.set_label("s", "candidate", 1)
    assert cli.snapshot.resolve("s", "candidate").version == 1


# Backend-specific ways to leave a bad or unfinished version in the store.
def _corrupt_files(root: Path) -> None:
    versions = root / "c" / "versions"
    good = specfile.render({"version": 3, "sha256": specfile.body_sha256("real\n")}, "real\n")
    (versions / "0003.md").write_text(good.replace("real\n", "tampered\n"))  # body fails its hash
    (versions / "0004.md").write_text("---\nversion: 4\nsha256: abc\n")  # front matter never closed
    (versions / ".new.x1y2.tmp").write_text(good[: len(good) // 2])  # a publisher killed mid-write


async def _corrupt_postgres(dsn: str) -> None:
    await pg_execute(
        dsn,
        "INSERT INTO spec_versions (name, version, text, sha256, author) VALUES ($1, 3, $2, $3, 'human')",
        "c", "tampered\n", specfile.body_sha256("real\n"),
    )  # fmt: skip


async def test_corrupted_or_half_written_version_is_never_served(
    make_registry: MakeRegistry, registry_store: tuple[str, Any]
) -> None:
    kind, where = registry_store
    reg = await make_registry()
    await reg.publish("c", "one")
    await reg.publish("c", "two", labels=["production"])
    if kind == "files":
        _corrupt_files(where)
    else:
        await _corrupt_postgres(where)
    reader = await make_registry()
    await reg.refresh()
    for snap in (reader.snapshot, reg.snapshot):
        state = snap.get("c")
        assert sorted(state.versions) == [1, 2]
        assert snap.resolve("c", "latest").text == "two\n"
        with pytest.raises(NotFound):
            snap.resolve("c", 3)
    nxt = await reg.publish("c", "five")  # the bad numbers stay taken, never reused
    assert nxt.version == (5 if kind == "files" else 4)
    await reader.refresh()
    assert reader.snapshot.resolve("c", "latest").text == "five\n"


async def test_approval_mode_holds_compiled_versions_until_approved(make_registry: MakeRegistry) -> None:
    reg, replica = await make_registry(), await make_registry()
    await reg.publish("s", "human v1", labels=["production"])
    reg.hold_compiled = True
    held = await reg.publish("s", "compiled v2", author="compiler", labels=["candidate"])
    rejected = await reg.publish("s", "compiled v3", author="compiler", labels=["production"])
    human = await reg.publish("s", "human v4", labels=["review"])  # a person's publish is not held
    for r in (reg, replica):
        await r.refresh()
        state = r.snapshot.get("s")
        assert state.labels == {"production": 1, "review": 4}
        assert {v: h.status for v, h in state.holds.items()} == {2: "held", 3: "held"}
        assert state.holds[2].label == "candidate" and state.holds[2].requested_at
        for ref in ("2", "3", "candidate"):
            with pytest.raises(NotFound):
                state.resolve(ref)  # not by pin, not by the label it asked for
        assert state.resolve("latest").version == 4 and state.served_versions() == {1, 4}
        assert state.resolve("2", include_held=True).text == "compiled v2\n"  # to review it
    with pytest.raises(Conflict):
        await reg.set_label("s", "production", held.version)  # approve it first
    with pytest.raises(NotFound):
        await reg.decide_hold("s", 99, approve=True)
    with pytest.raises(Conflict):
        await reg.decide_hold("s", human.version, approve=True)  # not awaiting approval

    approved = await reg.decide_hold("s", held.version, approve=True)
    assert (approved.status, approved.label) == ("approved", "candidate") and approved.decided_at
    no = await reg.decide_hold("s", rejected.version, approve=False)
    assert no.status == "rejected"
    with pytest.raises(Conflict):
        await reg.decide_hold("s", rejected.version, approve=True)  # a rejection is final
    with pytest.raises(Conflict):
        await reg.set_label("s", "production", rejected.version)
    await replica.refresh()
    state = replica.snapshot.get("s")
    assert state.labels == {"production": 1, "candidate": 2, "review": 4}
    assert state.resolve("candidate").version == 2 and state.resolve("2").version == 2
    with pytest.raises(NotFound):
        state.resolve("3")
    await reg.set_label("s", "production", 2)  # an approved version is an ordinary one
    await replica.refresh()
    assert replica.snapshot.resolve("s").version == 2
    if isinstance(reg, FileRegistry):  # a holds.json broken by hand: the decisions last read stand
        reg.hold_compiled = False
        await reg.publish("s", "compiled v5, before holds existed", author="compiler")
        await replica.refresh()
        (reg.root / "s" / "holds.json").write_text("{broken")
        await replica.refresh()
        state = replica.snapshot.get("s")
        assert state.resolve(None).version == 2 and state.blocked(3) and state.blocked(5)
        with pytest.raises(Conflict):
            await reg.decide_hold("s", 5, approve=True)  # nothing is written over a broken file


async def test_concurrent_held_publishes_and_approvals_lose_no_hold(make_registry: MakeRegistry) -> None:
    a, b = await make_registry(), await make_registry()
    a.hold_compiled = b.hold_compiled = True
    await a.publish("race", "human", labels=["production"])
    first = await a.publish("race", "compiled 0", author="compiler", labels=["candidate"])
    jobs = [reg.publish("race", f"compiled {who}{i}", author="compiler", labels=["candidate"])
            for i in range(6) for who, reg in (("a", a), ("b", b))]  # fmt: skip
    published, _ = await asyncio.gather(asyncio.gather(*jobs), b.decide_hold("race", first.version, approve=True))
    await a.refresh()
    state = a.snapshot.get("race")
    assert {v.version for v in published} | {1, first.version} == set(state.versions)
    assert {v: h.status for v, h in state.holds.items()} == {
        first.version: "approved",
        **{v.version: "held" for v in published},
    }
    assert state.labels == {"production": 1, "candidate": first.version}


# -- PostgreSQL only -----------------------------------------------------------------------------
async def test_pg_concurrent_startups_migrate_once(pg_dsn: str) -> None:
    from proxy import pg

    pools = await asyncio.gather(*(pg.create_pool(pg_dsn, max_size=1) for _ in range(6)))
    try:
        rows = await pg_execute(pg_dsn, "SELECT version FROM speclearn_migrations ORDER BY version")
        assert [r["version"] for r in rows] == [v for v, _, _ in pg.MIGRATIONS]
        async with pools[0].acquire() as conn:
            assert await pg.migrate(conn) == []  # already current: a no-op
    finally:
        await asyncio.gather(*(p.close() for p in pools))


async def test_pg_versions_are_immutable_in_the_database(pg_dsn: str) -> None:
    from proxy.registry.postgres import PostgresRegistry

    reg = PostgresRegistry(pg_dsn, poll_interval=0)
    await reg.start()
    try:
        await reg.publish("s", "original")
        with pytest.raises(Exception, match="immutable"):
            await pg_execute(pg_dsn, "UPDATE spec_versions SET text = 'edited'")
    finally:
        await reg.close()


async def test_pg_notify_reaches_a_replica_without_waiting_for_a_poll(pg_dsn: str) -> None:
    from proxy.registry.postgres import PostgresRegistry

    writer = PostgresRegistry(pg_dsn, poll_interval=0)
    reader = PostgresRegistry(pg_dsn, poll_interval=60)  # a poll would take a minute
    await writer.start()
    await reader.start()
    try:
        assert reader.listening
        delays = []
        for i in range(1, 6):
            await writer.publish("n", f"v{i}")
            delays.append(await wait_until(lambda want=i: served(reader, "n") == want, timeout=5))
        assert max(delays) < 1.0
        # a change made by hand in psql is picked up the same way
        await pg_execute(pg_dsn, "INSERT INTO spec_labels (name, label, version) VALUES ('n', 'production', 2)")
        await wait_until(lambda: served(reader, "n") == 2, timeout=5)
    finally:
        await reader.close()
        await writer.close()


async def test_pg_lost_listen_connection_falls_back_to_polling(pg_dsn: str) -> None:
    from proxy.registry.postgres import PostgresRegistry

    writer = PostgresRegistry(pg_dsn, poll_interval=0)
    reader = PostgresRegistry(pg_dsn, poll_interval=0.3)
    await writer.start()
    await reader.start()
    try:
        assert reader.listening and reader._listener is not None
        await pg_execute(pg_dsn, "SELECT pg_terminate_backend($1)", reader._listener.get_server_pid())
        await writer.publish("p", "after the drop")
        await wait_until(lambda: "p" in reader.snapshot.specs, timeout=3)
        await wait_until(lambda: reader.listening, timeout=3)  # and LISTEN comes back
        await writer.publish("p", "again")
        await wait_until(lambda: served(reader, "p") == 2, timeout=3)
    finally:
        await reader.close()
        await writer.close()


async def test_pg_ledger_rides_out_a_lost_connection(pg_dsn: str) -> None:
    from proxy.ledger.postgres import PostgresLedger

    ledger = PostgresLedger(pg_dsn, flush_interval=0.01)
    ledger.pool_max_size = 1  # one connection: the one about to be killed
    await ledger.start()
    try:
        async with ledger.pool.acquire() as conn:
            pid = conn.get_server_pid()
        # what a database restart or failover does to every pooled connection
        await pg_execute(pg_dsn, "SELECT pg_terminate_backend($1)", pid)
        _, created = await ledger.add_feedback(thumb("fb-after-restart", "inf-x", 1.0, at=1.0))
        assert created
        ledger.record(inference("inf-x"))
        await flushed(ledger, "inf-x")
        assert [e.feedback.id for e in await ledger.feedback_events()] == ["fb-after-restart"]
    finally:
        await ledger.close()


async def test_pg_unreachable_database_is_a_retryable_503() -> None:
    import asyncpg

    from proxy import pg
    from proxy.errors import ServiceUnavailable

    pool = await asyncpg.create_pool("postgresql://postgres@127.0.0.1:1/none", min_size=0, max_size=1)
    try:
        with pytest.raises(ServiceUnavailable) as info:
            await pg.with_retry(pool, lambda c: c.fetchval("SELECT 1"), "a test")
        assert info.value.status == 503
    finally:
        await pool.close()
