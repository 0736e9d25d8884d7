"""Served rules tested again on the feedback since a round last concluded about them
(compiler/drift.py): a rule users turned against restarts the round's window after the turn."""

from __future__ import annotations

from compiler.checks import Check
from compiler.drift import MIN_ITEMS, retest
from compiler.memory import Conclusion, Memory, Verdict, rule_key
from compiler.principle import Rule, Source
from proxy.ledger import FeedbackEvent, FeedbackRecord, InferenceRecord

SHORT = Check("max_words", "25")
RULE = Rule("Keep answers under 25 words.", Source.CURRENT, SHORT)
KEY = rule_key(RULE.text, SHORT)
LONG = " ".join(["word"] * 40)


def votes(n: int, t0: float, *, short_wins: bool, prefix: str) -> list[FeedbackEvent]:
    """An up and a down on each of `n` questions: the short answer wins, or the long one."""
    events = []
    for i in range(n):
        req = {"model": "m", "messages": [{"role": "user", "content": f"{prefix} question {i}?"}]}
        for kind, text in (("short", "A short answer."), ("long", LONG)):
            inf = InferenceRecord(f"{prefix}-{i}-{kind}", t0 + i, "chat", "m", "s", 1, "h", req, text,
                                  metadata={"user": f"user{i % 7}"})  # fmt: skip
            up = (kind == "short") == short_wins
            events.append(
                FeedbackEvent(FeedbackRecord(f"f-{inf.id}", inf.id, "thumb", 1 if up else -1, t0 + i + 1), inf)
            )
    return events


def kept_at(through: float) -> Memory:
    return Memory([Conclusion("s", KEY, RULE.text, Verdict.KEPT, through, through, "published in v2", 2)])


def test_a_rule_users_turned_against_restarts_the_window_where_it_was_last_concluded() -> None:
    events = votes(20, 0, short_wins=True, prefix="before") + votes(20, 1000, short_wins=False, prefix="after")
    drift = retest([(RULE, None)], kept_at(500), events, alpha=0.05, max_per_user=50)
    [turned] = drift.turned
    assert drift.since == 500 and not drift.held
    assert turned.relevant >= MIN_ITEMS and turned.support == 0 and turned.p_against < 0.05
    assert "users turned against 'Keep answers under 25 words.'" in drift.describe()
    # over the whole window the rule is still backed half the time: only the recent slice shows the turn
    assert retest([(RULE, None)], kept_at(-1), events, alpha=0.05, max_per_user=50).turned == ()


def test_a_rule_that_held_is_recorded_so_the_next_test_reads_only_newer_feedback() -> None:
    events = votes(20, 0, short_wins=True, prefix="before") + votes(20, 1000, short_wins=True, prefix="after")
    drift = retest([(RULE, None)], kept_at(500), events, alpha=0.05, max_per_user=50)
    assert drift.since is None and [s.key for s in drift.held] == [KEY]
    [kept] = drift.conclusions("s", now=2000.0)
    assert kept.verdict is Verdict.KEPT and kept.through == 1000 + 19 + 1  # the newest vote it read
    assert kept.evidence == {"support": 20, "relevant": 20}


def test_too_few_new_items_decide_nothing_and_unknown_starts_are_not_tested() -> None:
    events = votes(20, 0, short_wins=True, prefix="before") + votes(MIN_ITEMS - 1, 1000, short_wins=False, prefix="a")
    few = retest([(RULE, None)], kept_at(500), events, alpha=0.05, max_per_user=50)
    assert few.turned == () and few.held == ()  # the slice keeps growing until it can decide
    # no conclusion about the rule: tested since the served version's window ended, else not at all
    more = votes(20, 1000, short_wins=False, prefix="after")
    assert retest([(RULE, 500)], Memory(), more, alpha=0.05, max_per_user=50).since == 500
    assert retest([(RULE, None)], Memory(), more, alpha=0.05, max_per_user=50).turned == ()
    judged = Rule("Sound warm.", Source.CURRENT)  # no check: only a judge could test it, before any budget
    assert retest([(judged, 500)], Memory(), more, alpha=0.05, max_per_user=50).turned == ()


def test_the_correction_counts_every_rule_tested() -> None:
    events = votes(20, 0, short_wins=True, prefix="before") + votes(12, 1000, short_wins=False, prefix="after")
    alone = retest([(RULE, None)], kept_at(500), events, alpha=0.05, max_per_user=50)
    assert alone.turned[0].p_against == 0.5**12
    other = Rule("At most 30 words.", Source.CURRENT, Check("max_words", "30"))  # takes a side on them too
    both = retest([(RULE, None), (other, 500)], kept_at(500), events, alpha=0.05, max_per_user=50)
    assert sorted(s.p_against for s in both.turned) == [2 * 0.5**12] * 2
    emoji = Rule("Never use emoji.", Source.CURRENT, Check("no_emoji", ""))  # takes no side: not tested
    assert retest([(RULE, None), (emoji, 500)], kept_at(500), events, alpha=0.05, max_per_user=50) == alone
