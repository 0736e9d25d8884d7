"""The compiler on a hosted upstream as it is, with no compiler setting (tests/fake_hosted.py).

A team's upstream serves only its own model names and refuses what its reasoning models do not
take: the compiler asks the model the spec's traffic used, with the upstream key; re-sends
`max_tokens` as `max_completion_tokens`; votes by sampled answers where logprobs are missing;
embeds with the embedding model only; and `speclearn doctor` names each problem in one line.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from compiler import served_model
from compiler.llm import Budget, LLMClient
from compiler.quirks import Quirks
from compiler.runner import Context, compile_spec
from compiler.settings import CompilerSettings
from helpers import REPO, free_port
from proxy.ledger import InferenceRecord, Ledger
from proxy.ledger.sqlite import SqliteLedger
from proxy.registry import FileRegistry, specfile
from proxy.settings import Settings
from tests.fake_hosted import CHAT, EMBEDDING, KEY, NO_LOGPROBS, REASONING, FakeHosted
from tests.fake_llm import fill_ledger
from tests.test_storage import ledger_store, make_ledger, pg_dsn  # noqa: F401 - fixtures: both backends

MakeLedger = Any
INSTRUCTION = "You answer customer questions for ACME."
CURRENT = INSTRUCTION + " Be thorough and explain every detail."


@pytest.fixture
def hosted() -> Iterator[tuple[FakeHosted, str]]:
    fake = FakeHosted()
    with fake.serve() as url:
        yield fake, url


async def spec_with_traffic(tmp_path: Path, model: str) -> None:
    """Spec `support` (an instruction, a production version) whose users' traffic went to
    `model` in the last day: twenty questions, an up and a down on each, some with comments."""
    registry = FileRegistry(tmp_path / "specs", poll_interval=0)
    await registry.set_instruction("support", INSTRUCTION + "\n")
    await registry.publish("support", CURRENT, labels=["production"])
    (tmp_path / "data").mkdir(parents=True, exist_ok=True)
    ledger = tmp_path / "data" / "ledger.sqlite3"
    await fill_ledger(ledger, t0=time.time() - 86400)
    with sqlite3.connect(ledger) as db:  # the fixture records model "m": this app used `model`
        db.execute("UPDATE inferences SET model = ?", (model,))


def env_for(tmp_path: Path, url: str, **extra: str) -> dict[str, str]:
    """A team's environment: the upstream and its key, no SPECLEARN_COMPILER_* at all."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPECLEARN_")}
    env.update(
        {
            "SPECLEARN_UPSTREAM_URL": url,
            "SPECLEARN_UPSTREAM_API_KEY": KEY,
            "SPECLEARN_SPECS_DIR": str(tmp_path / "specs"),
            "SPECLEARN_DATA_DIR": str(tmp_path / "data"),
            **extra,
        }
    )
    return env


def speclearn(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "proxy.cli", *args], env=env, cwd=REPO, capture_output=True,
                          text=True, timeout=600)  # fmt: skip


def context(tmp_path: Path, url: str, ledger: Ledger, **compiler: Any) -> Context:
    settings = Settings(specs_dir=tmp_path / "specs", data_dir=tmp_path / "data", upstream_url=url,
                        upstream_api_key=KEY)  # fmt: skip
    registry = FileRegistry(tmp_path / "specs", poll_interval=0)
    return Context(settings, CompilerSettings(seed=11, **compiler), registry, ledger, use_cache=False)


async def round_on(tmp_path: Path, url: str, model: str, **compiler: Any) -> Any:
    await spec_with_traffic(tmp_path, model)
    ledger = SqliteLedger(tmp_path / "data" / "ledger.sqlite3")
    await ledger.start()
    try:
        return await compile_spec(context(tmp_path, url, ledger, **compiler), "support")
    finally:
        await ledger.close()


# -- the model: the spec's own traffic's, with the upstream key ------------------------------------
async def test_compile_with_no_compiler_setting_asks_the_traffics_model_with_the_key(
    tmp_path: Path, hosted: tuple[FakeHosted, str]
) -> None:
    fake, url = hosted
    await spec_with_traffic(tmp_path, CHAT)
    done = speclearn(env_for(tmp_path, url), "compile", "support")
    assert done.returncode in (0, 3), done.stderr  # published, skipped or gate failed: never an error
    assert (
        "compiler model gpt-x: used by 40 of 40 of spec support's answered requests in the last 30 days" in done.stdout
    )
    chats = fake.chats()
    assert fake.fake.count("propose rules") >= 1 and len(chats) > 20  # a whole round, not a probe
    assert {c.body["model"] for c in chats} == {CHAT} and {c.authorization for c in chats} == {f"Bearer {KEY}"}
    assert "default" not in {s.body.get("model") for s in fake.seen}
    assert not any(c.body.get("n") for c in chats)  # gpt-x returns logprobs: no sampled votes
    if "result: published" in done.stdout:
        newest = max((tmp_path / "specs" / "support" / "versions").glob("*.md"), key=lambda p: int(p.stem))
        meta = specfile.parse(newest.read_text())[0]
        assert meta["compiler"]["model"] == CHAT and any("gpt-x: used by 40 of 40" in n for n in meta["cost"]["notes"])


