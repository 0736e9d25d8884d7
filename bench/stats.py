"""Percentiles and per-run records, dependency-free so the smoke test needs nothing extra."""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of an already sorted list (q in 0..100); NaN when empty."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(q / 100.0 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def summarize(values: list[float]) -> dict[str, float] | None:
    """p50/p90/p99/max/mean in the values' unit, rounded for JSON; None when there are none."""
    if not values:
        return None
    s = sorted(values)
    return {
        "p50": round(percentile(s, 50), 3),
        "p90": round(percentile(s, 90), 3),
        "p99": round(percentile(s, 99), 3),
        "max": round(s[-1], 3),
        "mean": round(sum(s) / len(s), 3),
        "n": len(s),
    }


@dataclass
class Recorder:
    """Everything one load run observed. Times are in milliseconds.

    ``latency`` is measured from the *scheduled* send time in open-loop runs, so a target that
    falls behind is charged for the queueing it causes (no coordinated omission).
    """

    latency: list[float] = field(default_factory=list)
    ttft: list[float] = field(default_factory=list)
    gaps: list[float] = field(default_factory=list)
    self_overhead: list[float] = field(default_factory=list)
    sched_lag: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    ok: int = 0
    sent: int = 0
    first_start: float = math.inf
    last_done: float = 0.0
    window_s: float = 0.0  # the schedule's length (open loop) or the run's (closed loop)

    def error(self, kind: str) -> None:
        self.errors[kind] += 1

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())

    def achieved_rps(self) -> float:
        """Successes per second over the schedule, or longer if answers came in after it."""
        span = max(self.window_s, self.last_done - self.first_start)
        return self.ok / span if self.ok and span > 0 else 0.0

    def to_dict(self) -> dict[str, object]:
        return {
            "sent": self.sent,
            "ok": self.ok,
            "errors": self.error_count,
            "error_kinds": dict(self.errors),
            "achieved_rps": round(self.achieved_rps(), 1),
            "latency_ms": summarize(self.latency),
            "ttft_ms": summarize(self.ttft),
            "inter_chunk_ms": summarize(self.gaps),
            "self_reported_overhead_ms": summarize(self.self_overhead),
            "sched_lag_ms": summarize(self.sched_lag),
        }


def paired_difference(
    both: int, only_first: int, only_second: int, neither: int, z: float = 1.96
) -> tuple[float, float, float]:
    """Difference of two proportions measured on the same items (first - second) and its 95%
    interval: Newcombe's hybrid score method for paired data (Newcombe 1998, Statistics in
    Medicine 17:2635, method 10), Wilson bounds of each proportion combined with their
    correlation. It stays inside [-1, 1] and behaves at 0 and n, where a Wald interval does not."""
    from compiler.stats import wilson_lower

    n = both + only_first + only_second + neither
    if n == 0:
        return 0.0, -1.0, 1.0
    p1, p2 = (both + only_first) / n, (both + only_second) / n
    l1, u1 = wilson_lower(both + only_first, n, z), 1 - wilson_lower(n - both - only_first, n, z)
    l2, u2 = wilson_lower(both + only_second, n, z), 1 - wilson_lower(n - both - only_second, n, z)
    margins = (both + only_first) * (only_second + neither) * (both + only_second) * (only_first + neither)
    # the correlation with Newcombe's continuity correction (as in biostatUZH's
    # confIntPairedProportion): without it all-concordant data give an interval of width zero
    b = both * neither - only_first * only_second
    corrected = b - n / 2 if b > n / 2 else (b if b < 0 else 0.0)
    phi = corrected / math.sqrt(margins) if margins else 0.0
    d = p1 - p2
    lower = d - math.sqrt(max(0.0, (p1 - l1) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2) + (u2 - p2) ** 2))
    upper = d + math.sqrt(max(0.0, (u1 - p1) ** 2 - 2 * phi * (u1 - p1) * (p2 - l2) + (p2 - l2) ** 2))
    return d, max(-1.0, lower), min(1.0, upper)
