"""The significance gate: feedback with no taste behind it publishes no more often than alpha,
a real taste passes, thin evidence says how much more is needed."""

from __future__ import annotations

import random

from compiler.checks import Check
from compiler.dataset import Example, Pair
from compiler.gate import GateResult, Test, decide, independent, on_request, run_gate, unary_gate, vote_test
from compiler.judge import PairwiseJudge
from compiler.llm import LLMClient
from compiler.pipeline import requested_by
from compiler.principle import Rule, Source
from tests.fake_llm import FakeLLM

SHORT = "Keep answers short: at most 12 words."
BARE = "You help."


def answer(rng: random.Random) -> str:
    return " ".join(["word"] * rng.choice([5, 8, 20, 30]))


def thumbs(ups: list[bool], rng: random.Random, like=None) -> list[Pair]:  # type: ignore[no-untyped-def]
    """Up/down votes on answers; every up paired with a down, as the dataset's cross pairs do
    (leftover votes reused, so pairs may share answers)."""
    ex = [Example(f"e{i}", f"q{i}", answer(rng), 1.0 if up else -1.0) for i, up in enumerate(ups)]
    if like is not None:  # votes that follow a taste
        ex = [Example(e.id, e.prompt, e.response, 1.0 if like(e.response) else -1.0) for e in ex]
    good, bad = [e for e in ex if e.up], [e for e in ex if not e.up]
    n = max(len(good), len(bad))
    return [Pair(f"x{i}", good[i % len(good)], bad[i % len(bad)], "cross") for i in range(n)] if good and bad else []


async def test_coin_thumbs_publish_no_more_often_than_alpha() -> None:
    """300 seeded rounds of biased-coin votes (55-80% up) on answers of varied length: a
    length rule, checked by the gate without a judge, passes at most alpha of the time."""
    judge = PairwiseJudge(LLMClient("http://unused/v1", "x", transport=FakeLLM().transport))
    passed = 0
    rounds = 300
    for seed in range(rounds):
        rng = random.Random(seed)
        bias = rng.uniform(0.55, 0.8)
        pairs = thumbs([rng.random() < bias for _ in range(12)], rng)
        if not pairs:
            continue
        gate = await run_gate(judge, SHORT, BARE, pairs, margin=0.0, use_judge=False)
        passed += gate.passed
    assert passed <= 0.05 * rounds, passed


async def test_a_real_taste_passes_with_the_same_amount_of_feedback() -> None:
    judge = PairwiseJudge(LLMClient("http://unused/v1", "x", transport=FakeLLM().transport))
    passed = 0
    for seed in range(20):
        rng = random.Random(seed)
        pairs = thumbs([True] * 12, rng, like=lambda t: len(t.split()) <= 12)
        gate = await run_gate(judge, SHORT, BARE, pairs, margin=0.0, use_judge=False)
        passed += gate.passed
    assert passed >= 18


def test_a_spec_that_calls_every_answer_good_explains_nothing() -> None:
    """80% of votes are up: a rule every answer passes predicts 80% of them, and still no
    contrast, so no significance (a test against 0.5 would have passed it)."""
    ups = [True] * 8 + [False] * 2
    t = vote_test([1.0] * 10, [0.5] * 10, ups, "fisher")
    assert (t.wins, t.losses, t.p_value) == (8, 2, 1.0)


def test_independent_pairs_share_no_answer() -> None:
    a, b, c = (Example(x, "q", x, v) for x, v in (("a", 1), ("b", -1), ("c", -1)))
    pairs = [Pair("1", a, b, "cross"), Pair("2", a, c, "cross"), Pair("3", Example("d", "q", "d", 1), c, "cross")]
    assert [p.id for p in independent(pairs)] == ["1", "3"]


async def test_thin_evidence_says_not_enough_feedback_and_how_much_more() -> None:
    judge = PairwiseJudge(LLMClient("http://unused/v1", "x", transport=FakeLLM().transport))
    short, long_ = "word " * 5, "word " * 30
    pairs = [Pair(f"p{i}", Example(f"c{i}", "q", short, 1.0), Example(f"r{i}", "q", long_, -1.0), "file")
             for i in range(3)]  # fmt: skip
    gate = await run_gate(judge, SHORT, BARE, pairs, margin=0.0, use_judge=False)
    assert not gate.passed and gate.not_enough
    assert gate.reason.startswith("not enough feedback yet") and "more held-out items" in gate.reason
    (test,) = gate.tests
    assert test.name.startswith("checks on held-out pairs") and test.wins == 3 and test.needed == 3
    more = [Pair(f"p{i}", Example(f"c{i}", "q", short, 1.0), Example(f"r{i}", "q", long_, -1.0), "file")
            for i in range(6)]  # fmt: skip
    assert (await run_gate(judge, SHORT, BARE, more, margin=0.0, use_judge=False)).passed


async def test_a_trusted_judge_that_finds_the_candidate_worse_vetoes_the_checks() -> None:
    """The candidate states the right checkable rule, but its paragraph misleads the writer:
    the judge reads all of it and sees the candidate worse; the checks' significance is not enough."""

    def misled(criteria: str, a: str, b: str) -> str | None:
        if "long, detailed" in criteria:
            return "A" if len(a) > len(b) else "B"
        return "A" if len(a) < len(b) else "B"

    judge = PairwiseJudge(LLMClient("http://unused/v1", "x", transport=FakeLLM(judge=misled).transport))
    rng = random.Random(3)
    pairs = thumbs([True] * 14, rng, like=lambda t: len(t.split()) <= 12)
    gate = await run_gate(judge, f"You love long, detailed answers. {SHORT}", BARE, pairs, margin=0.0)
    checks = next(t for t in gate.tests if t.name.startswith("checks"))
    assert checks.p_value < 0.01 and not gate.passed and "worse by judge" in gate.reason


