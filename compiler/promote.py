"""Promote or roll back a canary candidate from live traffic (design §3, step 7).

With a canary share (`SPECLEARN_CANARY_FRACTION`) the proxy serves the `candidate` label to a
stable share of users (proxy/routing.py), and records the arm on each inference row. Each look
of the sidecar compares the two arms' thumbs since the candidate was published with an always-
valid two-sample test (sequential.py, the mSPRT), so looking every few minutes does not inflate
the error rate: promote when its p-value falls below `promote_alpha` with a positive lift, roll
back when it does with a negative one, else continue, until `promote_max_feedback` thumbs on each
arm end an undecided test with production kept (rounds wait while a test decides, so it must
end). Guardrails (guardrails.py) decide too: a candidate that errs, slows or costs beyond the
limits is rolled back whatever its thumbs, and a promotion waits until they can judge. Every
look, with its numbers, goes to the ledger's decision log (`speclearn specs experiments NAME`)
and to the metrics; a promotion or a rollback is also the live verdict on each rule the
candidate added (memory.py), which later rounds remember.

Only rows the canary split assigned count (`arm` set): a client that pinned a version chose it,
and is not part of the experiment. Thumbs are treated as independent draws; one prolific user
weighs as much as their thumbs (the per-user cap of the dataset does not apply here).
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from proxy.ledger import THUMB, DecisionRecord
from proxy.registry import PRODUCTION, SpecState

from . import metrics
from .explore import CANDIDATE
from .guardrails import Guardrails, Limits, arm_stats, check
from .memory import live_verdicts
from .sequential import msprt
from .settings import CompilerSettings

if TYPE_CHECKING:  # the runner starts rounds that may end a test (end_test): no import at run time
    from .runner import Context

log = logging.getLogger("speclearn.compiler.promote")
PROMOTE, ROLLBACK, CONTINUE = "promote", "rollback", "continue"


@dataclass(frozen=True, slots=True)
class Rule:
    min_feedback: int = 50  # thumbs on each arm before the test looks (a burn-in for the normal approximation)
    alpha: float = 0.05
    mde: float = 0.05
    max_feedback: int = 2000  # thumbs on each arm after which an undecided test ends (tuning.PROMOTE_MAX_FEEDBACK)

    @classmethod
    def from_settings(cls, s: CompilerSettings) -> Rule:
        return cls(s.promote_min_feedback, s.promote_alpha, s.promote_mde, s.promote_max_feedback)


def limits(s: CompilerSettings) -> Limits:
    return Limits(s.guardrail_min_requests, s.guardrail_max_error_increase, s.guardrail_max_latency_ratio,
                  s.guardrail_max_tokens_ratio, s.promote_alpha, s.promote_mde)  # fmt: skip


@dataclass
class Decision:
    action: str  # promote | rollback | continue
    candidate: int
    production: int
    candidate_ups: int = 0
    candidate_n: int = 0
    production_ups: int = 0
    production_n: int = 0
    reason: str = ""
    p_value: float | None = None
    lift: float | None = None
    details: dict[str, Any] = field(default_factory=dict)  # the rule's settings and the guardrails' numbers


def decide(d: Decision, rule: Rule, guardrails: Guardrails | None = None) -> Decision:
    """Fill in the test's numbers and the action, from the counts (and guardrails) already in `d`."""
    d.details = {"alpha": rule.alpha, "mde": rule.mde, "min_feedback": rule.min_feedback,
                 "max_feedback": rule.max_feedback}  # fmt: skip
    if guardrails is not None:
        d.details["guardrails"] = guardrails.to_meta()
    if guardrails is not None and guardrails.violations:
        d.action, d.reason = ROLLBACK, "guardrail: " + "; ".join(guardrails.violations)
        return d
    if d.candidate_n < rule.min_feedback or d.production_n < rule.min_feedback:
        d.action, d.reason = (
            CONTINUE,
            f"{d.candidate_n}/{d.production_n} thumbs (candidate/production), need {rule.min_feedback} each",
        )
        return d
    test = msprt(d.production_ups, d.production_n, d.candidate_ups, d.candidate_n, rule.mde)
    d.p_value, d.lift = test.p_value, test.lift
    numbers = f"lift {test.lift:+.3f}, always-valid p {test.p_value:.4f} (alpha {rule.alpha})"
    if test.p_value >= rule.alpha:
        if min(d.candidate_n, d.production_n) < rule.max_feedback:
            d.action, d.reason = CONTINUE, f"{numbers}: undecided"
        else:  # a test that never ends would stop the loop: one live test runs at a time
            d.action, d.reason = (
                ROLLBACK,
                f"{numbers}: undecided after {rule.max_feedback} thumbs per arm, production stays",
            )
    elif test.lift < 0:
        d.action, d.reason = ROLLBACK, f"{numbers}: candidate is worse"
    elif guardrails is not None and not guardrails.ready:
        d.action, d.reason = CONTINUE, f"{numbers}: better, but the guardrails need more requests"
    else:
        d.action, d.reason = PROMOTE, f"{numbers}: candidate is better"
    return d


