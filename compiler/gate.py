"""Gate: publish only a candidate that explains held-out feedback significantly better than the
current spec, so that feedback with no taste behind it (a coin) publishes nothing more often than
the configured error rate allows.

Each held-out item is scored under both specs, and the candidate's advantage is tested:

- thumbs (single up/down votes): does "passes the spec's checkable rules" go with "voted up"
  more for the candidate than for the current spec? Fisher's exact test on the answers where the
  two specs predict differently, which holds whatever the share of up votes (a spec that calls
  every answer good explains nothing, even when most votes are up);
- pairs (explicit or from a file, and the judge's view of any pair): a sign test on the pairs
  where one spec's score beats the other's (McNemar's exact test); under noise the preferred
  side of a pair is a coin, so wins and losses are equally likely. Only pairs that share no
  answer are counted, so no vote is counted twice.

The gate's items never selected the rules (pipeline.split_heldout), so one test decides however
many rules were tried. Which family decides is fixed before any outcome is seen: the checks when
the two specs state different checkable rules, else the judge; the other tests can only veto
(a judge that finds the candidate behind stops it). The deciding p-values are multiplied by how
many there are (Bonferroni), and in the comment-only path, where the same votes validated the
rules, by the rules tried too. Not
significant while the candidate leads means "not enough feedback yet", with how much more would
settle it at the effect seen, except for rules users asked for in words (on_request: they
ship on the comment-only criterion, which must not get harder with a little contrast).
Optionally (`--gate-regenerate`) answers to held-out prompts are regenerated under both specs
and the candidate must also win with a Wilson 95% lower bound above one half.

A spec reaches the gate as a `Spec`: the text a judge reads and the checkable rules it states,
held as data where the round has them (the candidate's rules, a compiled version's front
matter) and read from the words only where it has not (the person's text, a hand-written
version). `gate_in_mode` runs the gate the round's `Mode` calls for.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from scipy.stats import binomtest, fisher_exact

from . import prompts
from .checks import Check, checks_from_text, stated
from .dataset import Example, Pair
from .judge import Judge, verdict
from .llm import LLMClient, run_all
from .outcomes import Mode
from .principle import Rule
from .stats import wilson_lower

PAIR_SOURCES = ("explicit", "file")  # a person compared the two answers; the others are built from thumbs
JUDGE_TEST = "judge guided by each spec, pairs sharing no answer (sign test)"
# comment-only path: share of held-out votes the requested rules must explain. Not all: a check
# can misread an answer (a bare number has no detectable language: 15 of 16 French votes agreed)
UNARY_AGREEMENT = 0.8


@dataclass(frozen=True)
class Spec:
    """A spec as the gate scores it: the text a judge reads, and the checkable rules it states."""

    text: str
    checks: tuple[Check, ...]

    @classmethod
    def read(cls, text: str) -> Spec:
        """A spec known only as text (hand-written, no front matter): its rules read from its words."""
        return cls(text, tuple(checks_from_text(text)))

    @classmethod
    def of(cls, text: str, human: str, rules: Sequence[Rule]) -> Spec:
        """A spec whose learned rules are held as data: the rules the person's text states, read
        from its words, then each learned rule's check as its words state it (checks.stated)."""
        checks = checks_from_text(human)
        checks += [c for c in dict.fromkeys(stated(r.check) for r in rules if r.check is not None) if c not in checks]
        return cls(text, tuple(checks))


def as_spec(spec: str | Spec) -> Spec:
    return spec if isinstance(spec, Spec) else Spec.read(spec)


def independent(pairs: Sequence[Pair]) -> list[Pair]:
    """Pairs that share no answer (cross pairs reuse leftover votes), in order."""
    used: set[str] = set()
    out = []
    for p in pairs:
        if p.chosen.id in used or p.rejected.id in used:
            continue
        used |= {p.chosen.id, p.rejected.id}
        out.append(p)
    return out


