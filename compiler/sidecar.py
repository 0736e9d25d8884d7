"""The sidecar: every `interval`, compile each spec that has gathered enough new feedback.

A spec is due when at least `min_feedback` feedback events arrived after the end of its last
round's feedback window (from the state file, or the window recorded in its latest compiled
version), and no error backoff is pending. While a live test on the canary share decides, a due
round is a check-in (checkin.py): it publishes nothing, re-tests the served rules, and ends the
test when users turned against a rule its candidate adds. With `auto_promote`, each pass first
reviews a spec's canary candidate against production on live traffic (promote.py). Rounds run one
at a time (2 shared cores), each under the spec's cross-process lock; an error never stops the
loop, it only backs that spec off.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

from .checkin import window_end
from .errors import RoundBusy
from .pipeline import RoundResult
from .promote import review
from .runner import Context, compile_spec

log = logging.getLogger("speclearn.compiler.sidecar")


def last_compiled_until(ctx: Context, name: str, state: dict[str, Any]) -> float | None:
    candidates: list[float] = []
    if isinstance(state.get("last_until"), (int, float)):
        candidates.append(float(state["last_until"]))
    spec = ctx.registry.snapshot.specs.get(name)
    if spec is not None:
        for v in spec.versions.values():
            until = window_end(v) if v.meta.get("author") == "compiler" else None
            if until is not None:
                candidates.append(until)
    return max(candidates) if candidates else None


async def due(ctx: Context, name: str, now: float) -> tuple[bool, str]:
    state = ctx.state.get(name)
    if float(state.get("next_attempt") or 0) > now:
        return False, "backing off after an error"
    assert ctx.ledger is not None
    since = last_compiled_until(ctx, name, state)
    fresh = await ctx.ledger.count_feedback(name, after=since)
    if fresh < ctx.compiler.min_feedback:
        return False, f"{fresh}/{ctx.compiler.min_feedback} new feedback events"
    return True, f"{fresh} new feedback events"


def _progress(name: str) -> Callable[[str], None]:
    return lambda message: log.info("%s: %s", name, message)


async def tick(ctx: Context, now: float | None = None) -> list[RoundResult]:
    """One pass over all specs; returns the rounds it ran."""
    await ctx.registry.refresh()
    results = []
    for name in sorted(ctx.registry.snapshot.specs):
        now_ = time.time() if now is None else now
        try:
            if ctx.compiler.auto_promote:
                await review(ctx, name)
            go, why = await due(ctx, name, now_)
            if not go:
                log.debug("%s: not due (%s)", name, why)
                continue
            log.info("%s: compiling (%s)", name, why)
            result = await compile_spec(ctx, name, progress=_progress(name))
            log.info("%s: round %s %s", name, result.result, result.reason)
            results.append(result)
        except RoundBusy as exc:
            log.info("%s", exc)
        except Exception:  # a broken spec must not stop the others, nor the loop
            log.exception("%s: round crashed", name)
            ctx.state.update(name, last_result="error", failures=int(ctx.state.get(name).get("failures", 0)) + 1,
                             next_attempt=time.time() + ctx.compiler.interval)  # fmt: skip
    return results


async def run_forever(ctx: Context, stop: asyncio.Event, before_tick: Callable[[], None] | None = None) -> None:
    """Tick every interval until `stop`; `before_tick` may update `ctx` first (e.g. the LLM's URL)."""
    while not stop.is_set():
        started = time.monotonic()
        try:
            if before_tick is not None:
                before_tick()
            await tick(ctx)
        except Exception:
            log.exception("compiler tick failed")
        wait = max(0.0, ctx.compiler.interval - (time.monotonic() - started))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=wait)