async def test_the_most_used_model_wins_and_a_new_spec_takes_all_specs_traffic(tmp_path: Path) -> None:
    ledger = SqliteLedger(tmp_path / "l.db", flush_interval=0)
    await ledger.start()
    rows = [("a", "gpt-x", "ok"), ("a", "gpt-x", "ok"), ("a", "gpt-y", "ok"), ("a", "gpt-z", "error"),
            ("a", "gpt-z", "error"), ("a", "gpt-z", "error"), ("b", "gpt-y", "ok")]  # fmt: skip
    for i, (spec, model, status) in enumerate(rows):
        ledger.record(InferenceRecord(f"i{i}", 1000.0 + i, "chat", model, spec, 1, "h", {}, "x", status=status))
    ledger.record(InferenceRecord("old", 10.0, "chat", "gpt-old", "a", 1, "h", {}, "x"))
    await ledger.close()
    await ledger.start()
    try:
        choice = await served_model.from_traffic(ledger, "a", since=500.0, days=30)
        assert (
            choice is not None and choice.model == "gpt-x" and "2 of 3" in choice.why
        )  # errors and old rows do not count
        other = await served_model.from_traffic(ledger, "new-spec", since=500.0, days=30)
        assert other is not None and other.model == "gpt-x" and "spec new-spec has none yet" in other.why
        assert served_model.most_used({"b": 2, "a": 2, "c": 1}) == "a"  # a tie is decided by name: repeatable
        assert await served_model.from_traffic(ledger, "a", since=5000.0, days=30) is None
    finally:
        await ledger.close()


async def test_model_counts_on_both_backends(make_ledger: MakeLedger) -> None:
    ledger = await make_ledger()
    for i, (spec, model, status) in enumerate([("a", "m1", "ok"), ("a", "m1", "ok"), ("a", "m2", "ok"),
                                               ("a", "m3", "error"), ("b", "m2", "ok"), ("a", None, "ok")]):  # fmt: skip
        ledger.record(InferenceRecord(f"mc{i}", 100.0 + i, "chat", model, spec, 1, "h", {}, "x", status=status))
    ledger.record(InferenceRecord("mc-old", 1.0, "chat", "m9", "a", 1, "h", {}, "x"))
    await ledger.close()
    ledger = await make_ledger()
    assert await ledger.model_counts("a", since=50.0) == {"m1": 2, "m2": 1}
    assert await ledger.model_counts(None, since=50.0) == {"m1": 2, "m2": 2}
    assert await ledger.model_counts("a") == {"m1": 2, "m2": 1, "m9": 1}


async def test_no_traffic_takes_the_endpoints_only_model_else_says_to_set_one(tmp_path: Path) -> None:
    one = FakeHosted(chat_models=frozenset({"vllm-served"}), embedding_models=frozenset())
    with one.serve() as url:
        ctx = context(tmp_path, url, ledger=None)  # type: ignore[arg-type]
        assert (await ctx.choose_model("support")).model == "vllm-served"
    with FakeHosted().serve() as url:  # OpenAI lists many: none is a guess worth making
        choice = await context(tmp_path, url, ledger=None).choose_model("support")  # type: ignore[arg-type]
        assert choice.model == "default" and "set SPECLEARN_COMPILER_MODEL" in choice.why
    configured = await context(tmp_path, "http://127.0.0.1:9/v1", ledger=None, model="gpt-4o").choose_model("s")  # type: ignore[arg-type]
    assert configured.model == "gpt-4o"