def singles_of(pairs: Sequence[Pair]) -> list[Example]:
    """The rated answers behind thumbs-built pairs, each once."""
    seen: dict[str, Example] = {}
    for p in pairs:
        if p.source not in PAIR_SOURCES:
            seen.setdefault(p.chosen.id, p.chosen)
            seen.setdefault(p.rejected.id, p.rejected)
    return list(seen.values())


def pair_score(checks: Sequence[Check], p: Pair) -> float:
    """1 when the preferred answer passes more of the checks, 0 when fewer, 0.5 on a tie."""
    margin = sum(c.passes(p.chosen) for c in checks) - sum(c.passes(p.rejected) for c in checks)
    return 1.0 if margin > 0 else 0.0 if margin < 0 else 0.5


def predicts_up(checks: Sequence[Check], e: Example) -> float:
    """1 when the answer passes every check, 0 when it fails one, 0.5 when there is none."""
    return 0.5 if not checks else float(all(c.passes(e) for c in checks))


def check_accuracy(spec: str | Spec, pairs: Sequence[Pair]) -> tuple[float, int]:
    """How well the checkable rules a spec states predict held-out preferences: the mean pair
    score and the pairs it gets right. A spec that states no checkable rule predicts 0.5."""
    checks = as_spec(spec).checks
    scores = [pair_score(checks, p) for p in pairs]
    return (sum(scores) / len(scores) if scores else 0.5), sum(s == 1.0 for s in scores)


@dataclass
class Test:
    """One significance test of candidate against current on held-out items."""

    name: str
    items: int
    wins: int  # items the candidate scores better on (and the vote agrees)
    losses: int
    p_value: float
    needed: int | None = None  # more held-out items that would settle it at the effect seen

    def to_meta(self) -> dict[str, Any]:
        out = {"test": self.name, "items": self.items, "wins": self.wins, "losses": self.losses,
               "p_value": round(self.p_value, 6)}  # fmt: skip
        if self.needed is not None:
            out["more_items_needed"] = self.needed
        return out


def sign_test(cand: Sequence[float], cur: Sequence[float], name: str) -> Test:
    """McNemar's exact test: of the items where the scores differ, how often the candidate's is higher."""
    wins = sum(a > b for a, b in zip(cand, cur, strict=True))
    losses = sum(a < b for a, b in zip(cand, cur, strict=True))
    p = binomtest(wins, wins + losses, 0.5, alternative="greater").pvalue if wins + losses else 1.0
    return Test(name, len(cand), wins, losses, float(p))


def vote_test(cand: Sequence[float], cur: Sequence[float], ups: Sequence[bool], name: str) -> Test:
    """Fisher's exact test: are up votes more common where the candidate predicts "up" more
    than the current spec does, than where it predicts it less?"""
    more = [up for a, b, up in zip(cand, cur, ups, strict=True) if a > b]
    less = [up for a, b, up in zip(cand, cur, ups, strict=True) if a < b]
    wins, losses = sum(more) + sum(not u for u in less), sum(not u for u in more) + sum(less)
    if not more or not less:
        # one side empty: the specs differ only in one direction and nothing is contrasted
        return Test(name, len(cand), wins, losses, 1.0)
    table = [[sum(more), len(more) - sum(more)], [sum(less), len(less) - sum(less)]]
    return Test(name, len(cand), wins, losses, float(fisher_exact(table, alternative="greater").pvalue))


def scaled_needed(test: Test, correction: float, alpha: float, rerun: Rerun) -> int | None:
    """Held-out items more that would make `test` significant if the effect seen held: the
    smallest k for which k copies of the items pass, minus the items there are."""
    if test.wins <= test.losses:
        return None
    for k in range(2, 41):
        if rerun(k).p_value * correction <= alpha:
            return (k - 1) * test.items
    return None