def _timestamp(value: object) -> float | None:
    if isinstance(value, str):
        try:
            return dt.datetime.fromisoformat(value).timestamp()
        except ValueError:
            return None
    return None


async def review(ctx: Context, name: str) -> Decision | None:
    """Compare the live traffic of `candidate` and `production` since the candidate was published
    (or approved); act on the decision and log it. None when there is no distinct candidate."""
    test = await live_test(ctx, name)
    if test is None:
        return None
    state, d, guardrails = test
    decide(d, Rule.from_settings(ctx.compiler), guardrails)
    await act(ctx, name, state, d)
    return d


async def end_test(ctx: Context, name: str, reason: str, evidence: dict[str, Any]) -> Decision | None:
    """Roll the running candidate back for a reason outside the test (users turned against a
    rule it adds: drift.py), with the test's counts so far logged beside it."""
    test = await live_test(ctx, name)
    if test is None:
        return None
    state, d, _ = test
    d.action, d.reason, d.details = ROLLBACK, reason, {"evidence": evidence}
    await act(ctx, name, state, d)
    return d


async def live_test(ctx: Context, name: str) -> tuple[SpecState, Decision, Guardrails] | None:
    """The running test's counts since the candidate was published (or approved), and the
    guardrails' verdict on its rows; None when there is no distinct candidate."""
    assert ctx.ledger is not None
    await ctx.registry.refresh()
    state = ctx.registry.snapshot.specs.get(name)
    if state is None:
        return None
    cand, prod = state.labels.get(CANDIDATE), state.labels.get(PRODUCTION)
    if cand is None or prod is None or cand == prod or cand not in state.versions:
        return None
    starts = [_timestamp(state.versions[cand].meta.get("created_at"))]
    hold = state.holds.get(cand)
    if hold is not None:
        starts.append(_timestamp(hold.decided_at))
    since = max((s for s in starts if s is not None), default=None)

    d = Decision(CONTINUE, cand, prod)
    for ev in await ctx.ledger.feedback_events(spec=name, since=since):
        inf = ev.inference
        if ev.feedback.kind != THUMB:
            continue
        up = ev.feedback.value > 0
        if inf.arm == CANDIDATE and inf.spec_version == cand:
            d.candidate_n, d.candidate_ups = d.candidate_n + 1, d.candidate_ups + up
        elif inf.arm == PRODUCTION and inf.spec_version == prod:
            d.production_n, d.production_ups = d.production_n + 1, d.production_ups + up
    rows = await ctx.ledger.outcomes(name, since=since)
    guardrails = check(
        arm_stats(r for r in rows if r.arm == CANDIDATE and r.spec_version == cand),
        arm_stats(r for r in rows if r.arm == PRODUCTION and r.spec_version == prod),
        limits(ctx.compiler),
    )
    return state, d, guardrails


async def act(ctx: Context, name: str, state: SpecState, d: Decision) -> None:
    """Move the labels as `d` says, log the look, and remember a verdict on the candidate's rules."""
    assert ctx.ledger is not None
    cand, prod = d.candidate, d.production
    if d.action == PROMOTE:
        await ctx.registry.set_label(name, PRODUCTION, cand)
    elif d.action == ROLLBACK:
        await ctx.registry.set_label(name, CANDIDATE, prod)  # the canary share now serves production
    await ctx.ledger.add_decision(
        DecisionRecord(
            name, cand, prod, d.action, d.reason, time.time(), d.p_value, d.lift,
            d.candidate_ups, d.candidate_n, d.production_ups, d.production_n, d.details,
        )
    )  # fmt: skip
    metrics.record_decision(name, d.action, d.p_value, d.lift)
    if d.action == CONTINUE:
        return
    verdicts = live_verdicts(
        name, candidate=cand, candidate_meta=state.versions[cand].meta,
        production_meta=state.versions[prod].meta if prod in state.versions else {},
        promoted=d.action == PROMOTE, reason=d.reason, at=time.time(),
        evidence={"lift": d.lift, "p_value": d.p_value, "candidate": [d.candidate_ups, d.candidate_n],
                  "production": [d.production_ups, d.production_n]},
    )  # fmt: skip
    await ctx.ledger.add_conclusions(name, [c.to_json() for c in verdicts])
    log.info("%s: %s %s@%d (%s)", name, d.action, name, cand, d.reason)