# -- max_tokens refused: max_completion_tokens, learnt once per model ------------------------------
async def test_max_tokens_refused_is_resent_as_max_completion_tokens_and_remembered(
    hosted: tuple[FakeHosted, str],
) -> None:
    fake, url = hosted
    quirks = Quirks()
    async with LLMClient(url, REASONING, api_key=KEY, quirks=quirks, reasoning_tokens=256) as llm:
        assert await llm.chat([{"role": "user", "content": "hello"}], max_tokens=16) == "A short answer."
        assert await llm.chat([{"role": "user", "content": "again"}], max_tokens=16) == "A short answer."
    sent = [c.body for c in fake.chats(REASONING)]
    # refused for max_tokens, then for temperature 0, then answered; the second call is sent right
    assert ["max_tokens" in b for b in sent] == [True, False, False, False]
    assert [b.get("max_completion_tokens") for b in sent[1:]] == [272, 272, 272] and "temperature" not in sent[-1]
    assert any("refuses max_tokens" in n for n in llm.budget.notes.values())
    async with LLMClient(url, REASONING, api_key=KEY, quirks=quirks) as again:  # the next round: adapted already
        await again.chat([{"role": "user", "content": "third"}], max_tokens=16)
    assert len(fake.chats(REASONING)) == 5
    async with LLMClient(url, CHAT, api_key=KEY, quirks=quirks) as other:  # per model: gpt-x keeps max_tokens
        await other.chat([{"role": "user", "content": "hi"}], max_tokens=16)
    assert "max_tokens" in fake.chats(CHAT)[-1].body


async def test_reasoning_tokens_make_room_for_the_answer(hosted: tuple[FakeHosted, str]) -> None:
    _, url = hosted
    async with LLMClient(url, REASONING, api_key=KEY, reasoning_tokens=0) as starved:
        assert await starved.chat([{"role": "user", "content": "q"}], max_tokens=4) == ""
    assert any("raise SPECLEARN_COMPILER_REASONING_TOKENS" in n for n in starved.budget.notes.values())
    async with LLMClient(url, REASONING, api_key=KEY) as fed:  # the default: 1024 more
        assert await fed.chat([{"role": "user", "content": "q"}], max_tokens=4) == "A short answer."


async def test_a_round_on_a_reasoning_model_runs_with_its_notes(tmp_path: Path, hosted: tuple[FakeHosted, str]) -> None:
    fake, url = hosted
    result = await round_on(tmp_path, url, REASONING)
    assert result.result != "error", result.reason
    sent = fake.chats(REASONING)
    assert sum("max_tokens" in c.body for c in sent) <= 4 < len(sent)  # at most the first concurrent batch
    assert any("refuses max_tokens: sent max_completion_tokens" in n for n in result.cost["notes"])


# -- logprobs missing: calibrated judges vote by sampled answers -----------------------------------
async def test_a_judge_without_logprobs_votes_by_sampled_answers(
    tmp_path: Path, hosted: tuple[FakeHosted, str]
) -> None:
    fake, url = hosted
    result = await round_on(tmp_path, url, NO_LOGPROBS)
    assert result.result != "error", result.reason
    assert result.calibration is not None and result.calibration["trusted"]  # graded votes: the scale fits
    sampled = [c.body for c in fake.chats(NO_LOGPROBS) if c.body.get("n")]
    assert sampled and all(b["n"] == 5 and b["temperature"] == 1.0 and "logprobs" not in b for b in sampled)
    notes = " | ".join(result.cost["notes"])
    assert "gpt-nolp returns no logprobs" in notes and "share of 5 sampled answers" in notes


async def test_without_sampling_a_calibrated_judge_gets_hard_votes(hosted: tuple[FakeHosted, str]) -> None:
    """The control: one answer per question is a vote of 0 or 1, what the sampling replaces."""
    _, url = hosted
    q = [{"role": "user", "content": "TASK: check an answer against a rule\nRule: Keep answers short.\nAnswer: Yes."}]
    async with LLMClient(url, NO_LOGPROBS, api_key=KEY, vote_samples=1) as one:
        assert await one.choose(q, options=("Yes", "No"), graded=True) in (0.0, 1.0)
    async with LLMClient(url, CHAT, api_key=KEY) as soft:  # logprobs: a soft vote, no sampling
        assert 0.0 < await soft.choose(q, options=("Yes", "No"), graded=True) < 1.0


# -- embeddings: the embedding model, never the chat model's name ---------------------------------
async def test_embeddings_come_from_the_embedding_model(tmp_path: Path, hosted: tuple[FakeHosted, str]) -> None:
    fake, url = hosted
    result = await round_on(tmp_path, url, CHAT, embedding_model=EMBEDDING)
    assert result.result != "error", result.reason
    asked = [s.body["model"] for s in fake.seen if s.path == "/v1/embeddings"]
    assert asked and set(asked) == {EMBEDDING}
    assert not any("embeddings" in n for n in result.cost.get("notes", []))