@dataclass
class GateResult:
    passed: bool
    candidate_accuracy: float
    current_accuracy: float
    margin: float
    pairs: int
    candidate_agree: int = 0
    current_agree: int = 0
    win_rate: float | None = None
    wins: int | None = None
    losses: int | None = None
    wilson_lower: float | None = None
    reason: str = ""
    metric: str = "judge"  # judge | checks | unary
    checks: dict[str, float] | None = None  # check accuracy of both specs, always measured
    judge_calibration: dict[str, Any] | None = None
    tests: list[Test] = field(default_factory=list)
    alpha: float = 0.05
    correction: float = 1.0  # the p-values are multiplied by this before comparing with alpha
    not_enough: bool = False  # the candidate leads, but the evidence is too thin to publish

    decisive: list[str] = field(default_factory=list)  # the tests the decision rests on (default: all)

    @property
    def deciding(self) -> list[Test]:
        return [t for t in self.tests if not self.decisive or t.name in self.decisive]

    @property
    def p_value(self) -> float:
        """The smallest corrected p-value of the deciding tests (1 when none could be run)."""
        return min((t.p_value * self.correction for t in self.deciding), default=1.0)

    def to_meta(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "passed": self.passed,
            "metric": {
                "judge": "LLM judge guided by the spec, held-out pairs, both orders",
                "checks": "the spec's checkable rules on held-out feedback (no trusted judge)",
                "unary": "the spec's checkable rules on held-out single votes (no held-out pairs)",
            }[self.metric],
            "candidate_accuracy": round(self.candidate_accuracy, 4),
            "current_accuracy": round(self.current_accuracy, 4),
            "candidate_agree": self.candidate_agree,
            "current_agree": self.current_agree,
            "margin": self.margin,
            "heldout_pairs": self.pairs,
            "significance": {"alpha": self.alpha, "correction": self.correction, "decisive": self.decisive,
                             "p_value": round(min(self.p_value, 1.0), 6), "tests": [t.to_meta() for t in self.tests]},
        }  # fmt: skip
        if self.win_rate is not None:
            out.update(
                win_rate=round(self.win_rate, 4),
                wins=self.wins,
                losses=self.losses,
                wilson_lower=round(self.wilson_lower or 0.0, 4),
            )
        if self.checks is not None:
            out["checks"] = {k: round(v, 4) for k, v in self.checks.items()}
        if self.judge_calibration is not None:
            out["judge_calibration"] = self.judge_calibration
        if self.reason:
            out["reason"] = self.reason
        return out


async def judge_scores(judge: Judge, spec: str, pairs: Sequence[Pair]) -> list[float]:
    """Per pair, the soft P(preferred) of the judge guided by `spec`."""
    return list(await run_all(judge.by_spec(spec, p) for p in pairs))


def _correct(soft: float) -> float:
    """1 when the judge sides with the user, 0.5 no opinion, 0 against."""
    return (verdict(soft) + 1) / 2


async def regenerate_wins(
    llm: LLMClient, judge: Judge, candidate: str, current: str, pairs: Sequence[Pair], max_tokens: int
) -> tuple[int, int]:
    async def one(p: Pair) -> int:
        q = p.chosen.prompt
        new, old = await run_all(
            llm.chat(prompts.answer(s, q), max_tokens=max_tokens, stage="regenerate") for s in (candidate, current)
        )
        first = await llm.choose(
            prompts.judge_user(p.chosen, p.rejected, new, old, q), max_tokens=judge.max_tokens, stage="gate"
        )
        second = await llm.choose(
            prompts.judge_user(p.chosen, p.rejected, old, new, q), max_tokens=judge.max_tokens, stage="gate"
        )
        return verdict((first + 1.0 - second) / 2)

    votes = await run_all(one(p) for p in pairs)
    return sum(v > 0 for v in votes), sum(v < 0 for v in votes)


Rerun = Callable[[int], Test]  # the same test on k copies of its items (for "how much more")


