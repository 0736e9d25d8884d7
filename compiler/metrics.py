"""Prometheus metrics of the compiler (names are a contract with the dashboards)."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import Counter, Gauge, Histogram

ROUNDS = Counter("speclearn_compiler_rounds", "Compile rounds by outcome", ["spec", "result"])
ROUND_DURATION = Histogram(
    "speclearn_compiler_round_duration_seconds", "Wall time of one compile round", ["spec"],
    buckets=(1, 5, 15, 30, 60, 120, 300, 600, 1200, 3600),
)  # fmt: skip
LLM_CALLS = Counter("speclearn_compiler_llm_calls", "Upstream LLM calls made by the compiler", ["spec"])
TOKENS = Counter("speclearn_compiler_tokens", "Tokens spent by the compiler's LLM calls", ["spec"])
PUBLISHES = Counter("speclearn_compiler_publishes", "Spec versions published", ["spec", "label"])
PROMOTIONS = Counter(
    "speclearn_compiler_promotions", "Candidates promoted or rolled back from live thumbs", ["spec", "action"]
)
EXPERIMENT_DECISIONS = Counter(
    "speclearn_experiment_decisions", "Looks of the auto-promote review at a canary, by outcome", ["spec", "decision"]
)
EXPERIMENT_P_VALUE = Gauge(
    "speclearn_experiment_p_value",
    "Always-valid p-value of the canary's thumbs-up difference at the last look",
    ["spec"],
)
EXPERIMENT_LIFT = Gauge(
    "speclearn_experiment_lift", "Candidate's thumbs-up rate minus production's at the last look", ["spec"]
)
LAST_ROUND = Gauge("speclearn_compiler_last_round_timestamp_seconds", "End of the last round", ["spec"])


def on_call(spec: str) -> Callable[[int], None]:
    """A callback for `LLMClient(on_call=...)` that counts calls and tokens for `spec`."""
    calls, tokens = LLM_CALLS.labels(spec), TOKENS.labels(spec)

    def count(used: int) -> None:
        calls.inc()
        tokens.inc(used)

    return count


def record_round(spec: str, result: str, seconds: float, end: float) -> None:
    ROUNDS.labels(spec, result).inc()
    ROUND_DURATION.labels(spec).observe(seconds)
    LAST_ROUND.labels(spec).set(end)


DECISIONS = ("promote", "rollback", "continue")


def record_decision(spec: str, decision: str, p_value: float | None, lift: float | None) -> None:
    for name in DECISIONS:  # every child exists from the first look, so increase() sees the first rollback
        EXPERIMENT_DECISIONS.labels(spec, name)
    EXPERIMENT_DECISIONS.labels(spec, decision).inc()
    if decision in ("promote", "rollback"):
        PROMOTIONS.labels(spec, decision).inc()
    EXPERIMENT_P_VALUE.labels(spec).set(1.0 if p_value is None else p_value)
    if lift is not None:
        EXPERIMENT_LIFT.labels(spec).set(lift)
