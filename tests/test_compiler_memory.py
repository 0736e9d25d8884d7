"""Rounds that remember (compiler/memory.py) and exploring on the canary (compiler/explore.py)."""

from __future__ import annotations

import pytest

from compiler.checks import Check
from compiler.dataset import Example, Pair
from compiler.explore import AddedRule, Canary, decide, sided_with_users
from compiler.memory import Conclusion, Memory, Verdict, bearing, rule_key

SHORT = Check("max_words", "25")


def example(i: int, text: str, up: bool, at: float, comment: str | None = None) -> Example:
    return Example(f"e{i}", f"question {i}", text, 1.0 if up else -1.0, at, comment, f"user{i % 5}")


def contrast(i: int, at: float, short_wins: bool = True) -> Pair:
    short, long = "A short answer.", " ".join(["word"] * 40)
    chosen, rejected = (short, long) if short_wins else (long, short)
    return Pair(f"p{i}", example(2 * i, chosen, True, at), example(2 * i + 1, rejected, False, at), "thumbs")


def refused(at: float = 100.0, through: float = 100.0, verdict: Verdict = Verdict.REFUSED) -> Conclusion:
    return Conclusion("spec", rule_key("Keep it short.", SHORT), "Keep it short.", verdict, at, through, "gate")


def test_rule_key_is_the_check_when_there_is_one_else_the_words() -> None:
    assert rule_key("Keep answers under 25 words.", SHORT) == rule_key("At most 25 words!", SHORT)
    assert rule_key("Be Kind.", None) == rule_key("be kind", None) != rule_key("be kind", SHORT)


def test_a_conclusion_round_trips_through_json() -> None:
    c = Conclusion("spec", "check:max_words(25)", "Short.", Verdict.REFUSED_LIVE, 5.0, 4.0, "rolled back", 3,
                   {"lift": -0.1, "p_value": 0.01})  # fmt: skip
    assert Conclusion.from_json(c.to_json()) == c


def test_only_new_items_that_bear_on_the_rule_count_as_new_evidence() -> None:
    old = [contrast(i, at=50.0) for i in range(6)]
    new = [contrast(10 + i, at=150.0) for i in range(3)]
    neutral = Pair("n", example(90, "Short one.", True, 150.0), example(91, "Short two.", False, 150.0), "thumbs")
    long = " ".join(["word"] * 40)
    comments = [example(80, long, False, 150.0, "too long"), example(81, long, False, 50.0, "too long"),
                example(82, "Short and fine.", False, 150.0, "wrong answer")]  # fmt: skip
    # the check takes no side on `neutral`; the old comment predates the refusal; the last one is
    # about an answer that keeps the rule
    assert bearing(SHORT, [*old, *new, neutral], comments, since=100.0) == 3 + 1
    # a rule without a check: any new contrast could bear on it
    assert bearing(None, [*old, *new, neutral], [], since=100.0) == 4


def test_a_refused_rule_stays_aside_until_enough_new_evidence_arrives() -> None:
    memory = Memory([refused()])
    key = rule_key("Keep it short.", SHORT)
    same = [contrast(i, at=50.0) for i in range(10)]
    aside = memory.set_aside(key, "Keep it short.", SHORT, same, [], min_new=4)
    assert aside is not None and aside.new_items == 0 and aside.conclusion.verdict is Verdict.REFUSED
    more = [*same, *(contrast(20 + i, at=200.0) for i in range(4))]
    assert memory.set_aside(key, "Keep it short.", SHORT, more, [], min_new=4) is None


def test_the_latest_conclusion_counts_and_only_refusals_set_a_rule_aside() -> None:
    key = rule_key("Keep it short.", SHORT)
    later_kept = Conclusion("spec", key, "Keep it short.", Verdict.CONFIRMED_LIVE, 300.0, 290.0)
    memory = Memory([later_kept, refused()])  # out of order: sorted by time
    assert memory.verdict(key) is Verdict.CONFIRMED_LIVE
    assert memory.set_aside(key, "Keep it short.", SHORT, [], [], min_new=1) is None
    assert memory.summary() == {"confirmed_live": 1}
    assert Memory([refused(verdict=Verdict.REFUSED_LIVE)]).refusal(key) is not None


ASKED = AddedRule("Answer in French.", support=0, relevant=0, requested_by=3)
MEASURED = AddedRule("Keep it short.", support=12, relevant=12, requested_by=0)
COIN = AddedRule("Keep it short.", support=6, relevant=11, requested_by=0)
CANARY = Canary(0.1)
OPEN = {"held_for_person": "", "heldout_favours_current": False, "min_requesting": 2, "alpha": 0.05, "tried": 3}


def test_a_rule_users_asked_for_or_one_significant_on_its_items_is_explored() -> None:
    assert decide([ASKED], CANARY, **OPEN).explore
    found = decide([MEASURED], CANARY, **OPEN)
    assert found.explore and "12/12" in found.reason


@pytest.mark.parametrize(
    ("canary", "change", "why"),
    [
        (Canary(0.0), {}, "canaries are off"),
        (Canary(0.1, running=4), {}, "v4 is still deciding"),
        (CANARY, {"held_for_person": "one voice"}, "held for a person"),
        (CANARY, {"heldout_favours_current": True}, "favours the current spec"),
    ],
)
def test_no_exploring_without_canaries_beside_a_running_test_when_held_or_contradicted(
    canary: Canary, change: dict[str, object], why: str
) -> None:
    found = decide([ASKED], canary, **{**OPEN, **change})  # type: ignore[arg-type]
    assert not found.explore and why in found.reason


def test_noise_earns_no_canary_and_the_correction_counts_the_rules_tried() -> None:
    assert not decide([COIN], CANARY, **OPEN).explore
    assert not decide([], CANARY, **OPEN).explore
    # 7 of 7 sides with the users: p = 0.0078, significant alone, not among ten rules tried
    seven = AddedRule("Keep it short.", 7, 7, 0)
    assert sided_with_users(seven, 1) < 0.05 < sided_with_users(seven, 10)
    assert not decide([ASKED, COIN], CANARY, **OPEN).explore  # every added rule must earn it