def check_tests(
    candidate: Spec, current: Spec, pairs: Sequence[Pair], singles: Sequence[Example]
) -> list[tuple[Test, Rerun]]:
    """The checks' tests: Fisher on the thumbs, the sign test on explicit pairs (each when present)."""
    cand, cur = candidate.checks, current.checks
    out: list[tuple[Test, Rerun]] = []
    if singles:
        a, b = [predicts_up(cand, e) for e in singles], [predicts_up(cur, e) for e in singles]
        ups = [e.up for e in singles]
        name = "checks on held-out votes (Fisher exact)"
        out.append((vote_test(a, b, ups, name), lambda k: vote_test(a * k, b * k, ups * k, name)))
    explicit = independent([p for p in pairs if p.source in PAIR_SOURCES])
    if explicit:
        c, d = [pair_score(cand, p) for p in explicit], [pair_score(cur, p) for p in explicit]
        name = "checks on held-out pairs (sign test)"
        out.append((sign_test(c, d, name), lambda k: sign_test(c * k, d * k, name)))
    return out


def _with_needed(tests: Sequence[tuple[Test, Rerun]], correction: float, alpha: float) -> None:
    for t, rerun in tests:
        t.needed = scaled_needed(t, correction, alpha, rerun) if t.p_value * correction > alpha else None


def decide(result: GateResult, *, holdout_fraction: float) -> GateResult:
    """Passed, not enough feedback yet, or failed, with the reason said plainly."""
    s = result
    lead = s.candidate_accuracy - s.current_accuracy
    worse = [t for t in s.tests if t.losses > t.wins]
    if worse:
        # one view (say the judge, reading what no check can) finds the candidate worse: that
        # vetoes whatever the others found
        s.passed = False
        s.reason = "candidate does not beat current: " + "; ".join(
            f"worse by {t.name} ({t.wins} better vs {t.losses} worse)" for t in worse
        )
        return s
    judged = next((t for t in s.tests if t.name == JUDGE_TEST), None)
    if judged is not None and judged.wins <= judged.losses:
        # a trusted judge reads all the spec says, the checks only what they can test: a
        # paragraph that states the right rules but misleads the writer must not pass on them
        s.passed = False
        s.reason = (f"candidate does not beat current by the judge, which reads the whole spec "
                    f"({judged.wins} better vs {judged.losses} worse)")  # fmt: skip
        return s
    ahead = lead > s.margin and any(t.wins > t.losses for t in s.deciding)
    s.passed = ahead and s.p_value <= s.alpha
    if s.passed:
        return s
    if not ahead:
        s.reason = (f"candidate {s.candidate_accuracy:.3f} does not beat current {s.current_accuracy:.3f} "
                    f"by more than {s.margin} ({s.metric})")  # fmt: skip
        if lead > s.margin:  # ahead on the pairs, not in the test that decides: say which and by how much
            s.reason += "; the deciding test does not find it ahead: " + "; ".join(
                f"{t.name}: {t.wins} better vs {t.losses} worse" for t in s.deciding
            )
        return s
    s.not_enough = True
    best = min(s.deciding, key=lambda t: t.p_value) if s.deciding else None
    more = min((t.needed for t in s.deciding if t.needed is not None), default=None)
    detail = f"{best.wins} better vs {best.losses} worse of {best.items} held-out items" if best else "no test possible"
    s.reason = f"not enough feedback yet: the candidate leads ({detail}) but p = {min(s.p_value, 1.0):.3f} > {s.alpha}"
    if s.correction > 1:
        s.reason += f" after a x{s.correction:g} correction for the tests run"
    if more is not None:
        s.reason += (f"; about {more} more held-out items (~{math.ceil(more / max(holdout_fraction, 1e-9))} "
                     "more feedback events) would settle it at this effect")  # fmt: skip
    return s


