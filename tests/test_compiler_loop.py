"""Rounds over time on a SQLite ledger with the scripted fake LLM: what a round concludes is
remembered by the next (compiler/memory.py), and a candidate the held-out slice cannot decide is
explored on the canary share when canaries are on (compiler/explore.py)."""

from __future__ import annotations

import time
from pathlib import Path

from compiler import report
from compiler.checks import Check
from compiler.memory import Conclusion, Verdict, live_verdicts, rule_key
from compiler.runner import Context, compile_spec
from tests.fake_llm import QUESTIONS, FakeLLM, fill_ledger
from tests.test_compiler_pipeline import close, make_ctx

SHORT_KEY = rule_key("", Check("max_words", "20"))  # what the evidence finds: preferred answers are short
LATER = 1_700_000_000.0 + 10 * 86400  # a later batch of the same kind of feedback


def with_canary(ctx: Context, share: float) -> Context:
    ctx.settings = ctx.settings.model_copy(update={"canary_fraction": share})
    return ctx


async def remembered(ctx: Context) -> list[Conclusion]:
    assert ctx.ledger is not None
    return [Conclusion.from_json(c) for c in await ctx.ledger.conclusions("support")]


async def test_a_published_round_remembers_the_rules_it_added(tmp_path: Path) -> None:
    ctx = await make_ctx(tmp_path, FakeLLM(), publish_label="production")
    result = await compile_spec(ctx, "support")
    assert result.result == "published" and result.version is not None
    concluded = await remembered(ctx)
    await close(ctx)
    kept = {c.rule for c in concluded if c.verdict is Verdict.KEPT}
    assert SHORT_KEY in kept and all(c.version == result.version.version for c in concluded)
    assert concluded[0].through == 1_700_000_000.0 + (len(QUESTIONS) - 1) * 60 + 6  # the newest feedback seen


async def test_a_refused_rule_is_not_tried_again_until_new_evidence_bears_on_it(tmp_path: Path) -> None:
    ctx = await make_ctx(tmp_path, FakeLLM(), publish_label="production")
    assert ctx.ledger is not None
    through = 1_700_000_000.0 + len(QUESTIONS) * 60
    refusal = Conclusion("support", SHORT_KEY, "Keep answers under 20 words.", Verdict.REFUSED_LIVE, through, through,
                         "rolled back: candidate is worse", 7)  # fmt: skip
    await ctx.ledger.add_conclusions("support", [refusal.to_json()])
    result = await compile_spec(ctx, "support")
    measured = {rule_key(p.text, p.check) for p in result.candidates}
    assert SHORT_KEY not in measured, "a refused rule was measured again on the evidence that refused it"
    [aside] = result.evidence["remembered"]
    assert aside["verdict"] == "refused_live" and aside["version"] == 7 and aside["new_items"] == 0
    assert "remembered (refused before" in report.summary(result)  # the round report says so
    await close(ctx)

    # a later batch where short answers are preferred again: new evidence, so it is measured again
    await fill_ledger(tmp_path / "l.db", questions=QUESTIONS, t0=LATER, prefix="later-")
    ctx = await make_ctx(tmp_path, FakeLLM(), publish_label="production")
    again = await compile_spec(ctx, "support")
    await close(ctx)
    assert SHORT_KEY in {rule_key(p.text, p.check) for p in again.candidates}
    assert all(r["text"] != refusal.text for r in again.evidence.get("remembered", []))


async def test_an_undecidable_candidate_waits_without_canaries_and_is_explored_with_them(tmp_path: Path) -> None:
    # far more held-out pairs needed than there are: no offline test can decide
    ctx = await make_ctx(tmp_path, FakeLLM(), publish_label="production", min_heldout_pairs=50, unary_comments=False)
    skipped = await compile_spec(ctx, "support")
    assert skipped.result == "skipped" and "held-out pairs" in skipped.reason
    assert await remembered(ctx) == []

    explored = await compile_spec(with_canary(ctx, 0.2), "support")
    assert explored.result == "explored", explored.reason
    assert explored.version is not None and "canary share (20% of users)" in explored.reason
    await ctx.registry.refresh()
    state = ctx.registry.snapshot.get("support")
    assert state.labels == {"production": 1, "candidate": explored.version.version}  # production untouched
    meta = state.versions[explored.version.version].meta
    assert meta["explore"] and meta["gate"] == {}
    assert {c.verdict for c in await remembered(ctx)} == {Verdict.EXPLORING}

    # while that live test runs, no second candidate is explored beside it
    waiting = await compile_spec(ctx, "support")
    assert waiting.result == "skipped" and sorted(ctx.registry.snapshot.get("support").versions) == [1, 2]

    # the live test rolls it back (what promote.review records); the same feedback explores nothing
    assert ctx.ledger is not None
    await ctx.registry.set_label("support", "candidate", 1)
    rollback = live_verdicts("support", candidate=2, candidate_meta=meta, production_meta={}, promoted=False,
                             reason="candidate is worse", at=time.time(), evidence={"lift": -0.2})  # fmt: skip
    await ctx.ledger.add_conclusions("support", [c.to_json() for c in rollback])
    after = await compile_spec(ctx, "support")
    await close(ctx)
    assert after.result != "explored", after.reason
    assert {r["verdict"] for r in after.evidence["remembered"]} == {"refused_live"}