def test_a_wish_only_comments_show_needs_several_users() -> None:
    downs = [Example(f"d{i}", "q", "The capital is Rome.", -1.0) for i in range(6)]
    french = "You help. Always answer in French."
    alone = unary_gate(french, BARE, downs, margin=0.0, requested_by=1, min_users=2)
    assert not alone.passed and "requested by 1 distinct user" in alone.reason
    asked = unary_gate(french, BARE, downs, margin=0.0, requested_by=3, min_users=2)
    assert asked.passed and asked.reason.startswith("requested by 3 distinct users; 1.000 of 6 held-out votes")
    one_off = [Example("u", "q", "The capital is Rome.", 1.0), *downs]  # 6 of 7 votes explained
    assert unary_gate(french, BARE, one_off, margin=0.0, requested_by=3, min_users=2).passed
    ups = [Example(f"u{i}", "q", "The capital is Rome.", 1.0) for i in range(3)] + downs  # 6 of 9
    refused = unary_gate(french, BARE, ups, margin=0.0, requested_by=3, min_users=2)
    assert not refused.passed and "fewer than 80%" in refused.reason


async def test_a_requested_rule_held_out_contrasts_cannot_yet_prove_ships_on_request() -> None:
    """Two held-out contrasts that lead cannot reach significance; they must not make a rule
    users asked for harder to ship than no contrast at all (the comment-only criterion)."""
    judge = PairwiseJudge(LLMClient("http://unused/v1", "x", transport=FakeLLM().transport))
    french = "You help. Always answer in French."
    ups = [Example(f"u{i}", "q", "La capitale est Rome, bien sûr.", 1.0) for i in range(2)]
    downs = [Example(f"d{i}", "q", "The capital is Rome, of course.", -1.0) for i in range(2)]
    pairs = [Pair(f"x{i}", u, d, "cross") for i, (u, d) in enumerate(zip(ups, downs, strict=True))]

    async def gate(requested: int, candidate: str = french) -> object:
        thin = await run_gate(judge, candidate, BARE, pairs, margin=0.0, use_judge=False)
        return on_request(thin, candidate, BARE, pairs, requested_by=requested, min_users=2)

    waits = await gate(0)
    assert waits.not_enough and not waits.passed and waits.reason.startswith("not enough feedback yet")
    asked = await gate(3)
    assert asked.passed and not asked.not_enough
    assert (
        asked.reason.startswith("requested by 3 distinct users")
        and "too few to test (p = 0.167 > 0.05)" in asked.reason
    )
    assert not (await gate(1)).passed  # one voice is not a request
    english = "You help. Always answer in English."  # does not lead: the request cannot rescue it
    refused = await gate(3, english)
    assert not refused.passed and not refused.not_enough


def test_a_candidate_is_requested_only_when_every_rule_it_adds_was_asked_for() -> None:
    def rule(source: str, users: int, check: str | None = "language:fr") -> Rule:
        return Rule(f"{source} rule", source=Source(source), check=Check.parse(check) if check else None,
                    evidence={"users": users})  # fmt: skip

    assert requested_by([rule("current", 0), rule("comment", 3), rule("comment", 2, "max_words:25")]) == 2
    assert requested_by([rule("comment", 3), rule("evidence", 0, "forbid:here")]) == 0  # one nobody asked for
    assert requested_by([rule("comment", 3, None)]) == 0  # nothing the votes can test
    assert requested_by([rule("current", 0)]) == 0  # adds nothing


async def test_the_deciding_test_is_chosen_before_the_outcome() -> None:
    """Specs that differ in checkable rules are decided by the checks (the judge only vetoes,
    no alpha spent on it); specs that differ only in words by the judge."""
    judge = PairwiseJudge(LLMClient("http://unused/v1", "x", transport=FakeLLM().transport))
    pairs = thumbs([True] * 14, random.Random(5), like=lambda t: len(t.split()) <= 12)
    by_checks = await run_gate(judge, SHORT, BARE, pairs, margin=0.0)
    assert by_checks.decisive == ["checks on held-out votes (Fisher exact)"] and by_checks.correction == 1.0
    assert len(by_checks.tests) == 2 and by_checks.passed
    words = await run_gate(judge, f"{BARE} Be concise.", BARE, pairs, margin=0.0)
    assert words.decisive == [words.tests[-1].name] and words.tests[-1].name.startswith("judge")


def test_a_lead_on_the_pairs_that_the_deciding_test_does_not_share_is_said_plainly() -> None:
    votes = Test("checks on held-out votes (Fisher exact)", 40, 10, 10, 1.0)  # a tie: worse would veto
    result = GateResult(False, 1.0, 0.5, 0.0, 12, tests=[votes], metric="checks")
    decide(result, holdout_fraction=0.3)
    assert not result.passed and not result.not_enough
    assert "does not find it ahead: checks on held-out votes (Fisher exact): 10 better vs 10 worse" in result.reason