async def run_gate(
    judge: Judge,
    candidate: str | Spec,
    current: str | Spec,
    pairs: Sequence[Pair],
    *,
    margin: float,
    use_judge: bool = True,
    regenerate: bool = False,
    answer_max_tokens: int = 256,
    alpha: float = 0.05,
    holdout_fraction: float = 0.3,
) -> GateResult:
    """Candidate vs current on the same held-out feedback, which must not have selected the
    rules. The checks are always tested (measured, no LLM calls); a trusted judge is tested
    too, on pairs that share no answer."""
    candidate, current = as_spec(candidate), as_spec(current)
    pairs = list(pairs)
    singles = singles_of(pairs)
    cand_chk, cand_chk_agree = check_accuracy(candidate, pairs)
    cur_chk, cur_chk_agree = check_accuracy(current, pairs)
    tests = check_tests(candidate, current, pairs, singles)
    figures = {"checks": (cand_chk, cur_chk, cand_chk_agree, cur_chk_agree)}
    if use_judge:
        fair = independent(pairs)
        cand_soft, cur_soft = (
            await judge_scores(judge, candidate.text, fair),
            await judge_scores(judge, current.text, fair),
        )
        cand_score, cur_score = [_correct(x) for x in cand_soft], [_correct(x) for x in cur_soft]
        tests.append((sign_test(cand_score, cur_score, JUDGE_TEST),
                      lambda k: sign_test(cand_score * k, cur_score * k, JUDGE_TEST)))  # fmt: skip
        figures["judge"] = (sum(cand_soft) / len(fair) if fair else 0.5, sum(cur_soft) / len(fair) if fair else 0.5,
                            sum(x == 1.0 for x in cand_score), sum(x == 1.0 for x in cur_score))  # fmt: skip
    metric = "judge" if use_judge else "checks"  # a trusted judge reads the whole spec: its figures lead
    cand_acc, cur_acc, cand_agree, cur_agree = figures[metric]
    # one family of tests decides, chosen before any outcome is seen: the checks when the two
    # specs state different checkable rules, else the judge; the others only veto (no alpha spent)
    differ = set(candidate.checks) != set(current.checks)
    by_checks = [tc for tc in tests if tc[0].name != JUDGE_TEST]
    deciding = (
        by_checks if (differ and by_checks) or not use_judge else [tc for tc in tests if tc[0].name == JUDGE_TEST]
    )
    correction = float(max(1, len(deciding)))
    _with_needed(deciding, correction, alpha)
    result = GateResult(False, cand_acc, cur_acc, margin, len(pairs), cand_agree, cur_agree, metric=metric,
                        checks={"candidate": cand_chk, "current": cur_chk}, tests=[t for t, _ in tests],
                        alpha=alpha, correction=correction, decisive=[t.name for t, _ in deciding])  # fmt: skip
    decide(result, holdout_fraction=holdout_fraction)
    if regenerate:
        real = [p for p in pairs if p.source != "cross"] or list(pairs)
        wins, losses = await regenerate_wins(judge.llm, judge, candidate.text, current.text, real, answer_max_tokens)
        decided = wins + losses
        result.wins, result.losses = wins, losses
        result.win_rate = wins / decided if decided else 0.5
        result.wilson_lower = wilson_lower(wins, decided)
        if result.wilson_lower <= 0.5:
            result.passed = False
            result.reason = (result.reason + "; " if result.reason else "") + (
                f"regenerated answers won {wins}/{decided} (Wilson lower bound {result.wilson_lower:.3f} <= 0.5)"
            )
    return result


