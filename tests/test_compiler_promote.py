"""Promote or roll back a canary candidate from live thumbs."""

from __future__ import annotations

from pathlib import Path

from compiler.promote import Decision, decide, review, wilson_upper
from compiler.runner import Context
from compiler.settings import CompilerSettings
from proxy.ledger import FeedbackRecord, InferenceRecord
from proxy.ledger.sqlite import SqliteLedger
from proxy.registry import FileRegistry
from proxy.settings import Settings


def test_decide() -> None:
    assert decide(Decision("wait", 2, 1, 45, 50, 25, 50), 30).action == "promote"
    assert decide(Decision("wait", 2, 1, 10, 50, 40, 50), 30).action == "rollback"
    assert decide(Decision("wait", 2, 1, 27, 50, 25, 50), 30).action == "wait"
    assert decide(Decision("wait", 2, 1, 10, 10, 0, 10), 30).action == "wait"  # too few thumbs
    assert 0.9 < wilson_upper(50, 50) <= 1.0 and wilson_upper(0, 0) == 1.0


async def ctx_with_thumbs(tmp_path: Path, rates: dict[int, tuple[int, int]]) -> Context:
    registry = FileRegistry(tmp_path / "specs", poll_interval=0)
    await registry.publish("s", "v1", labels=["production"])
    await registry.publish("s", "v2", labels=["candidate"], author="compiler")
    ledger = SqliteLedger(tmp_path / "l.db")
    await ledger.start()
    t0 = 4_000_000_000.0  # after the candidate's created_at
    for version, (_, n) in rates.items():
        for i in range(n):
            inf_id = f"v{version}-{i}"
            req = {"messages": [{"role": "user", "content": "q"}]}
            ledger.record(InferenceRecord(inf_id, t0 + i, "chat", "m", "s", version, "h", req, "a"))
    await ledger.close()
    ledger = SqliteLedger(tmp_path / "l.db")
    await ledger.start()
    for version, (ups, n) in rates.items():
        for i in range(n):
            value = 1.0 if i < ups else -1.0
            await ledger.add_feedback(FeedbackRecord(f"f{version}-{i}", f"v{version}-{i}", "thumb", value, t0 + i))
    settings = Settings(specs_dir=tmp_path / "specs", data_dir=tmp_path / "data")
    return Context(settings, CompilerSettings(base_url="http://x/v1"), registry, ledger)


async def test_a_better_candidate_is_promoted(tmp_path: Path) -> None:
    ctx = await ctx_with_thumbs(tmp_path, {1: (20, 60), 2: (50, 60)})
    d = await review(ctx, "s", 50)
    assert d is not None and d.action == "promote" and (d.candidate_n, d.production_n) == (60, 60)
    assert ctx.registry.snapshot.get("s").labels == {"production": 2, "candidate": 2}
    assert await review(ctx, "s", 50) is None  # nothing left to review
    assert ctx.ledger is not None
    await ctx.ledger.close()


async def test_a_worse_candidate_is_rolled_back(tmp_path: Path) -> None:
    ctx = await ctx_with_thumbs(tmp_path, {1: (50, 60), 2: (20, 60)})
    d = await review(ctx, "s", 50)
    assert d is not None and d.action == "rollback"
    assert ctx.registry.snapshot.get("s").labels == {"production": 1, "candidate": 1}
    assert ctx.ledger is not None
    await ctx.ledger.close()
