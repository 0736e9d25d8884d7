"""Data governance (docs/data.md): the retention purge, the content modes (full, redacted, none)
through the proxy and up to the compiler, erasing one end user (CLI and admin API), and the
redactor's precision and recall on a labelled set (tests/data/redaction.jsonl).

Every test that stores runs on SQLite and on a real PostgreSQL, as tests/test_storage.py gets it
(a throw-away schema; skipped without a server, a failure under CI)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError
from starlette.testclient import TestClient

from compiler.dataset import build_dataset, governed
from compiler.pairs_file import dataset_from_pairs
from compiler.runner import Context, compile_spec
from compiler.settings import CompilerSettings
from console_fixtures import ADMIN_KEY, settings
from helpers import REPO, FakeUpstream
from proxy import retention
from proxy.app import create_app
from proxy.ledger import PAIR, THUMB, FeedbackRecord, InferenceRecord, Ledger
from proxy.ledger.content import ContentPolicy
from proxy.redaction import KINDS, Redactor, read_patterns_file
from proxy.registry import FileRegistry
from proxy.retention import Retention
from proxy.settings import Settings
from test_missing_extras import DEAD_URL, run_cli
from test_storage import counter, flushed, inference, ledger_store, make_ledger, pg_dsn  # noqa: F401 - fixtures

DAY = 86400.0
LABELLED = Path(__file__).parent / "data" / "redaction.jsonl"
# measured on the labelled set (see the report in docs/data.md); a floor a little under each
FLOORS = {"EMAIL": (0.90, 0.90), "PHONE": (0.95, 0.80), "CARD": (0.90, 0.95), "SECRET": (0.95, 0.95)}


# -- the redactor ------------------------------------------------------------------------------------
def score(redactor: Redactor, rows: list[dict[str, Any]]) -> dict[str, tuple[float, float, int]]:
    """Per type: precision, recall and the number of expected spans. A finding counts when it
    overlaps an expected span of its type not yet matched."""
    tp: Counter[str] = Counter()
    fp: Counter[str] = Counter()
    expected: Counter[str] = Counter()
    for row in rows:
        spans = [(s["start"], s["end"], s["type"]) for s in row["spans"]]
        expected.update(t for _, _, t in spans)
        used: set[int] = set()
        for f in redactor.find(row["text"]):
            hit = next(
                (i for i, (s, e, t) in enumerate(spans) if i not in used and t == f.kind and f.start < e and s < f.end),
                None,
            )
            if hit is None:
                fp[f.kind] += 1
            else:
                used.add(hit)
                tp[f.kind] += 1
    return {k: (tp[k] / ((tp[k] + fp[k]) or 1), tp[k] / (expected[k] or 1), expected[k]) for k in KINDS}


def test_redaction_precision_and_recall_per_type_on_the_labelled_set() -> None:
    rows = [json.loads(line) for line in LABELLED.read_text().splitlines() if line.strip()]
    assert len(rows) >= 100 and sum(1 for r in rows if not r["spans"]) >= 30  # texts without PII too
    for row in rows:  # the labels point at their text
        assert all(row["text"][s["start"] : s["end"]] == s["text"] for s in row["spans"]), row
    scores = score(Redactor(phone_regions=Settings().redact_phone_regions), rows)
    for kind, (precision, recall, n) in scores.items():
        floor_p, floor_r = FLOORS[kind]
        assert n >= 10, f"{kind}: only {n} labelled spans"
        assert precision >= floor_p and recall >= floor_r, f"{kind}: precision {precision:.3f}, recall {recall:.3f}"


def test_typed_placeholders_and_custom_patterns() -> None:
    redactor = Redactor({"EMPLOYEE_ID": r"EMP-\d{6}"})
    text = "EMP-004211 (ann@example.com, +1 415 555 2671) paid with 4111 1111 1111 1111 using key AKIAIOSFODNN7EXAMPLE"
    assert redactor.redact(text) == "[EMPLOYEE_ID] ([EMAIL], [PHONE]) paid with [CARD] using key [SECRET]"
    assert redactor.redact("a Luhn-invalid 4111 1111 1111 1112 stays") == "a Luhn-invalid 4111 1111 1111 1112 stays"
    assert (
        redactor.redact("postgres://admin:s3cr3tP4ss@db:5432") == "postgres://admin:[SECRET]@db:5432"
    )  # the password only


def test_custom_patterns_are_checked_at_start_and_read_from_a_file(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="not a regular expression"):
        Settings(redact_patterns={"TICKET": "T-(\\d+"})
    with pytest.raises(ValidationError, match="capitals"):
        Settings(redact_patterns={"ticket id": "T-\\d+"})
    path = tmp_path / "patterns.txt"
    path.write_text("# our ids\nTICKET   T-\\d{5}\n\nIBAN [A-Z]{2}\\d{2}(?: ?\\d{1,4}){4,8}\n")
    assert read_patterns_file(path.read_text()) == {"TICKET": "T-\\d{5}", "IBAN": "[A-Z]{2}\\d{2}(?: ?\\d{1,4}){4,8}"}
    policy = ContentPolicy.from_settings(Settings(ledger_content="redacted", redact_patterns_file=path))
    assert policy.text("see T-12345, pay DE44 5001 0517 5407 3249 31") == "see [TICKET], pay [IBAN]"


# -- content modes through the proxy ---------------------------------------------------------------
@pytest.fixture
def backend(ledger_store: tuple[str, Any]) -> dict[str, Any]:
    kind, where = ledger_store
    return {"database_url": where} if kind == "postgres" else {}


SPEC = "Be brief. Escalations go to help@acme.example.com."


@contextmanager
def proxy_app(tmp_path: Path, upstream: FakeUpstream, **overrides: Any) -> Iterator[TestClient]:
    values = {"upstream_url": upstream.url, "api_keys": ["sk-app"], **overrides}
    with TestClient(create_app(settings(tmp_path, **values)), headers={"authorization": "Bearer sk-app"}) as c:
        registry = c.app.state.proxy.registry  # type: ignore[attr-defined]
        if "default" not in registry.snapshot.specs:  # the fake upstream answers with the spec: an address in it
            c.portal.call(lambda: registry.publish("default", SPEC, labels=["production"]))
        yield c


def stored(c: TestClient, inference_id: str) -> InferenceRecord:
    ledger: Ledger = c.app.state.proxy.ledger  # type: ignore[attr-defined]
    deadline = time.monotonic() + 10
    while (rec := c.portal.call(ledger.get_inference, inference_id)) is None:
        assert time.monotonic() < deadline, f"{inference_id} never reached the ledger"
        time.sleep(0.02)
    return rec


CHAT = {
    "model": "fake-model", "user": "dana@example.com", "metadata": {"ticket": "call +1 415 555 2671"},
    "messages": [{"role": "user", "content": "I am dana@example.com, card 4111 1111 1111 1111. Why was I charged twice?"}],
}  # fmt: skip


def test_redacted_mode_stores_placeholders_and_the_client_still_gets_everything(
    tmp_path: Path, fake_upstream: FakeUpstream, backend: dict[str, Any]
) -> None:
    with proxy_app(tmp_path, fake_upstream, ledger_content="redacted", **backend) as c:
        r = c.post("/v1/chat/completions", json=CHAT, headers={"x-inference-id": "inf-redacted"})
        assert r.status_code == 200
        assert "help@acme.example.com" in r.json()["choices"][0]["message"]["content"]  # the answer is not touched
        assert "dana@example.com" in str(fake_upstream.last().body)  # nor what goes upstream
        row = stored(c, "inf-redacted")
        assert row.request["messages"][0]["content"] == "I am [EMAIL], card [CARD]. Why was I charged twice?"
        assert (
            row.response_text is not None and "[EMAIL]" in row.response_text and "acme.example" not in row.response_text
        )
        assert row.metadata["content"] == "redacted" and row.metadata["metadata"] == {"ticket": "call [PHONE]"}
        user = row.metadata["user"]
        assert user.startswith("pii:") and row.request["user"] == user  # an address as user id: a keyed hash
        fb = c.post("/v1/feedback", json={"inference_id": "inf-redacted", "value": "down", "user": "dana@example.com",
                                          "comment": "call me on 212-555-0143", "feedback_id": "fb-red"})  # fmt: skip
        assert fb.status_code == 200
        ledger: Ledger = c.app.state.proxy.ledger  # type: ignore[attr-defined]
        judged = c.portal.call(ledger.get_feedback, "fb-red")
        assert judged.comment == "call me on [PHONE]" and judged.user_id == user  # one voice, one id
        again = c.post("/v1/feedback", json={"inference_id": "inf-redacted", "value": "down", "user": "dana@example.com",
                                             "comment": "call me on 212-555-0143", "feedback_id": "fb-red"})  # fmt: skip
        assert again.json()["status"] == "duplicate"  # a retry compares equal to the redacted row


def test_none_mode_stores_no_text_and_the_compiler_says_it_has_nothing_to_learn(
    tmp_path: Path, fake_upstream: FakeUpstream, backend: dict[str, Any]
) -> None:
    with proxy_app(tmp_path, fake_upstream, ledger_content="none", **backend) as c:
        ids = [f"inf-none-{i}" for i in range(6)]
        for i, inference_id in enumerate(ids):
            body = {**CHAT, "temperature": 0.3, "user": f"user-{i % 3}"}
            assert (
                c.post("/v1/chat/completions", json=body, headers={"x-inference-id": inference_id}).status_code == 200
            )
        row = stored(c, ids[0])
        assert row.request == {"model": "fake-model", "temperature": 0.3}  # numbers and switches only
        assert row.response_text is None and row.tool_calls is None
        assert row.metadata["content"] == "none" and row.metadata["user"].startswith("pii:")
        assert row.usage == {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}
        for i, inference_id in enumerate(ids):
            stored(c, inference_id)
            value = "up" if i % 2 else "down"
            assert (
                c.post(
                    "/v1/feedback", json={"inference_id": inference_id, "value": value, "comment": "too long"}
                ).status_code
                == 200
            )
        ledger: Ledger = c.app.state.proxy.ledger  # type: ignore[attr-defined]
        events = c.portal.call(ledger.feedback_events, "default")
        assert len(events) == 6 and all(ev.feedback.comment is None for ev in events)
        ds = build_dataset(events)
        assert ds.window["nothing_to_learn"].startswith("nothing to learn from: 6 of 6 judgments")
        registry = FileRegistry(tmp_path / "specs", poll_interval=0)
        ctx = Context(Settings(specs_dir=tmp_path / "specs", data_dir=tmp_path / "data"),
                      CompilerSettings(base_url="http://127.0.0.1:9/v1"), registry, ledger)  # fmt: skip
        result = c.portal.call(lambda: compile_spec(ctx, "default", dry_run=True, record_state=False))
        assert result.result == "skipped"
        assert "SPECLEARN_LEDGER_CONTENT=none" in result.reason and "\n" not in result.reason


async def test_rows_stored_before_a_switch_are_read_back_as_the_mode_now_says(make_ledger: Any) -> None:
    full = await make_ledger()
    rec = inference("inf-old", response_text="ok ann@example.com", metadata={"user": "ann@example.com"})
    rec.request = {"messages": [{"role": "user", "content": "mail ann@example.com"}]}
    await full._write_inferences([rec])
    await full.add_feedback(
        FeedbackRecord(
            "fb-old", "inf-old", THUMB, 1.0, time.time(), comment="ann@example.com", user_id="ann@example.com"
        )
    )
    redacting = await make_ledger(content=ContentPolicy.from_settings(Settings(ledger_content="redacted")))
    (event,) = await redacting.feedback_events("default")
    assert event.inference.request["messages"][0]["content"] == "mail [EMAIL]"
    assert event.inference.response_text == "ok [EMAIL]" and event.feedback.comment == "[EMAIL]"
    assert event.feedback.user_id == event.inference.metadata["user"] == redacting.content.pseudonym("ann@example.com")


def test_a_pairs_file_is_governed_before_the_compiler_reads_it(tmp_path: Path) -> None:
    pairs = tmp_path / "pairs.jsonl"
    rows = [
        {"prompt": f"q{i} from bob@example.com", "chosen": "short, call 212-555-0143", "rejected": f"long {i}"}
        for i in range(6)
    ]
    pairs.write_text("".join(json.dumps(r) + "\n" for r in rows))
    ds = dataset_from_pairs(pairs, 0.3, 0)
    assert governed(ds, Settings()) is ds  # full: as given
    red = governed(ds, Settings(ledger_content="redacted"))
    texts = [t for split in (red.train, red.heldout) for p in split.pairs for t in (p.chosen.prompt, p.chosen.response)]
    assert texts and not any("@" in t or "555" in t for t in texts) and any("[EMAIL]" in t for t in texts)
    none = governed(ds, Settings(ledger_content="none"))
    assert not none.train.pairs and not none.heldout.pairs and "nothing to learn" in none.window["nothing_to_learn"]


# -- retention ---------------------------------------------------------------------------------------
async def seed_old_and_new(ledger: Ledger, now: float) -> None:
    old, new = now - 40 * DAY, now - 1 * DAY
    rows = [inference(f"old-{i}", at=old + i) for i in range(23)] + [
        inference(f"new-{i}", at=new + i) for i in range(5)
    ]
    await ledger._write_inferences(rows)
    for i in range(10):  # on old rows: go with them
        await ledger.add_feedback(FeedbackRecord(f"fb-old-{i}", f"old-{i}", THUMB, 1.0, old + 100 + i))
    # a pair whose rejected side is old: its inference goes, so it goes too
    await ledger.add_feedback(FeedbackRecord("fb-pair", "new-0", PAIR, 1.0, new + 10, rejected_id="old-22"))
    await ledger.add_feedback(FeedbackRecord("fb-new", "new-1", THUMB, -1.0, new + 10))
    await ledger.add_feedback(FeedbackRecord("fb-orphan", "never-stored", THUMB, 1.0, old))  # its inference was dropped


async def test_the_purge_deletes_old_rows_and_their_feedback_in_bounded_batches(make_ledger: Any) -> None:
    ledger = await make_ledger()
    now = time.time()
    await seed_old_and_new(ledger, now)
    inf_before = _purged("inferences")
    fb_before = _purged("feedback")
    done = await Retention(30, batch=5, pause=0).purge(ledger, now)
    assert (done.inferences, done.feedback) == (23, 12)  # 10 thumbs + the pair + the orphan
    assert done.batches >= 23 // 5 + 2  # never more than `batch` inferences in one statement
    for i in range(5):
        assert await ledger.get_inference(f"new-{i}") is not None
    assert await ledger.get_inference("old-0") is None and await ledger.get_feedback("fb-pair") is None
    assert await ledger.get_feedback("fb-new") is not None and await ledger.get_feedback("fb-orphan") is None
    assert _purged("inferences") - inf_before == 23 and _purged("feedback") - fb_before == 12
    assert (await Retention(30, batch=5, pause=0).purge(ledger, now)).inferences == 0  # nothing left to do


def _purged(table: str) -> float:
    from prometheus_client import REGISTRY

    return REGISTRY.get_sample_value("speclearn_ledger_purged_total", {"table": table}) or 0.0


async def test_the_purge_runs_while_the_writer_keeps_writing(make_ledger: Any) -> None:
    ledger = await make_ledger(batch_size=50)
    dropped = counter("speclearn_ledger_dropped_total")
    now = time.time()
    await ledger._write_inferences([inference(f"old-{i}", at=now - 90 * DAY + i) for i in range(3000)])
    written: list[str] = []

    async def writer() -> None:  # the request path: queue a row, never wait
        for i in range(400):
            written.append(f"live-{i}")
            assert ledger.record(inference(f"live-{i}"))
            await asyncio.sleep(0.001)

    write = asyncio.create_task(writer())
    done = await Retention(30, batch=200, pause=0.001).purge(ledger, now)
    await write
    await flushed(ledger, *written)
    assert done.inferences == 3000
    for inference_id in written[::37] + written[-1:]:
        assert await ledger.get_inference(inference_id) is not None  # every live row landed
    assert counter("speclearn_ledger_dropped_total") == dropped  # nothing dropped for the purge's sake


async def test_a_started_ledger_purges_on_its_own(make_ledger: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(retention, "FIRST_PASS_DELAY", 0.0)
    now = time.time()
    seeding = await make_ledger()
    await seed_old_and_new(seeding, now)
    ledger = await make_ledger(retention=Retention(30, interval=3600, batch=100, pause=0))
    deadline = time.monotonic() + 10
    while await ledger.get_inference("old-0") is not None:
        assert time.monotonic() < deadline, "the background purge never ran"
        await asyncio.sleep(0.05)
    assert await ledger.get_inference("new-0") is not None


def test_retention_is_off_unless_configured() -> None:
    assert Retention.from_settings(Settings()) is None
    r = Retention.from_settings(Settings(ledger_retention_days=30, ledger_purge_batch=500))
    assert r is not None and r.batch == 500 and r.cutoff(100 * DAY) == 70 * DAY
    with pytest.raises(ValidationError):
        Settings(ledger_retention_days=0)


# -- forget ------------------------------------------------------------------------------------------
async def seed_users(ledger: Ledger) -> None:
    await ledger._write_inferences([
        inference("ann-1", metadata={"user": "ann"}), inference("ann-2", metadata={"user": "ann"}),
        inference("bob-1", metadata={"user": "bob"}), inference("anon-1"), inference("anon-2"),
    ])  # fmt: skip
    now = time.time()
    await ledger.add_feedback(FeedbackRecord("f-ann-own", "ann-1", THUMB, 1.0, now, user_id="ann"))
    await ledger.add_feedback(
        FeedbackRecord("f-bob-on-ann", "ann-2", THUMB, -1.0, now, user_id="bob")
    )  # goes with ann-2
    await ledger.add_feedback(FeedbackRecord("f-ann-on-bob", "bob-1", THUMB, 1.0, now, user_id="ann"))  # bob-1 stays
    await ledger.add_feedback(
        FeedbackRecord("f-ann-on-anon", "anon-1", THUMB, 1.0, now, user_id="ann")
    )  # anon-1: ann's
    await ledger.add_feedback(FeedbackRecord("f-cy-on-anon", "anon-2", THUMB, 1.0, now, user_id="cy"))


async def test_forget_erases_a_users_rows_and_nobody_elses(make_ledger: Any) -> None:
    ledger = await make_ledger()
    await seed_users(ledger)
    assert await ledger.forget_user("ann", batch=1) == (3, 4)  # ann-1, ann-2, anon-1; 4 judgments
    for gone in ("ann-1", "ann-2", "anon-1"):
        assert await ledger.get_inference(gone) is None
    for kept in ("bob-1", "anon-2"):
        assert await ledger.get_inference(kept) is not None
    assert [
        await ledger.get_feedback(f) is None for f in ("f-ann-own", "f-bob-on-ann", "f-ann-on-bob", "f-ann-on-anon")
    ] == [True] * 4
    assert await ledger.get_feedback("f-cy-on-anon") is not None
    assert await ledger.forget_user("ann") == (0, 0)


async def test_forget_finds_hashed_ids_and_drops_rows_still_queued(make_ledger: Any) -> None:
    ledger = await make_ledger(content=ContentPolicy.from_settings(Settings(ledger_content="redacted")),
                               flush_interval=1.0, batch_size=10_000)  # fmt: skip
    await ledger._write_inferences(
        [ledger.content.inference(inference("dana-1", metadata={"user": "dana@example.com"}))]
    )
    assert ledger.record(inference("dana-queued", at=time.time() - 1, metadata={"user": "dana@example.com"}))
    assert await ledger.forget_user("dana@example.com") == (1, 0)  # stored as pii:..., found by the address
    await ledger.close()  # flushes the queue
    reopened = await make_ledger()
    assert await reopened.get_inference("dana-queued") is None and await reopened.get_inference("dana-1") is None


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    full = {**os.environ, **env}
    full.pop("PROMETHEUS_MULTIPROC_DIR", None)
    return subprocess.run([sys.executable, "-m", "proxy.cli", "feedback", *args], env=full, cwd=REPO,
                          capture_output=True, text=True, timeout=60)  # fmt: skip


async def test_the_forget_command_says_how_many_rows(
    tmp_path: Path, ledger_store: tuple[str, Any], make_ledger: Any
) -> None:
    kind, where = ledger_store
    ledger = await make_ledger()
    await seed_users(ledger)
    env = {"SPECLEARN_DATABASE_URL": where} if kind == "postgres" else {"SPECLEARN_DATA_DIR": str(Path(where).parent)}
    done = await asyncio.to_thread(_cli, env, "forget", "ann")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "erased 3 inference rows and 4 feedback rows of user 'ann'"
    assert await ledger.get_inference("ann-1") is None and await ledger.get_inference("bob-1") is not None


def test_the_admin_api_erases_a_user(tmp_path: Path, fake_upstream: FakeUpstream, backend: dict[str, Any]) -> None:
    with proxy_app(tmp_path, fake_upstream, **backend) as c:
        ledger: Ledger = c.app.state.proxy.ledger  # type: ignore[attr-defined]
        c.portal.call(seed_users, ledger)
        assert c.delete("/admin/users/ann").status_code == 401  # a client key is not the admin key
        r = c.delete("/admin/users/ann", headers={"authorization": f"Bearer {ADMIN_KEY}"})
        assert r.status_code == 200 and r.json() == {"user": "ann", "erased": {"inferences": 3, "feedback": 4}}
        assert c.portal.call(ledger.get_inference, "ann-1") is None
        r = c.delete("/admin/users/nobody%40example.com", headers={"authorization": f"Bearer {ADMIN_KEY}"})
        assert r.json() == {"user": "nobody@example.com", "erased": {"inferences": 0, "feedback": 0}}


async def test_the_purge_command_applies_the_retention_now(ledger_store: tuple[str, Any], make_ledger: Any) -> None:
    kind, where = ledger_store
    ledger = await make_ledger()
    await seed_old_and_new(ledger, time.time())
    env = {"SPECLEARN_DATABASE_URL": where} if kind == "postgres" else {"SPECLEARN_DATA_DIR": str(Path(where).parent)}
    refused = await asyncio.to_thread(_cli, env, "purge")
    assert refused.returncode == 2 and "SPECLEARN_LEDGER_RETENTION_DAYS" in refused.stderr
    done = await asyncio.to_thread(_cli, {**env, "SPECLEARN_LEDGER_RETENTION_DAYS": "30"}, "purge")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("purged 23 inference rows and 12 feedback rows older than 30 days")
    assert await ledger.get_inference("old-0") is None and await ledger.get_inference("new-0") is not None


@pytest.mark.parametrize("args", [["serve", "--port", "9"], ["feedback", "forget", "ann"]])
def test_redacted_without_the_extra_is_one_line(tmp_path: Path, args: list[str]) -> None:
    env = {"SPECLEARN_LEDGER_CONTENT": "redacted", "SPECLEARN_UPSTREAM_URL": DEAD_URL}
    done = run_cli(tmp_path, args, block="phonenumbers", env=env)
    assert done.returncode == 2, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "SPECLEARN_LEDGER_CONTENT=redacted needs the `redact` extra" in done.stderr
    assert "pip install 'speclearn[redact]'" in done.stderr