def unary_gate(
    candidate: str | Spec,
    current: str | Spec,
    singles: Sequence[Example],
    *,
    margin: float,
    alpha: float = 0.05,
    rules_tried: int = 1,
    holdout_fraction: float = 0.3,
    requested_by: int = 0,
    min_users: int = 2,
) -> GateResult:
    """Without held-out pairs (a wish the answers never met: only down votes) no vote can be
    contrasted, so no test can tell a taste from noise. What remains is what users asked for in
    words: publish when at least `min_users` distinct users requested the candidate's checkable
    rules and the held-out votes agree with them (ups pass, downs fail) at least UNARY_AGREEMENT
    of the time."""
    ups = [e.up for e in singles]
    cand, cur = ([predicts_up(as_spec(spec).checks, e) for e in singles] for spec in (candidate, current))

    def accuracy(predicted: list[float]) -> tuple[float, int]:
        if not predicted or 0.5 in predicted:  # no checkable rule: predicts nothing
            return 0.5, 0
        agree = sum(p == float(up) for p, up in zip(predicted, ups, strict=True))
        return agree / len(predicted), agree

    (cand_acc, cand_agree), (cur_acc, cur_agree) = accuracy(cand), accuracy(cur)
    test = vote_test(cand, cur, ups, "checks on held-out votes (Fisher exact)")
    result = GateResult(False, cand_acc, cur_acc, margin, 0, cand_agree, cur_agree, metric="unary",
                        checks={"candidate": cand_acc, "current": cur_acc}, tests=[test], alpha=alpha,
                        correction=float(max(1, rules_tried)))  # fmt: skip
    if test.p_value * result.correction <= alpha:  # ups and downs both held out: a real contrast
        return decide(result, holdout_fraction=holdout_fraction)
    consistent = bool(singles) and cand_acc >= UNARY_AGREEMENT and cand_acc - cur_acc > margin
    result.passed = consistent and requested_by >= min_users
    if result.passed:
        result.reason = (f"requested by {requested_by} distinct users; {cand_acc:.3f} of {len(singles)} held-out votes "
                         "agree with the requested rules (no contrast of ups and downs to test)")  # fmt: skip
    else:
        result.reason = (
            f"candidate {cand_acc:.3f} vs current {cur_acc:.3f} on {len(singles)} held-out votes (unary): "
            + (f"fewer than {UNARY_AGREEMENT:.0%} of the held-out votes agree with the requested rules"
               if not consistent else
               f"requested by {requested_by} distinct user(s), {min_users} needed")
        )  # fmt: skip
        result.not_enough = consistent
    return result


def on_request(
    result: GateResult,
    candidate: str | Spec,
    current: str | Spec,
    pairs: Sequence[Pair],
    *,
    requested_by: int,
    min_users: int = 2,
) -> GateResult:
    """A few held-out contrasts must not make a rule users asked for harder to ship than none
    (unary_gate): when the contrasts lead but cannot reach significance, and every rule the
    candidate adds was requested (`requested_by` distinct users, 0 when any was not), the
    comment-only criterion applies to the gate's own votes. Nothing else changes: a veto or a
    candidate that does not lead still stops it."""
    if result.passed or not result.not_enough or not requested_by:
        return result
    singles = singles_of(pairs)
    asked = unary_gate(candidate, current, singles, margin=result.margin, alpha=result.alpha,
                       requested_by=requested_by, min_users=min_users)  # fmt: skip
    if asked.passed:
        result.passed, result.not_enough = True, False
        result.reason = (f"requested by {requested_by} distinct users; {asked.candidate_accuracy:.3f} of "
                         f"{len(singles)} held-out votes agree with the requested rules; the held-out "
                         f"contrasts lead but are too few to test "
                         f"(p = {min(result.p_value, 1.0):.3f} > {result.alpha})")  # fmt: skip
    return result


async def gate_in_mode(
    mode: Mode,
    judge: Judge,
    candidate: Spec,
    current: Spec,
    *,
    pairs: Sequence[Pair],
    singles: Sequence[Example],
    use_judge: bool,
    margin: float,
    alpha: float,
    holdout_fraction: float,
    regenerate: bool,
    answer_max_tokens: int,
    requested_by: int,
    min_users: int,
    rules_tried: int,
) -> GateResult:
    """The round's gate in its mode: with held-out contrasts, `run_gate` then `on_request`; with
    comments only, `unary_gate` on the held-out votes, whose p-values are corrected for the
    `rules_tried` that were validated on the same votes one by one."""
    if mode == Mode.COMMENTS:
        return unary_gate(candidate, current, singles, margin=margin, alpha=alpha, rules_tried=rules_tried,
                          holdout_fraction=holdout_fraction, requested_by=requested_by, min_users=min_users)  # fmt: skip
    result = await run_gate(judge, candidate, current, pairs, margin=margin, use_judge=use_judge, regenerate=regenerate,
                            answer_max_tokens=answer_max_tokens, alpha=alpha, holdout_fraction=holdout_fraction)  # fmt: skip
    return on_request(result, candidate, current, pairs, requested_by=requested_by, min_users=min_users)
