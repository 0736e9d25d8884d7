"""The live loop's measures over simulated days, pure functions of the per-day counts.

A day is a dict with `events` (feedback events that day: every served answer is rated once),
`served`, `static`, `oracle` (thumbs-up of the same events under each arm) and `versions` (served
version ref -> requests that day). Definitions, in feedback events as the unit of time:

- to_0.9 (E): the feedback events given before the first day whose served up-rate reaches 0.9 x
  that day's oracle up-rate (0 when the first day already does; None, printed `-`, if none does);
- regret (R): thumbs-up lost against the oracle, the area between the two curves: the sum over
  days of events x (oracle rate - served rate) = oracle ups - served ups (negative when the
  served spec beat the oracle);
- exposure (X): the share of all served requests answered by a version that was rolled back at
  some point (the decision log's rollbacks, whatever their reason: thumbs or a guardrail).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from compiler.stats import wilson_lower

RATIO = 0.9


def wilson(ups: int, n: int) -> tuple[float, float]:
    """Wilson score 95% interval of a thumbs-up rate ((0, 1) for no data)."""
    if n == 0:
        return 0.0, 1.0
    return round(wilson_lower(ups, n), 3), round(1 - wilson_lower(n - ups, n), 3)


def arm(ups: int, n: int) -> dict[str, Any]:
    return {"rate": round(ups / n, 3) if n else 0.0, "ups": ups, "n": n, "wilson95": wilson(ups, n)}


def to_ratio(days: Sequence[Mapping[str, Any]], ratio: float = RATIO) -> int | None:
    """Feedback events before the first day whose served rate >= ratio x its oracle rate."""
    before = 0
    for d in days:
        n = d["events"]
        if n and d["served"] >= ratio * d["oracle"]:  # counts: the same n on both sides
            return before
        before += n
    return None


def regret(days: Iterable[Mapping[str, Any]]) -> int:
    """Thumbs-up the oracle would have earned on the same events that the served specs did not."""
    return sum(d["oracle"] - d["served"] for d in days)


def exposure(days: Iterable[Mapping[str, Any]], rolled_back: Iterable[str]) -> float:
    """Share of served requests whose version (a ref such as `live@3`) was rolled back."""
    bad = set(rolled_back)
    total = hit = 0
    for d in days:
        for ref, n in d["versions"].items():
            total += n
            hit += n if ref in bad else 0
    return hit / total if total else 0.0


def final_line(world: str, e: int | None, r: float, x: float, promotions: int, rollbacks: int) -> str:
    """`WORLD: to_0.9 E regret R exposure X promotions P rollbacks B` (E `-` when never)."""
    return (f"{world}: to_0.9 {'-' if e is None else e} regret {r:.1f} exposure {x:.2f} "
            f"promotions {promotions} rollbacks {rollbacks}")  # fmt: skip


def pooled(runs: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """One world's summary over its seeds: E the largest (None if any seed never got there),
    regret the mean, exposure over all seeds' traffic, promotions and rollbacks summed."""
    es = [r["to_0.9"] for r in runs]
    traffic = [r["served_requests"] for r in runs]
    total = sum(traffic)
    return {
        "to_0.9": None if any(e is None for e in es) else max(es, default=None),
        "regret": sum(r["regret"] for r in runs) / len(runs) if runs else 0.0,
        "exposure": sum(r["exposure"] * t for r, t in zip(runs, traffic, strict=True)) / total if total else 0.0,
        "promotions": sum(r["promotions"] for r in runs),
        "rollbacks": sum(r["rollbacks"] for r in runs),
        "seeds": len(runs),
        "seeds_with_promotion": sum(1 for r in runs if r["promotions"]),
    }


def production_at(at: float, start: int, promotions: Sequence[tuple[float, int]]) -> int:
    """The production version at time `at`: `start`, or the last version promoted by then."""
    current = start
    for when, version in sorted(promotions):
        if when <= at:
            current = version
    return current
