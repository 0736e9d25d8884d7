"""A check-in: what a round does first, and all it does while a live test decides.

It re-tests the served rules (production's, and the running candidate's) on the feedback since
each was last concluded about (drift.py); while a live test on the canary share decides, the round
publishes nothing (one live test at a time: a new candidate would restart it), but when users
turned against a rule the candidate adds, the test's premise is gone (thumbs from before and
after the turn cancel out and would keep it undecided to its horizon), so the check-in ends it
(promote.end_test) and the round goes on, learning from the feedback after the turn.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from proxy.ledger import FeedbackEvent
from proxy.registry import SpecVersion

from .drift import Drift, retest
from .explore import Canary
from .memory import Memory, served_rules
from .pipeline import served, stated_rules
from .promote import end_test

if TYPE_CHECKING:  # the runner calls in here
    from .runner import Context


def window_end(version: SpecVersion) -> float | None:
    """The end of the feedback window a compiled version was learned from (None if it names none)."""
    until = (version.meta.get("feedback_window") or {}).get("until")
    return float(until) if isinstance(until, (int, float)) else None


def follow_drift(ctx: Context, name: str, events: list[FeedbackEvent], memory: Memory, live: Canary) -> Drift:
    """The checkable rules served now (production's, and the candidate's while a live test runs)
    tested on the feedback since each was last concluded about (drift.py)."""
    state = ctx.registry.snapshot.specs.get(name)
    versions = [served(state)]
    if state is not None and live.share > 0 and live.running in state.versions:
        versions.append(state.versions[live.running])
    rules = [(rule, window_end(v)) for v in versions if v is not None for rule in stated_rules(v) or []]
    return retest(rules, memory, events, alpha=ctx.compiler.gate_alpha, max_per_user=ctx.compiler.max_per_user)


def added_by_candidate(ctx: Context, name: str, live: Canary) -> set[str]:
    """The rules the running candidate serves and production does not: what its test is about."""
    state = ctx.registry.snapshot.specs.get(name)
    if state is None or live.running not in state.versions:
        return set()
    production = served(state)
    served_now = served_rules(production.meta) if production is not None else {}
    return set(served_rules(state.versions[live.running].meta)) - set(served_now)


async def check_in(
    ctx: Context, name: str, events: list[FeedbackEvent], memory: Memory | None, live: Canary, waiting: str,
    *, act: bool,
) -> tuple[Drift, str]:  # fmt: skip
    """Re-test the served rules and, while a live test decides (`waiting` says so), end it when
    users turned against a rule its candidate adds (`act`: False for a dry run). Returns the drift
    and why the round still waits ("" when it need not). Reads the registry as `live` was read
    (runner.canary refreshed it)."""
    if memory is None:
        return Drift(), waiting
    drift = follow_drift(ctx, name, events, memory, live)
    against = drift.among(added_by_candidate(ctx, name, live)) if waiting else ()
    if against and act:
        ended = await end_test(ctx, name, f"users turned against the rule(s) it adds: {Drift(turned=against).describe()}",
                               {"turned": [s.to_meta() for s in against]})  # fmt: skip
        if ended is not None:
            return drift, ""
    return drift, waiting
