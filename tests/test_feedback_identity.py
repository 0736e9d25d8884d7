"""Feedback as real apps send it: who the end user is (OpenAI's `user`, `safety_identifier`,
`X-User-Id`, else for a browser its hashed address), and a user changing or taking back a thumb
(PUT / DELETE /v1/feedback/{id}), counted once where the compiler reads it.

Every test that stores runs on SQLite and on a real PostgreSQL, as tests/test_storage.py gets it
(a throw-away schema; skipped without a server, a failure under CI)."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from compiler.dataset import build_dataset, examples_from_events
from console_fixtures import settings
from helpers import FakeUpstream
from proxy import identity
from proxy.app import create_app
from proxy.ledger import THUMB, FeedbackRecord, InferenceRecord, Ledger
from proxy.ledger import sqlite as sqlite_ledger
from test_storage import ledger_store, make_ledger, pg_dsn, pg_execute  # noqa: F401 - fixtures and helpers

CLIENT = {"authorization": "Bearer sk-backend"}
BROWSER = {"authorization": "Bearer pk-browser"}
OTHER_BROWSER = {"authorization": "Bearer pk-other-site"}
APP = "https://app.example"
ALICE_ADDRESS, BOB_ADDRESS = "203.0.113.7", "198.51.100.23"


# -- who the user is -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("body", "headers", "expected"),
    [
        ({"user": "u-body", "safety_identifier": "u-safe"}, {"x-user-id": "u-head"}, "u-body"),
        ({"safety_identifier": "u-safe"}, {"x-user-id": "u-head"}, "u-safe"),
        ({"user": "", "safety_identifier": "u-safe"}, {}, "u-safe"),
        ({"user": 42, "safety_identifier": None}, {"x-user-id": "u-head"}, "u-head"),
        ({"prompt_cache_key": "shared-bucket"}, {}, None),  # a cache bucket, not a person
        ({}, {"x-user-id": ""}, None),
    ],
)  # fmt: skip
def test_the_end_user_of_a_request_in_order(
    body: dict[str, Any], headers: dict[str, str], expected: str | None
) -> None:
    assert identity.request_user(body, headers) == expected
    if all(isinstance(body.get(f), (str, type(None))) for f in identity.USER_FIELDS):
        assert identity.feedback_user(body, headers) == expected  # the same order for feedback


def test_an_address_is_hashed_with_a_key_and_an_ipv6_client_by_its_64() -> None:
    key, other_key = b"k" * 32, b"j" * 32
    alice = identity.address_user(ALICE_ADDRESS, key)
    assert alice.startswith(identity.ADDRESS_PREFIX) and ALICE_ADDRESS not in alice
    assert alice == identity.address_user(ALICE_ADDRESS, key)  # stable: one browser, one voice
    assert alice != identity.address_user(BOB_ADDRESS, key)
    assert alice != identity.address_user(ALICE_ADDRESS, other_key)  # keyed: no table of all IPv4 hashes helps
    assert alice == identity.address_user("::ffff:" + ALICE_ADDRESS, key)  # IPv4 seen through an IPv6 socket
    phone = identity.address_user("2001:db8:1:2:aaaa::1", key)
    assert phone == identity.address_user("2001:db8:1:2:bbbb:cccc::9", key)  # privacy addresses rotate in a /64
    assert phone != identity.address_user("2001:db8:1:3::1", key)


# -- an app on either ledger ---------------------------------------------------------------------
@pytest.fixture
def backend(ledger_store: tuple[str, Any]) -> dict[str, Any]:
    kind, where = ledger_store
    return {"database_url": where} if kind == "postgres" else {}


def _with_peer(app: Any) -> Any:
    """The client address from an `x-test-peer` header, as uvicorn would report a real peer."""

    async def wrapped(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            peer = dict(scope["headers"]).get(b"x-test-peer")
            if peer:
                scope = {**scope, "client": (peer.decode(), 50000)}
        await app(scope, receive, send)

    return wrapped


class App:
    def __init__(self, client: TestClient, app: Any) -> None:
        self.c = client
        self.ledger: Ledger = app.state.proxy.ledger

    def run(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        return self.c.portal.call(lambda: fn(*args, **kwargs))

    def inference(self, inference_id: str, *, user: str | None = None, answer: str = "An answer.") -> None:
        meta = {"user": user} if user else {}
        rec = InferenceRecord(
            inference_id, time.time(), "chat", "m", "support", 1, "ab" * 32,
            {"messages": [{"role": "user", "content": f"question {inference_id}"}]}, answer, metadata=meta,
        )  # fmt: skip
        self.run(self.ledger._write_inferences, [rec])

    def post(self, body: dict[str, Any], headers: dict[str, str] = CLIENT, peer: str = ALICE_ADDRESS) -> Any:
        return self.c.post("/v1/feedback", json=body, headers={**headers, "x-test-peer": peer})

    def put(self, feedback_id: str, body: Any, headers: dict[str, str] = CLIENT, **extra: str) -> Any:
        return self.c.put(f"/v1/feedback/{feedback_id}", json=body, headers={**headers, **extra})

    def delete(self, feedback_id: str, headers: dict[str, str] = CLIENT, **extra: str) -> Any:
        return self.c.delete(f"/v1/feedback/{feedback_id}", headers={**headers, **extra})

    def stored(self, feedback_id: str) -> FeedbackRecord | None:
        return self.run(self.ledger.get_feedback, feedback_id)

    def events(self) -> list[Any]:
        return self.run(self.ledger.feedback_events, "support")


@contextmanager
def running(tmp_path: Path, backend: dict[str, Any], **overrides: Any) -> Iterator[App]:
    values = {
        "api_keys": ["sk-backend"], "feedback_keys": ["pk-browser", "pk-other-site"], "cors_origins": [APP],
        "feedback_wait_seconds": 0.05, **backend, **overrides,
    }  # fmt: skip
    app = create_app(settings(tmp_path, **values))
    with TestClient(_with_peer(app)) as c:
        yield App(c, app)


def error(response: Any) -> dict[str, Any]:
    body = response.json()["error"]
    assert {"message", "type", "param", "code"} <= set(body)
    return body


def test_an_inference_records_safety_identifier_as_its_user(
    tmp_path: Path, backend: dict[str, Any], fake_upstream: FakeUpstream
) -> None:
    with running(tmp_path, backend, upstream_url=fake_upstream.url) as a:
        cases = [({"safety_identifier": "hash-of-alice"}, {}, "hash-of-alice"),
                 ({"user": "bob", "safety_identifier": "hash-of-bob"}, {}, "bob"),
                 ({}, {"x-user-id": "carol"}, "carol")]  # fmt: skip
        for body, headers, user in cases:
            r = a.c.post("/v1/chat/completions", headers={**CLIENT, **headers},
                         json={"model": "m", "messages": [{"role": "user", "content": "hi"}], **body})  # fmt: skip
            assert r.status_code == 200, r.text
            row = a.run(a.ledger.wait_for_inference, r.headers["x-inference-id"], 5.0)
            assert row.metadata["user"] == user and row.assignment_unit == "user"
        sent = fake_upstream.last().body
        assert sent.get("safety_identifier") is None and "user" not in sent  # the last case named none
        assert fake_upstream.received[-2].body["safety_identifier"] == "hash-of-bob"  # passed on as sent


def test_feedback_names_its_user_else_a_browser_is_its_hashed_address(tmp_path: Path, backend: dict[str, Any]) -> None:
    with running(tmp_path, backend) as a:
        for i in range(8):
            a.inference(f"inf-{i}")
        acks = [
            a.post({"inference_id": "inf-0", "value": "up", "user": "alice"}, BROWSER),
            a.post({"inference_id": "inf-1", "value": "up", "safety_identifier": "h-bob"}, BROWSER),
            a.post({"inference_id": "inf-2", "value": "up"}, {**CLIENT, "x-user-id": "carol"}),
            a.post({"inference_id": "inf-3", "value": "down"}, BROWSER, peer=ALICE_ADDRESS),
            a.post({"inference_id": "inf-4", "value": "down"}, OTHER_BROWSER, peer=ALICE_ADDRESS),
            a.post({"inference_id": "inf-5", "value": "down"}, BROWSER, peer=BOB_ADDRESS),
            a.post({"inference_id": "inf-6", "value": "down"}, CLIENT, peer=BOB_ADDRESS),  # a backend: no address
        ]
        assert [r.status_code for r in acks] == [200] * 7, [r.text for r in acks]
        users = [a.stored(r.json()["feedback_id"]).user_id for r in acks]
        assert users[:3] == ["alice", "h-bob", "carol"]
        assert users[3].startswith("addr:") and users[3] == users[4] != users[5]  # a person, whichever key
        assert users[6] is None
        assert users[3] == identity.address_user(ALICE_ADDRESS, a.ledger.address_key)
        stored = repr([a.stored(r.json()["feedback_id"]) for r in acks]) + repr(a.events())
        assert ALICE_ADDRESS not in stored and BOB_ADDRESS not in stored
        if not backend:  # and not in the SQLite files either, log included
            raw = b"".join(p.read_bytes() for p in (tmp_path / "data").glob("ledger.sqlite3*"))
            assert ALICE_ADDRESS.encode() not in raw and BOB_ADDRESS.encode() not in raw and b"addr:" in raw
        for bad, param in (({"user": 7}, "user"), ({"safety_identifier": "x" * 257}, "safety_identifier")):
            r = a.post({"inference_id": "inf-7", "value": "up", **bad}, BROWSER)
            assert r.status_code == 400 and error(r)["param"] == param
        r = a.post({"inference_id": "inf-7", "value": "up"}, {**CLIENT, "x-user-id": "y" * 300})
        assert r.status_code == 400 and error(r)["param"] == "X-User-Id"


async def test_the_address_key_is_made_once_per_ledger(make_ledger: Any) -> None:
    first, second = await make_ledger(), await make_ledger()  # two workers or replicas on one store
    await first.close()
    third = await make_ledger()  # a restart
    assert len(first.address_key) == 32 and first.address_key == second.address_key == third.address_key


# -- change and retract ----------------------------------------------------------------------------
def test_a_vote_changed_then_retracted_is_counted_once_then_never(tmp_path: Path, backend: dict[str, Any]) -> None:
    with running(tmp_path, backend) as a:
        a.inference("inf-a")
        r = a.post({"inference_id": "inf-a", "value": "up"}, BROWSER)
        feedback_id = r.json()["feedback_id"]
        r = a.put(feedback_id, {"value": "down", "comment": "shorter, please"}, BROWSER, origin=APP)
        assert r.status_code == 200 and r.json() == {"feedback_id": feedback_id, "status": "updated"}
        assert r.headers["access-control-allow-origin"] == APP
        assert a.put(feedback_id, {"value": "down"}, BROWSER).json()["status"] == "unchanged"  # a retry
        row = a.stored(feedback_id)
        assert (row.kind, row.value, row.comment) == (THUMB, -1.0, "shorter, please")
        assert row.updated_at is not None and row.updated_at >= row.created_at and row.retracted_at is None
        events = a.events()
        assert [(e.feedback.id, e.feedback.value, e.feedback.comment) for e in events] == [
            (feedback_id, -1.0, "shorter, please")
        ]
        assert a.run(a.ledger.count_feedback, "support") == 1
        assert a.run(a.ledger.count_feedback, "support", row.created_at) == 1  # changed after the first vote
        assert [(t.ups, t.total) for t in a.run(a.ledger.thumb_tallies, "support", 3600.0)] == [(0, 1)]
        assert a.put(feedback_id, {"comment": None}, BROWSER).json()["status"] == "updated"  # null erases
        assert a.stored(feedback_id).comment is None

        r = a.delete(feedback_id, BROWSER)
        assert r.status_code == 200 and r.json() == {"feedback_id": feedback_id, "status": "retracted"}
        assert a.delete(feedback_id, BROWSER).json() == {"feedback_id": feedback_id, "status": "retracted"}
        assert a.stored(feedback_id).retracted_at is not None
        assert a.events() == [] and a.run(a.ledger.count_feedback, "support") == 0
        assert a.run(a.ledger.thumb_tallies, "support", 3600.0) == []
        r = a.put(feedback_id, {"value": "up"}, BROWSER)
        assert r.status_code == 409 and error(r)["code"] == "feedback_retracted"


def test_a_conflicting_resend_still_gets_its_409(tmp_path: Path, backend: dict[str, Any]) -> None:
    with running(tmp_path, backend) as a:
        a.inference("inf-b")
        body = {"inference_id": "inf-b", "value": "up", "feedback_id": "fb-resend-1"}
        assert a.post(body).json()["status"] == "created"
        assert a.post(body).json()["status"] == "duplicate"
        assert a.put("fb-resend-1", {"value": "down"}).status_code == 200
        r = a.post(body)  # the first vote again, after the user changed it
        assert r.status_code == 409 and error(r)["param"] == "feedback_id" and error(r)["code"] == "conflict"
        assert a.stored("fb-resend-1").value == -1.0
        assert a.delete("fb-resend-1").status_code == 200
        r = a.post({**body, "value": "down"})  # matches what was stored, but it was taken back
        assert r.status_code == 409 and error(r)["code"] == "feedback_retracted"


def test_unknown_ids_404_and_bad_changes_400(tmp_path: Path, backend: dict[str, Any]) -> None:
    with running(tmp_path, backend) as a:
        a.inference("inf-c")
        a.inference("inf-d")
        assert a.post({"inference_id": "inf-c", "value": "up", "feedback_id": "fb-thumb-1"}).status_code == 200
        assert a.post({"inference_id": "inf-c", "value": 0.4, "feedback_id": "fb-score-1"}).status_code == 200
        assert a.post({"chosen_id": "inf-c", "rejected_id": "inf-d", "feedback_id": "fb-pair-1"}).status_code == 200
        for r in (a.put("fb-nope", {"value": "up"}), a.delete("fb-nope")):
            assert (
                r.status_code == 404 and error(r)["code"] == "feedback_not_found" and error(r)["param"] == "feedback_id"
            )
        cases = [
            ("fb-thumb-1", {"value": "sideways"}, "value"),
            ("fb-thumb-1", {"value": 0.5}, "value"),  # a thumb stays a thumb
            ("fb-score-1", {"value": "up"}, "value"),  # and a score a score
            ("fb-pair-1", {"value": 1}, "value"),  # a pair has no value to change
            ("fb-thumb-1", {"value": None}, "value"),
            ("fb-thumb-1", {"comment": 5}, "comment"),
            ("fb-thumb-1", {"comment": "x" * 8001}, "comment"),
            ("fb-thumb-1", {"inference_id": "inf-d"}, "inference_id"),
            ("fb-thumb-1", {}, None),
        ]
        for feedback_id, body, param in cases:
            r = a.put(feedback_id, body)
            assert r.status_code == 400 and error(r)["param"] == param, (body, r.text)
        r = a.c.put(
            "/v1/feedback/fb-thumb-1", content=b"{not json", headers={**CLIENT, "content-type": "application/json"}
        )
        assert r.status_code == 400 and error(r)["type"] == "invalid_request_error"
        r = a.put("a%20b", {"value": "up"})
        assert r.status_code == 400 and error(r)["param"] == "feedback_id"
        assert a.put("fb-score-1", {"value": 0.9}).json()["status"] == "updated"
        assert a.put("fb-pair-1", {"comment": "the first was clearer"}).json()["status"] == "updated"
        assert a.stored("fb-thumb-1").value == 1.0  # no failed change wrote anything
        r = a.c.get("/v1/feedback/fb-thumb-1", headers=CLIENT)
        assert r.status_code == 405 and error(r)["code"] == "method_not_allowed" and "PUT" in r.headers["allow"]
        assert a.put("fb-thumb-1", {"value": "down"}, {"authorization": "Bearer wrong"}).status_code == 401


def test_a_browser_key_changes_only_what_it_created(tmp_path: Path, backend: dict[str, Any]) -> None:
    with running(tmp_path, backend) as a:
        a.inference("inf-e")
        mine = a.post({"inference_id": "inf-e", "value": "up"}, BROWSER).json()["feedback_id"]
        backend_vote = a.post({"inference_id": "inf-e", "value": "up", "feedback_id": "fb-from-backend"}).json()[
            "feedback_id"
        ]
        for r in (a.put(mine, {"value": "down"}, OTHER_BROWSER), a.delete(mine, OTHER_BROWSER),
                  a.put(backend_vote, {"value": "down"}, BROWSER), a.delete(backend_vote, BROWSER)):  # fmt: skip
            assert r.status_code == 404 and error(r)["code"] == "feedback_not_found"  # unknown, as far as it can tell
        assert a.stored(mine).value == 1.0 and a.stored(backend_vote).retracted_at is None
        assert a.put(mine, {"value": "down"}, BROWSER).status_code == 200
        assert a.put(mine, {"comment": "moderated"}, CLIENT).status_code == 200  # the app's backend may
        # a page choosing its own ids must choose unguessable ones
        r = a.post({"inference_id": "inf-e", "value": "up", "feedback_id": "fb-1"}, BROWSER)
        assert r.status_code == 400 and error(r)["param"] == "feedback_id"
        chosen = "fb-7c1d2e4f9a8b6c5d"
        assert a.post({"inference_id": "inf-e", "value": "up", "feedback_id": chosen}, BROWSER).status_code == 200
        assert a.delete(chosen, BROWSER).json()["status"] == "retracted"


def test_browsers_may_send_put_and_delete_from_allowed_origins(tmp_path: Path, backend: dict[str, Any]) -> None:
    with running(tmp_path, backend) as a:
        ask = {"access-control-request-method": "PUT", "access-control-request-headers": "authorization, content-type"}
        r = a.c.options("/v1/feedback/fb-anything", headers={"origin": APP, **ask})
        assert r.status_code == 204 and r.headers["access-control-allow-origin"] == APP
        assert set(r.headers["access-control-allow-methods"].split(", ")) == {"PUT", "DELETE"}
        assert (
            "x-user-id"
            in a.c.options("/v1/feedback", headers={"origin": APP, **ask}).headers["access-control-allow-headers"]
        )
        r = a.c.options("/v1/feedback/fb-anything", headers={"origin": "https://evil.example", **ask})
        assert r.status_code == 403 and error(r)["code"] == "origin_not_allowed"
        r = a.delete("fb-anything", BROWSER, origin="https://evil.example")
        assert r.status_code == 403 and error(r)["code"] == "origin_not_allowed"


# -- what the compiler reads -----------------------------------------------------------------------
def test_the_compiler_dataset_sees_the_latest_value_once_and_no_retraction(
    tmp_path: Path, backend: dict[str, Any]
) -> None:
    with running(tmp_path, backend) as a:
        for name in ("changed", "retracted", "kept"):
            a.inference(f"inf-{name}", answer=f"The {name} answer.")
        changed = a.post({"inference_id": "inf-changed", "value": "up"}, BROWSER).json()["feedback_id"]
        retracted = a.post({"inference_id": "inf-retracted", "value": "down", "comment": "wrong"}, BROWSER).json()[
            "feedback_id"
        ]
        a.post({"inference_id": "inf-kept", "value": "up"}, BROWSER)
        a.put(changed, {"value": "down"}, BROWSER)
        a.put(changed, {"comment": "too long"}, BROWSER)
        a.delete(retracted, BROWSER)
        events = a.events()
        examples, _ = examples_from_events(events)
        assert sorted((e.id, e.value, e.comment) for e in examples) == [
            ("inf-changed", -1.0, "too long"),
            ("inf-kept", 1.0, None),
        ]
        dataset = build_dataset(events)
        assert dataset.window["events"] == 2 and (dataset.summary()["ups"], dataset.summary()["downs"]) == (1, 1)


def test_the_voice_is_whoever_judged(tmp_path: Path, backend: dict[str, Any]) -> None:
    """Ids sent with the feedback win; the inference's user beats a browser's address; with
    neither, two browsers are two voices, not one anonymous one."""
    with running(tmp_path, backend) as a:
        a.inference("inf-of-bob", user="bob")
        a.inference("inf-anon-1")
        a.inference("inf-anon-2")
        a.inference("inf-anon-3")
        a.post({"inference_id": "inf-of-bob", "value": "up"}, BROWSER, peer=ALICE_ADDRESS)  # bob's browser
        a.post({"inference_id": "inf-anon-1", "value": "down"}, BROWSER, peer=ALICE_ADDRESS)
        a.post({"inference_id": "inf-anon-2", "value": "down"}, BROWSER, peer=BOB_ADDRESS)
        a.post({"inference_id": "inf-anon-3", "value": "down", "user": "dora"}, BROWSER, peer=BOB_ADDRESS)
        voices = {e.id: e.voice for e in examples_from_events(a.events())[0]}
        assert voices["inf-of-bob"] == "bob"
        assert voices["inf-anon-1"].startswith("addr:") and voices["inf-anon-2"].startswith("addr:")
        assert voices["inf-anon-1"] != voices["inf-anon-2"]
        assert voices["inf-anon-3"] == "dora"
        assert len(set(voices.values())) == 4
        override = next(e for e in a.events() if e.inference.id == "inf-of-bob")
        assert override.inference.metadata == {"user": "bob"}  # an address never overrides a named user


def test_a_named_judge_overrides_the_inference_user_and_keeps_it_visible() -> None:
    from proxy.ledger import FeedbackEvent

    inf = InferenceRecord(
        "i", 0.0, "chat", "m", "s", 1, None, {}, "a", metadata={"user": "app-backend", "session": "s1"}
    )
    ev = identity.attribute(FeedbackEvent(FeedbackRecord("f", "i", THUMB, 1.0, 1.0, user_id="alice"), inf))
    assert ev.inference.metadata == {"user": "alice", "inference_user": "app-backend", "session": "s1"}
    assert inf.metadata == {"user": "app-backend", "session": "s1"}  # the stored row is not touched
    anon = InferenceRecord("j", 0.0, "chat", "m", "s", 1, None, {}, "a", metadata={"session": "s2"})
    ev = identity.attribute(FeedbackEvent(FeedbackRecord("g", "j", THUMB, 1.0, 1.0, user_id="addr:00"), anon))
    assert ev.inference.metadata == {"session": "s2"}  # the session already tells people apart


# -- migrations on existing databases ------------------------------------------------------------
_MINE = "retracted_at"


def test_an_existing_sqlite_ledger_gains_the_columns_in_place(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite3"
    before = next(i for i, m in enumerate(sqlite_ledger.MIGRATIONS) if _MINE in m)
    conn = sqlite3.connect(path, isolation_level=None)
    conn.executescript(sqlite_ledger.SCHEMA)
    for script in sqlite_ledger.MIGRATIONS[:before]:
        conn.executescript(script)
    conn.execute(f"PRAGMA user_version = {before}")
    row = sqlite_ledger.inference_row(
        InferenceRecord(
            "old-inf", 1.0, "chat", "m", "support", 1, "ab", {"messages": [{"role": "user", "content": "q"}]}, "a"
        )
    )
    have = {r[1] for r in conn.execute("PRAGMA table_info(inferences)")}  # columns of later steps are not there yet
    names, values = zip(
        *[(n, v) for n, v in zip(sqlite_ledger.INFERENCE_COLUMNS.split(", "), row, strict=True) if n in have],
        strict=True,
    )
    conn.execute(f"INSERT INTO inferences ({', '.join(names)}) VALUES ({','.join('?' * len(values))})", values)
    conn.execute(
        "INSERT INTO feedback (id, inference_id, kind, value, created_at, comment) "
        "VALUES ('old-fb', 'old-inf', 'thumb', 1, 2, 'ok')"
    )
    conn.close()

    async def use() -> tuple[FeedbackRecord | None, Any, int]:
        ledger = sqlite_ledger.SqliteLedger(path, flush_interval=0)
        await ledger.start()
        try:
            old = await ledger.get_feedback("old-fb")
            changed = await ledger.update_feedback("old-fb", 3.0, value=(THUMB, -1.0))
            return old, changed, len(await ledger.feedback_events("support"))
        finally:
            await ledger.close()

    old, changed, n = asyncio.run(use())
    assert old == FeedbackRecord("old-fb", "old-inf", THUMB, 1.0, 2.0, "ok")
    assert changed is not None and changed[0].value == -1.0 and changed[1] and n == 1
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == len(sqlite_ledger.MIGRATIONS)


def test_an_existing_postgres_ledger_gains_the_columns_in_place(pg_dsn: str) -> None:
    from proxy import pg
    from proxy.ledger.postgres import PostgresLedger

    mine = next(v for v, _, sql in pg.MIGRATIONS if _MINE in sql)

    async def use() -> tuple[FeedbackRecord | None, Any, list[Any]]:
        conn = await pg.connect(pg_dsn)
        try:
            await conn.execute("CREATE TABLE speclearn_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL,"
                               " applied_at TIMESTAMPTZ NOT NULL DEFAULT now())")  # fmt: skip
            for version, name, sql in pg.MIGRATIONS:
                if version < mine:
                    await conn.execute(sql)
                    await conn.execute(
                        "INSERT INTO speclearn_migrations (version, name) VALUES ($1, $2)", version, name
                    )
            await conn.execute(
                "INSERT INTO inferences (id, created_at, route, spec_name, request, response_text, status, http_status)"
                " VALUES ('old-inf', 1, 'chat', 'support', $1, 'a', 'ok', 200)", {"messages": [{"role": "user", "content": "q"}]}
            )  # fmt: skip
            await conn.execute("INSERT INTO feedback (id, inference_id, kind, value, created_at, comment)"
                               " VALUES ('old-fb', 'old-inf', 'thumb', 1, 2, 'ok')")  # fmt: skip
        finally:
            await conn.close()
        ledger = PostgresLedger(pg_dsn, flush_interval=0)
        await ledger.start()
        try:
            old = await ledger.get_feedback("old-fb")
            retracted = await ledger.retract_feedback("old-fb", 3.0)
            return old, retracted, await ledger.feedback_events("support")
        finally:
            await ledger.close()

    old, retracted, events = asyncio.run(use())
    assert old == FeedbackRecord("old-fb", "old-inf", THUMB, 1.0, 2.0, "ok")
    assert retracted is not None and retracted[0].retracted_at == 3.0 and retracted[0].comment is None and events == []
    versions = asyncio.run(pg_execute(pg_dsn, "SELECT version FROM speclearn_migrations"))
    assert mine in {r["version"] for r in versions}