async def test_a_round_learns_from_after_the_turn_when_users_turn_against_a_served_rule(tmp_path: Path) -> None:
    ctx = await make_ctx(tmp_path, FakeLLM(), publish_label="production")
    first = await compile_spec(ctx, "support")
    assert first.version is not None and SHORT_KEY in {c.rule for c in first.conclusions}
    through = first.conclusions[0].through
    await close(ctx)

    # users changed their minds: the rambling answers are up-voted now, the short ones down
    await fill_ledger(tmp_path / "l.db", questions=QUESTIONS, t0=LATER, prefix="later-", turned=True)
    ctx = await make_ctx(tmp_path, FakeLLM(), publish_label="production")
    second = await compile_spec(ctx, "support")
    concluded = await remembered(ctx)
    await close(ctx)
    turned = {t["text"] for t in second.window["turned"]}
    assert "Answer in one short sentence of at most 20 words." in turned
    # the round read only what came after the turn: the later batch, none of the votes that backed the rule
    assert second.window["window_start"] == through and second.window["events"] == 2 * len(QUESTIONS)
    assert "turned (users now side against a served rule" in report.summary(second)
    assert second.result == "published" and second.version is not None, second.reason
    assert SHORT_KEY not in {rule_key(str(p["text"]), p.get("check")) for p in second.version.meta["principles"]
                             if p["status"] != "dropped"}  # fmt: skip
    assert any(c.rule == SHORT_KEY and c.verdict is Verdict.DROPPED for c in concluded)


async def test_a_served_rule_that_holds_is_recorded_and_the_window_stays_whole(tmp_path: Path) -> None:
    ctx = await make_ctx(tmp_path, FakeLLM(), publish_label="production")
    await compile_spec(ctx, "support")
    await close(ctx)
    await fill_ledger(tmp_path / "l.db", questions=QUESTIONS, t0=LATER, prefix="later-")  # the same taste
    ctx = await make_ctx(tmp_path, FakeLLM(), publish_label="production")
    second = await compile_spec(ctx, "support")
    concluded = await remembered(ctx)
    await close(ctx)
    assert "turned" not in second.window and second.window["events"] == 4 * len(QUESTIONS)
    held = [c for c in concluded if c.rule == SHORT_KEY and c.verdict is Verdict.KEPT and c.through > LATER]
    assert held and "held on the" in held[-1].reason  # the next test reads only feedback after this


async def test_users_turning_against_a_rule_the_canary_adds_end_its_test_and_the_round_follows(
    tmp_path: Path,
) -> None:
    """Thumbs from before and after a change of taste cancel out in the live test, which would stay
    undecided: the check-in ends it, remembers the rule as refused live, and the round learns
    from the feedback after the turn."""
    ctx = with_canary(await make_ctx(tmp_path, FakeLLM()), 0.2)
    first = await compile_spec(ctx, "support")
    assert first.result == "published" and first.version is not None
    candidate = first.version.version
    await close(ctx)

    await fill_ledger(tmp_path / "l.db", questions=QUESTIONS, t0=LATER, prefix="later-", turned=True)
    ctx = with_canary(await make_ctx(tmp_path, FakeLLM()), 0.2)
    second = await compile_spec(ctx, "support")
    assert ctx.ledger is not None
    [decision] = await ctx.ledger.decisions("support")
    concluded = await remembered(ctx)
    await close(ctx)
    assert decision.decision == "rollback" and decision.candidate == candidate
    assert "users turned against" in decision.reason and decision.details["evidence"]["turned"]
    assert any(c.rule == SHORT_KEY and c.verdict is Verdict.REFUSED_LIVE and c.version == candidate
               for c in concluded)  # fmt: skip
    # the test ended, so the round ran, on the feedback after the turn
    assert "still deciding" not in second.reason and second.window["events"] == 2 * len(QUESTIONS)
    assert SHORT_KEY not in {rule_key(p.text, p.check) for p in second.candidates}, "refused live: set aside"
