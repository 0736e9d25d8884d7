"""`speclearn feedback export --format dpo`: the compiler's preference pairs as TRL DPO rows.

A real proxy in front of a fake upstream that answers what the test tells it to (header
`X-Answer`), real thumbs and pairwise feedback through /v1/feedback, then the CLI in a
subprocess; the output is parsed with json alone (no `datasets` needed to read it).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp import web

from helpers import REPO, FakeUpstream, ProxyProcess, start_proxy
from ledger_reader import feedback_rows
from proxy.config import write_tuning

SPEC_TEXT = "DEFAULT SPEC TEXT"
ALICE_QUESTIONS = [f"Alice question number {i}?" for i in range(6)]
BOB_QUESTIONS = [f"Bob asks about topic {i}?" for i in range(2)]


class ScriptedUpstream(FakeUpstream):
    """The fake upstream, answering a chat completion with the text in the `X-Answer` header."""

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        answer = request.headers.get("X-Answer")
        if request.path != "/v1/chat/completions" or answer is None:
            return await super()._handle(request)
        return web.json_response({
            "id": "chatcmpl-up", "object": "chat.completion", "created": 1, "model": "fake-model",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": answer}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 3, "total_tokens": 6},
        })  # fmt: skip


@pytest.fixture(scope="module")
def upstream() -> Iterator[ScriptedUpstream]:
    up = ScriptedUpstream().start()
    yield up
    up.stop()


@pytest.fixture(scope="module")
def proxy(upstream: ScriptedUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProxyProcess]:
    handle = start_proxy(tmp_path_factory.mktemp("dpo-export"), upstream.url,
                         specs={"default": SPEC_TEXT, "other": "OTHER SPEC"})  # fmt: skip
    yield handle
    handle.stop()


def ask(proxy: ProxyProcess, question: str, answer: str, user: str, spec: str = "default",
        system: str | None = None) -> str:  # fmt: skip
    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": question}]
    r = httpx.post(f"{proxy.root_url}/specs/{spec}/v1/chat/completions", headers={"X-Answer": answer},
                   json={"model": "m", "messages": messages, "user": user})  # fmt: skip
    assert r.status_code == 200, r.text
    return r.headers["x-inference-id"]


def vote(proxy: ProxyProcess, body: dict[str, Any]) -> None:
    r = httpx.post(proxy.base_url + "/feedback", json=body)
    assert r.status_code == 200, r.text
    time.sleep(0.01)  # distinct feedback times: the split and the cap go by time


@pytest.fixture(scope="module")
def ledger(proxy: ProxyProcess) -> dict[str, Any]:
    """Alice (loud) rates a good and a bad answer to each of six questions, Bob to two; Carol
    compares two answers (with the client's own system message); Dave votes up on another spec;
    Eve votes one answer down."""
    ids: dict[str, Any] = {"good": set(), "bad": set()}
    for user, questions in (("alice", ALICE_QUESTIONS), ("bob", BOB_QUESTIONS)):
        for i, q in enumerate(questions):
            good = ask(proxy, q, f"GOOD answer {user} {i}", user)
            bad = ask(proxy, q, f"BAD answer {user} {i}", user)
            ids["good"].add(good)
            ids["bad"].add(bad)
            vote(proxy, {"inference_id": bad, "value": "down"})
            vote(proxy, {"inference_id": good, "value": "up"})
    a = ask(proxy, "Carol compares two answers?", "GOOD pairwise answer", "carol", system="Client system text.")
    b = ask(proxy, "Carol compares two answers?", "BAD pairwise answer", "carol", system="Client system text.")
    vote(proxy, {"chosen_id": a, "rejected_id": b})
    ids["explicit"] = (a, b)
    other = ask(proxy, "A question on the other spec?", "GOOD other-spec answer", "dave", spec="other")
    vote(proxy, {"inference_id": other, "value": "up"})
    ids["other"] = other
    # a down no up on its question answers: left over, it pairs only as a cross pair
    vote(proxy, {"inference_id": ask(proxy, "Eve asks something else?", "BAD lone answer", "eve"), "value": "down"})
    deadline = time.monotonic() + 10
    while len(feedback_rows(proxy.data_dir)) < 2 * (len(ALICE_QUESTIONS) + len(BOB_QUESTIONS)) + 3:
        assert time.monotonic() < deadline, "feedback never reached the ledger"
        time.sleep(0.05)
    time.sleep(0.3)  # the inference rows land in the same batched writer
    return ids


def export(proxy: ProxyProcess, *args: str, env: dict[str, str] | None = None) -> list[dict[str, Any]]:
    proc = subprocess.run(
        [sys.executable, "-m", "proxy.cli", "feedback", "export", "--format", "dpo", *args],
        env={**proxy.env, **(env or {})}, cwd=REPO, capture_output=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr.decode()
    return [json.loads(line) for line in proc.stdout.decode().splitlines()]


def test_rows_are_trl_conversational_preference_pairs(proxy: ProxyProcess, ledger: dict[str, Any]) -> None:
    rows = export(proxy, "--spec", "default", "--split", "all")
    assert rows
    for row in rows:
        assert set(row) >= {"prompt", "chosen", "rejected", "id", "split"}
        assert isinstance(row["prompt"], list) and row["prompt"][-1]["role"] == "user"
        assert [m["role"] for m in row["chosen"]] == ["assistant"] and [m["role"] for m in row["rejected"]] == [
            "assistant"
        ]
        # the chosen answer is always the up-voted (or preferred) one
        assert row["chosen"][0]["content"].startswith("GOOD") and row["rejected"][0]["content"].startswith("BAD")
        assert row["chosen_id"] in ledger["good"] | {ledger["explicit"][0]}
        # the spec the proxy injected never reaches the pairs; the client's own system text does
        assert SPEC_TEXT not in json.dumps(row)
    thumbs = [r for r in rows if r["source"] == "thumbs"]
    assert thumbs and all(r["same_prompt"] for r in thumbs)
    for r in thumbs:  # the prompt is the question that was asked, as sent
        assert r["prompt"] == [{"role": "user", "content": r["prompt"][0]["content"]}]
        assert r["prompt"][0]["content"] in ALICE_QUESTIONS + BOB_QUESTIONS
    (explicit,) = [r for r in rows if r["source"] == "explicit"]
    assert (explicit["chosen_id"], explicit["rejected_id"]) == ledger["explicit"]
    assert explicit["prompt"] == [{"role": "system", "content": "Client system text."},
                                  {"role": "user", "content": "Carol compares two answers?"}]  # fmt: skip
    assert explicit["voices"] == ["carol"]
    # every up/down pair on one question is there: 8 questions, one pair each, plus the explicit one
    assert len(rows) == len(ALICE_QUESTIONS) + len(BOB_QUESTIONS) + 1
    assert all(ledger["other"] not in (r["chosen_id"], r["rejected_id"]) for r in rows)


def test_split_is_the_compilers_held_out_split(proxy: ProxyProcess, ledger: dict[str, Any]) -> None:
    every = export(proxy, "--spec", "default", "--split", "all")
    train = export(proxy, "--spec", "default")  # default: train
    held = export(proxy, "--spec", "default", "--split", "heldout")
    assert train and held
    assert {r["split"] for r in train} == {"train"} and {r["split"] for r in held} == {"heldout"}
    assert sorted(r["id"] for r in every) == sorted(r["id"] for r in train + held)
    questions = lambda rows: {r["prompt"][-1]["content"] for r in rows}  # noqa: E731
    assert not questions(train) & questions(held)  # a conversation is never split across sides
    # held out = the most recent conversations: the explicit pair (posted last) is held out
    assert "explicit" in {r["source"] for r in held}
    # the same numbers the compiler uses: a larger held-out fraction holds more out
    tuning = write_tuning(proxy.data_dir.parent / "holdout.toml", compiler={"holdout_fraction": 0.6})
    more = export(proxy, "--spec", "default", "--split", "heldout", env=tuning)
    assert len(more) > len(held)


def test_per_user_cap_keeps_each_voices_latest(proxy: ProxyProcess, ledger: dict[str, Any]) -> None:
    rows = export(proxy, "--spec", "default", "--split", "all",
                  env=write_tuning(proxy.data_dir.parent / "cap.toml", compiler={"max_per_user": 4}))  # fmt: skip
    voices = Counter(v for r in rows for v in r["voices"])
    # four judgments each: alice's and bob's last two up/down pairs, carol's one comparison
    assert voices == {"alice": 2, "bob": 2, "carol": 1}
    alice = {r["prompt"][-1]["content"] for r in rows if r["voices"] == ["alice"]}
    assert alice == set(ALICE_QUESTIONS[-2:])


def test_spec_filter_and_cross_pairs(proxy: ProxyProcess, ledger: dict[str, Any]) -> None:
    # on the other spec there is one up and no down: nothing to contrast
    assert export(proxy, "--spec", "other", "--split", "all") == []
    # without --spec Dave's up on the other spec joins; no down answers his question, so it pairs
    # with Eve's leftover down (both held out: the newest) as a cross pair; --no-cross drops it
    every = export(proxy, "--split", "all")
    same = export(proxy, "--split", "all", "--no-cross")
    assert {r["source"] for r in same} == {"thumbs", "explicit"}
    assert len(same) == len(ALICE_QUESTIONS) + len(BOB_QUESTIONS) + 1
    (cross,) = [r for r in every if r["source"] == "cross"]
    assert len(every) == len(same) + 1
    assert (cross["chosen_id"], cross["split"], cross["same_prompt"]) == (ledger["other"], "heldout", False)
    assert cross["prompt"] == [{"role": "user", "content": "A question on the other spec?"}]
    assert cross["rejected"] == [{"role": "assistant", "content": "BAD lone answer"}]
    assert sorted(cross["voices"]) == ["dave", "eve"]


def test_rows_read_back_as_a_pairs_file(proxy: ProxyProcess, ledger: dict[str, Any], tmp_path: Path) -> None:
    """The export is also a `speclearn compile --pairs` file: same pairs, same split."""
    from compiler.pairs_file import dataset_from_pairs

    out = tmp_path / "pairs.jsonl"
    proc = subprocess.run(
        [sys.executable, "-m", "proxy.cli", "feedback", "export", "--format", "dpo", "--spec", "default",
         "--split", "all", "-o", str(out)], env=proxy.env, cwd=REPO, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert f"wrote {len(ALICE_QUESTIONS) + len(BOB_QUESTIONS) + 1} all preference pairs" in proc.stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    ds = dataset_from_pairs(str(out), 0.3, 0)
    assert len(ds.train.pairs) == sum(r["split"] == "train" for r in rows)
    assert len(ds.heldout.pairs) == sum(r["split"] == "heldout" for r in rows)
    assert all(p.chosen.response.startswith("GOOD") for p in ds.train.pairs + ds.heldout.pairs)


def test_default_export_is_still_events(proxy: ProxyProcess, ledger: dict[str, Any]) -> None:
    proc = subprocess.run([sys.executable, "-m", "proxy.cli", "feedback", "export", "--spec", "default"],
                          env=proxy.env, cwd=REPO, capture_output=True, timeout=60)  # fmt: skip
    assert proc.returncode == 0, proc.stderr.decode()
    events = [json.loads(line) for line in proc.stdout.decode().splitlines()]
    assert events and all("inference" in e and "kind" in e for e in events)


def test_unknown_format_is_a_clear_argparse_error() -> None:
    proc = subprocess.run([sys.executable, "-m", "proxy.cli", "feedback", "export", "--format", "parquet"],
                          cwd=REPO, capture_output=True, text=True, timeout=30)  # fmt: skip
    assert proc.returncode == 2
    assert "invalid choice: 'parquet'" in proc.stderr and "'events'" in proc.stderr and "'dpo'" in proc.stderr
    assert "Traceback" not in proc.stderr


# -- the hand-off: the proxy configures the options, the compiler does the dpo work ---------------
BLOCKING = """
import sys
sys.modules["compiler"] = None  # import compiler (or any compiler.x) raises ImportError
from proxy.cli import main
code = main(sys.argv[1:])
assert not [m for m in sys.modules if m.startswith("compiler") and sys.modules[m] is not None]
sys.exit(code)
"""


def cli_without_compiler(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {"PATH": "/usr/bin:/bin", "SPECLEARN_DATA_DIR": str(tmp_path / "data"),
           "SPECLEARN_SPECS_DIR": str(tmp_path / "specs")}  # fmt: skip
    return subprocess.run([sys.executable, "-c", BLOCKING, *args], env=env, cwd=REPO, capture_output=True,
                          text=True, timeout=60)  # fmt: skip


def test_events_export_runs_without_the_compiler(tmp_path: Path) -> None:
    """The proxy's commands never import the compiler: with it unimportable, events still export."""
    out = tmp_path / "events.jsonl"
    proc = cli_without_compiler(tmp_path, "feedback", "export", "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "wrote 0 feedback events" in proc.stderr and out.read_bytes() == b""


def test_dpo_export_is_handed_to_the_compiler(tmp_path: Path) -> None:
    """--format dpo is the compiler's: without it the command says so in one line, no traceback."""
    proc = cli_without_compiler(tmp_path, "feedback", "export", "--format", "dpo")
    assert proc.returncode == 2
    assert proc.stderr.startswith("speclearn feedback: not available") and "Traceback" not in proc.stderr


def test_dpo_handoff_gets_the_proxy_commands_arguments(monkeypatch: pytest.MonkeyPatch) -> None:
    from compiler.commands import feedback_dpo
    from proxy.cli import main

    seen: list[Any] = []
    monkeypatch.setattr(feedback_dpo, "run", lambda args: seen.append(args) or 0)
    assert main(["feedback", "export", "--format", "dpo", "--split", "heldout", "--no-cross", "--spec", "s"]) == 0
    (args,) = seen
    assert (args.format, args.split, args.no_cross, args.spec, args.since) == ("dpo", "heldout", True, "s", None)


def test_the_proxy_command_alone_refuses_dpo(capsys: pytest.CaptureFixture[str]) -> None:
    """Called without proxy/cli.py's hand-off, the proxy's export never writes events for dpo."""
    import argparse

    from proxy.commands import feedback

    parser = argparse.ArgumentParser()
    feedback.configure(parser)
    assert feedback.run(parser.parse_args(["export", "--format", "dpo"])) == 2
    assert "--format dpo is the compiler's" in capsys.readouterr().err
