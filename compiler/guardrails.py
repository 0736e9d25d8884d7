"""Guardrails of a canary experiment: what a candidate must not make worse, whatever its thumbs.

Read from the ledger's inference rows of each arm since the candidate was published: the error
rate (rows `error` or `incomplete`; client cancellations count for neither side), the p95 latency
of answered rows, and the mean tokens per request (cost). Once both arms have
`guardrail_min_requests` rows, a candidate is rolled back when

- its error rate exceeds production's by more than `max_error_increase` *and* the always-valid
  test of equal error rates (sequential.py, at the promote alpha) rejects: errors are rare events
  whose point estimates on a few hundred rows differ by points under A/A, so a bare threshold
  would roll back good candidates; the test keeps that at alpha however often the sidecar looks;
- its p95 latency or its mean tokens per request exceeds production's by more than a ratio
  (1.5 by default). These two are thresholds on point estimates, meant for gross regressions (a
  doubled cost), which a hundred rows show plainly.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

from proxy.ledger import Outcome

from .sequential import msprt

FAILED = ("error", "incomplete")
CANCELLED = "cancelled"


@dataclass(frozen=True, slots=True)
class ArmStats:
    requests: int  # rows that count (not cancelled by the client)
    errors: int
    p95_latency_ms: float | None
    mean_tokens: float | None

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0

    def to_meta(self) -> dict[str, Any]:
        return {**asdict(self), "error_rate": round(self.error_rate, 6)}


def p95(values: list[float]) -> float | None:
    """Nearest-rank 95th percentile."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)]


def arm_stats(rows: Iterable[Outcome]) -> ArmStats:
    requests = errors = 0
    latencies: list[float] = []
    tokens: list[int] = []
    for row in rows:
        if row.status == CANCELLED:
            continue
        requests += 1
        if row.status in FAILED:
            errors += 1
        elif row.latency_ms is not None:
            latencies.append(row.latency_ms)
        if row.tokens is not None:
            tokens.append(row.tokens)
    return ArmStats(requests, errors, p95(latencies), sum(tokens) / len(tokens) if tokens else None)


@dataclass(frozen=True, slots=True)
class Limits:
    min_requests: int = 100
    max_error_increase: float = 0.01
    max_latency_ratio: float = 1.5
    max_tokens_ratio: float = 1.5
    alpha: float = 0.05  # of the error-rate test
    tau: float = 0.05  # its mixture scale (the promote MDE)


@dataclass
class Guardrails:
    candidate: ArmStats
    production: ArmStats
    ready: bool  # both arms have enough rows to judge
    violations: list[str] = field(default_factory=list)

    def to_meta(self) -> dict[str, Any]:
        return {
            "candidate": self.candidate.to_meta(),
            "production": self.production.to_meta(),
            "ready": self.ready,
            "violations": self.violations,
        }


def check(candidate: ArmStats, production: ArmStats, limits: Limits) -> Guardrails:
    ready = min(candidate.requests, production.requests) >= limits.min_requests
    g = Guardrails(candidate, production, ready)
    if not ready:
        return g
    if candidate.error_rate > production.error_rate + limits.max_error_increase:
        test = msprt(production.errors, production.requests, candidate.errors, candidate.requests, limits.tau)
        if test.p_value < limits.alpha:
            g.violations.append(
                f"error rate {candidate.error_rate:.3f} vs {production.error_rate:.3f} "
                f"(> +{limits.max_error_increase:.3f}, always-valid p {test.p_value:.4f})"
            )
    for what, c, p, limit in (
        ("p95 latency", candidate.p95_latency_ms, production.p95_latency_ms, limits.max_latency_ratio),
        ("tokens per request", candidate.mean_tokens, production.mean_tokens, limits.max_tokens_ratio),
    ):
        if c is not None and p is not None and p > 0 and c / p > limit:
            g.violations.append(f"{what} {c:.1f} vs {p:.1f} (x{c / p:.2f} > x{limit:.2f})")
    return g
