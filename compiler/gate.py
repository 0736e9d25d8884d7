"""Gate: publish only a candidate that explains held-out feedback better than the current spec.

Primary test: a judge guided by each spec predicts which answer of each held-out pair the user
preferred (both orders, soft votes). Optional: regenerate answers to held-out prompts under both
specs and ask which one this user would prefer, given an answer they liked and one they
disliked; the candidate must then win with a Wilson 95% lower bound above one half.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from . import prompts
from .checks import checks_from_text
from .dataset import Example, Pair
from .judge import Judge, verdict
from .llm import LLMClient, run_all


def wilson_lower(wins: int, n: int, z: float = 1.96) -> float:
    """Lower end of the Wilson score interval for a proportion (95% by default)."""
    if n == 0:
        return 0.0
    p = wins / n
    centre = p + z * z / (2 * n)
    spread = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return (centre - spread) / (1 + z * z / n)


def check_accuracy(spec: str, pairs: Sequence[Pair]) -> tuple[float, int]:
    """How well the checkable rules a spec states predict held-out preferences: per pair, the
    answer passing more of them is the predicted one (a tie counts half). A spec that states
    no checkable rule predicts nothing: 0.5."""
    checks = checks_from_text(spec)
    score, agree = 0.0, 0
    for p in pairs:
        margin = sum(c.test(p.chosen.response) for c in checks) - sum(c.test(p.rejected.response) for c in checks)
        score += 1.0 if margin > 0 else 0.0 if margin < 0 else 0.5
        agree += margin > 0
    return (score / len(pairs) if pairs else 0.5), agree


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
    metric: str = "judge"  # judge | checks
    checks: dict[str, float] | None = None  # check accuracy of both specs, always measured
    judge_calibration: dict[str, int] | None = None

    def to_meta(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "passed": self.passed,
            "metric": {
                "judge": "LLM judge guided by the spec, held-out pairs, both orders",
                "checks": "the spec's checkable rules on held-out pairs (judge failed calibration)",
                "unary": "the spec's checkable rules on held-out single votes (no held-out pairs)",
            }[self.metric],
            "candidate_accuracy": round(self.candidate_accuracy, 4),
            "current_accuracy": round(self.current_accuracy, 4),
            "candidate_agree": self.candidate_agree,
            "current_agree": self.current_agree,
            "margin": self.margin,
            "heldout_pairs": self.pairs,
        }
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


async def spec_accuracy(judge: Judge, spec: str, pairs: Sequence[Pair]) -> tuple[float, int]:
    """(mean soft P(preferred), pairs on which the judge sides with the user)."""
    scores = await run_all(judge.by_spec(spec, p) for p in pairs)
    return (sum(scores) / len(scores) if scores else 0.5), sum(verdict(s) > 0 for s in scores)


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


async def run_gate(
    judge: Judge,
    candidate: str,
    current: str,
    pairs: Sequence[Pair],
    *,
    margin: float,
    use_judge: bool = True,
    regenerate: bool = False,
    answer_max_tokens: int = 256,
) -> GateResult:
    """Candidate vs current on the same held-out pairs. The judge decides when it passed
    calibration; otherwise the specs' checkable rules decide (measured, no LLM calls)."""
    cand_chk, cand_chk_agree = check_accuracy(candidate, pairs)
    cur_chk, cur_chk_agree = check_accuracy(current, pairs)
    if use_judge:
        cand_acc, cand_agree = await spec_accuracy(judge, candidate, pairs)
        cur_acc, cur_agree = await spec_accuracy(judge, current, pairs)
        metric = "judge"
    else:
        cand_acc, cand_agree, cur_acc, cur_agree = cand_chk, cand_chk_agree, cur_chk, cur_chk_agree
        metric = "checks"
    passed = cand_acc - cur_acc > margin
    reason = (
        ""
        if passed
        else f"candidate {cand_acc:.3f} does not beat current {cur_acc:.3f} by more than {margin} ({metric})"
    )
    result = GateResult(passed, cand_acc, cur_acc, margin, len(pairs), cand_agree, cur_agree, reason=reason,
                        metric=metric, checks={"candidate": cand_chk, "current": cur_chk})  # fmt: skip
    if regenerate:
        real = [p for p in pairs if p.source != "cross"] or list(pairs)
        wins, losses = await regenerate_wins(judge.llm, judge, candidate, current, real, answer_max_tokens)
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


def unary_gate(candidate: str, current: str, singles: Sequence[Example], *, margin: float) -> GateResult:
    """Without held-out pairs: how well each spec's checkable rules predict held-out single votes
    (up when the answer passes every rule); a spec stating no checkable rule predicts 0.5."""

    def accuracy(spec: str) -> tuple[float, int]:
        checks = checks_from_text(spec)
        if not checks or not singles:
            return 0.5, 0
        agree = sum(all(c.test(e.response) for c in checks) == e.up for e in singles)
        return agree / len(singles), agree

    (cand, cand_agree), (cur, cur_agree) = accuracy(candidate), accuracy(current)
    passed = cand - cur > margin
    reason = "" if passed else f"candidate {cand:.3f} does not beat current {cur:.3f} by more than {margin} (unary)"
    return GateResult(passed, cand, cur, margin, 0, cand_agree, cur_agree, reason=reason, metric="unary",
                      checks={"candidate": cand, "current": cur})  # fmt: skip
