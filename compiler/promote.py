"""Promote or roll back a candidate from the live thumbs-up rate (design §3, step 7).

With a canary share (`SPECLEARN_CANARY_FRACTION`) the proxy serves the `candidate` label to some
unpinned requests, so thumbs arrive for both versions. Once the candidate has `min_feedback`
thumbs: promote it to production when even the lower end of its Wilson 95% interval beats
production's rate; roll it back (point `candidate` at production) when even the upper end falls
short; otherwise keep waiting.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass

from proxy.ledger import THUMB
from proxy.registry import PRODUCTION

from . import metrics
from .gate import wilson_lower
from .runner import Context

log = logging.getLogger("speclearn.compiler.promote")
CANDIDATE = "candidate"


def wilson_upper(ups: int, n: int) -> float:
    return 1.0 - wilson_lower(n - ups, n) if n else 1.0


@dataclass
class Decision:
    action: str  # promote | rollback | wait
    candidate: int
    production: int
    candidate_ups: int = 0
    candidate_n: int = 0
    production_ups: int = 0
    production_n: int = 0
    reason: str = ""


def decide(d: Decision, min_feedback: int) -> Decision:
    if d.candidate_n < min_feedback or d.production_n < min_feedback:
        d.action, d.reason = (
            "wait",
            f"{d.candidate_n}/{d.production_n} thumbs (candidate/production), need {min_feedback} each",
        )
        return d
    prod_rate = d.production_ups / d.production_n
    low, high = wilson_lower(d.candidate_ups, d.candidate_n), wilson_upper(d.candidate_ups, d.candidate_n)
    if low > prod_rate:
        d.action, d.reason = "promote", f"candidate up-rate >= {low:.3f} (95%) beats production {prod_rate:.3f}"
    elif high < prod_rate:
        d.action, d.reason = "rollback", f"candidate up-rate <= {high:.3f} (95%) is below production {prod_rate:.3f}"
    else:
        d.action, d.reason = "wait", f"candidate in [{low:.3f}, {high:.3f}] vs production {prod_rate:.3f}: undecided"
    return d


def _created(meta_value: object) -> float | None:
    if isinstance(meta_value, str):
        try:
            return dt.datetime.fromisoformat(meta_value).timestamp()
        except ValueError:
            return None
    return None


async def review(ctx: Context, name: str, min_feedback: int) -> Decision | None:
    """Compare the live thumbs of `candidate` and `production` since the candidate was published;
    act on the decision. None when there is no distinct candidate to review."""
    assert ctx.ledger is not None
    await ctx.registry.refresh()
    state = ctx.registry.snapshot.specs.get(name)
    if state is None:
        return None
    cand, prod = state.labels.get(CANDIDATE), state.labels.get(PRODUCTION)
    if cand is None or prod is None or cand == prod or cand not in state.versions:
        return None
    since = _created(state.versions[cand].meta.get("created_at"))
    d = Decision("wait", cand, prod)
    for ev in await ctx.ledger.feedback_events(spec=name, since=since):
        if ev.feedback.kind != THUMB:
            continue
        up = ev.feedback.value > 0
        if ev.inference.spec_version == cand:
            d.candidate_n, d.candidate_ups = d.candidate_n + 1, d.candidate_ups + up
        elif ev.inference.spec_version == prod:
            d.production_n, d.production_ups = d.production_n + 1, d.production_ups + up
    decide(d, min_feedback)
    if d.action == "promote":
        await ctx.registry.set_label(name, PRODUCTION, cand)
    elif d.action == "rollback":
        await ctx.registry.set_label(name, CANDIDATE, prod)  # the canary share now serves production
    if d.action != "wait":
        metrics.PROMOTIONS.labels(name, d.action).inc()
        log.info("%s: %s %s@%d (%s)", name, d.action, name, cand, d.reason)
    return d