async def test_failing_embeddings_are_said_once(tmp_path: Path, hosted: tuple[FakeHosted, str]) -> None:
    fake, url = hosted
    result = await round_on(tmp_path, url, CHAT, embedding_model="text-embedding-missing")
    said = [n for n in result.cost["notes"] if "embeddings" in n]
    assert len(said) == 1 and "text-embedding-missing failed" in said[0] and "model_not_found" in said[0]
    assert [s.body["model"] for s in fake.seen if s.path == "/v1/embeddings"] == ["text-embedding-missing"]


async def test_no_embedding_model_never_asks_the_chat_model_for_embeddings(
    tmp_path: Path, hosted: tuple[FakeHosted, str]
) -> None:
    fake, url = hosted
    result = await round_on(tmp_path, url, CHAT)
    assert result.result != "error", result.reason
    assert not [s for s in fake.seen if s.path == "/v1/embeddings"]


# -- speclearn doctor: one line per problem --------------------------------------------------------
async def test_doctor_on_a_healthy_setup(tmp_path: Path, hosted: tuple[FakeHosted, str]) -> None:
    _, url = hosted
    await spec_with_traffic(tmp_path, CHAT)
    done = speclearn(env_for(tmp_path, url, SPECLEARN_COMPILER_EMBEDDING_MODEL=EMBEDDING), "doctor", "support")
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("note: compiler: model gpt-x: used by 40 of 40 of spec support's answered requests")
    assert f"ok: compiler: gpt-x at {url} answers" in lines
    assert f"ok: embeddings: {EMBEDDING} at {url} answers" in lines
    assert not [ln for ln in lines if ln.startswith(("problem:", "warning:"))]


@pytest.mark.parametrize(
    ("setting", "line", "code"),
    [
        (
            {"SPECLEARN_COMPILER_MODEL": "gpt-unknown"},
            "problem: compiler: model `gpt-unknown` is not served by {url} (model_not_found): set SPECLEARN_COMPILER_MODEL",
            1,
        ),
        (
            {"SPECLEARN_UPSTREAM_API_KEY": "sk-not-the-team-key"},
            "problem: compiler: {url} refused the key (invalid_api_key): set SPECLEARN_UPSTREAM_API_KEY or "
            "SPECLEARN_COMPILER_API_KEY",
            1,
        ),
        (
            {"SPECLEARN_UPSTREAM_URL": "http://127.0.0.1:{closed}/v1"},
            "problem: compiler: gpt-x at http://127.0.0.1:{closed}/v1: endpoint down or failing",
            1,
        ),
        (
            {"SPECLEARN_COMPILER_MODEL": REASONING},
            "note: compiler: o-reasoner refuses max_tokens -> using max_completion_tokens (+1024 reasoning tokens)",
            0,
        ),
        (
            {"SPECLEARN_COMPILER_MODEL": NO_LOGPROBS},
            "note: compiler: gpt-nolp returns no logprobs -> calibrated judges vote by 5 sampled answers",
            0,
        ),
        (
            {"SPECLEARN_COMPILER_EMBEDDING_MODEL": "text-embedding-missing"},
            "warning: embeddings: text-embedding-missing at {url} failed ({url} does not serve model "
            "`text-embedding-missing` (model_not_found): set SPECLEARN_COMPILER_EMBEDDING_MODEL)",
            0,
        ),
    ],
    ids=["model-not-served", "key-refused", "endpoint-down", "max-tokens-refused", "no-logprobs", "embeddings-fail"],
)
async def test_doctor_names_each_problem_in_one_line(
    tmp_path: Path, hosted: tuple[FakeHosted, str], setting: dict[str, str], line: str, code: int
) -> None:
    _, url = hosted
    await spec_with_traffic(tmp_path, CHAT)
    closed = str(free_port())
    env = env_for(tmp_path, url, **{k: v.format(closed=closed) for k, v in setting.items()})
    done = speclearn(env, "doctor", "support")
    expected = line.format(url=url, closed=closed)
    assert any(ln.startswith(expected) for ln in done.stdout.splitlines()), done.stdout + done.stderr
    assert done.returncode == code, done.stdout
    assert sum(ln.startswith("problem:") for ln in done.stdout.splitlines()) == code  # one line per problem


async def test_budget_notes_reach_the_cost() -> None:
    budget = Budget(10, 100)
    budget.note("k", "said once")
    budget.note("k", "said again")
    assert budget.as_dict()["notes"] == ["said once"] and "notes" not in Budget(10, 100).as_dict()
