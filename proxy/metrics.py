"""Prometheus metrics of the proxy. Label sets are bounded: routes are a fixed list, spec versions
collapse to `other` unless still served, models to `other` beyond the first few seen.

With several uvicorn workers, `PROMETHEUS_MULTIPROC_DIR` is set before this module is imported
(see `commands/serve.py`) and prometheus-client aggregates the workers' files at scrape time.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, TypeVar

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.metrics import MetricWrapperBase

if TYPE_CHECKING:
    from .registry import RegistrySnapshot, SpecVersion

Metric = TypeVar("Metric", bound=MetricWrapperBase)

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
OVERHEAD_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5)
MAX_MODEL_LABELS = 20

REQUESTS = Counter("speclearn_requests", "Requests answered", ["route", "spec", "version", "status"])
REQUEST_DURATION = Histogram(
    "speclearn_request_duration_seconds", "Total request time", ["route", "spec", "version"],
    buckets=LATENCY_BUCKETS,
)  # fmt: skip
UPSTREAM_DURATION = Histogram(
    "speclearn_upstream_duration_seconds", "Time spent waiting on the upstream", ["route"],
    buckets=LATENCY_BUCKETS,
)  # fmt: skip
OVERHEAD = Histogram(
    "speclearn_overhead_seconds", "Time the proxy adds: total minus upstream", ["route"],
    buckets=OVERHEAD_BUCKETS,
)  # fmt: skip
TTFT = Histogram(
    "speclearn_ttft_seconds", "Time to first streamed token", ["route", "spec", "version"],
    buckets=LATENCY_BUCKETS,
)  # fmt: skip
TOKENS = Counter("speclearn_tokens", "Tokens reported by the upstream", ["direction", "spec", "version", "model"])
UPSTREAM_ERRORS = Counter("speclearn_upstream_errors", "Upstream failures", ["route", "kind"])
# per attempt, retries and fallbacks included; `route` is a configured route's name or `default`,
# `outcome` ok (the answer used) | connect | reset | timeout | status_429 | status_5xx
UPSTREAM_ATTEMPTS = Counter("speclearn_upstream_attempts", "Requests sent upstream, by outcome", ["route", "outcome"])
FEEDBACK = Counter("speclearn_feedback", "Feedback accepted", ["spec", "version", "kind", "value"])
# during a storage outage the depth is every row held in memory, the batch being retried included
LEDGER_QUEUE_DEPTH = Gauge(
    "speclearn_ledger_queue_depth", "Inference rows waiting to be written", multiprocess_mode="livesum"
)
LEDGER_DROPPED = Counter(
    "speclearn_ledger_dropped",
    "Inference rows dropped: the queue full (a burst, a long storage outage), a write that kept failing, "
    "or a stop while storage was away",
)
LEDGER_WRITTEN = Counter("speclearn_ledger_written", "Inference rows written")
REGISTRY_RELOADS = Counter("speclearn_registry_reloads", "Spec registry snapshots loaded")
SPEC_ACTIVE_VERSION = Gauge(
    "speclearn_spec_active_version", "Version a label points at", ["spec", "label"], multiprocess_mode="max"
)
SPEC_TOKENS = Gauge(
    "speclearn_spec_tokens", "Tokens a served spec version adds to every request it is injected into",
    ["spec", "version"], multiprocess_mode="max",
)  # fmt: skip

_models_seen: set[str] = set()


def model_label(model: str | None) -> str:
    """The model name as a label, or `other` once the set of seen names is full."""
    if not model:
        return "none"
    if model in _models_seen:
        return model
    if len(_models_seen) < MAX_MODEL_LABELS:
        _models_seen.add(model)
        return model
    return "other"


def render() -> tuple[bytes, str]:
    """The exposition text, aggregated over workers in multiprocess mode."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]  # prometheus_client leaves it unannotated
        return generate_latest(registry), CONTENT_TYPE_LATEST
    from prometheus_client import REGISTRY

    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST


# -- recording helpers: label children are cached, so the hot path skips prometheus' label lookup --
_children: dict[tuple[int, tuple[str, ...]], Any] = {}


def _child(metric: Metric, *labels: str) -> Metric:
    key = (id(metric), labels)
    child: Metric | None = _children.get(key)
    if child is None:
        child = _children[key] = metric.labels(*labels)
    return child


def observe_request(route: str, spec: str, version: str, status: int, total: float, upstream: float) -> None:
    _child(REQUESTS, route, spec, version, str(status)).inc()
    _child(REQUEST_DURATION, route, spec, version).observe(total)
    if upstream:
        _child(UPSTREAM_DURATION, route).observe(upstream)
        _child(OVERHEAD, route).observe(max(total - upstream, 0.0))


def observe_ttft(route: str, spec: str, version: str, seconds: float) -> None:
    _child(TTFT, route, spec, version).observe(seconds)


def count_tokens(usage: dict[str, Any], spec: str, version: str, model: str | None) -> None:
    model_name = model_label(model)
    tokens_in = usage.get("prompt_tokens", usage.get("input_tokens"))
    tokens_out = usage.get("completion_tokens", usage.get("output_tokens"))
    if isinstance(tokens_in, int):
        _child(TOKENS, "in", spec, version, model_name).inc(tokens_in)
    if isinstance(tokens_out, int):
        _child(TOKENS, "out", spec, version, model_name).inc(tokens_out)


def count_upstream_error(route: str, kind: str) -> None:
    _child(UPSTREAM_ERRORS, route, kind).inc()


def count_attempt(route: str, outcome: str) -> None:
    _child(UPSTREAM_ATTEMPTS, route, outcome).inc()


def attempt_counter(route: str, outcome: str) -> Counter:
    """The child to count on directly, for a caller that looks it up once at start-up."""
    return _child(UPSTREAM_ATTEMPTS, route, outcome)


def count_feedback(spec: str, version: str, kind: str, value: str) -> None:
    _child(FEEDBACK, spec, version, kind, value).inc()


def spec_tokens(version: SpecVersion) -> int:
    """The version's `spec_tokens` front matter (written by the compiler), else the compiler's
    estimate of about 4 characters a token."""
    n = version.meta.get("spec_tokens")
    if isinstance(n, int) and not isinstance(n, bool) and n >= 0:
        return n
    return len(version.text) // 4 + 1 if version.text.strip() else 0


_token_series: set[tuple[str, str]] = set()


def follow_registry(snapshot: RegistrySnapshot) -> None:
    """Registry listener: count the reload, export where each label points and what each served
    version (labelled, or the latest) costs per request; a version no longer served is dropped.
    Runs on reload only: the request path never touches these gauges."""
    REGISTRY_RELOADS.inc()
    served: set[tuple[str, str]] = set()
    for name, state in snapshot.specs.items():
        for label, version in state.labels.items():
            _child(SPEC_ACTIVE_VERSION, name, label).set(version)
        if state.versions:
            _child(SPEC_ACTIVE_VERSION, name, "latest").set(max(state.versions))
        for v in {*state.served_versions(), *([max(state.versions)] if state.versions else [])}:
            if v in state.versions:
                SPEC_TOKENS.labels(name, str(v)).set(spec_tokens(state.versions[v]))
                served.add((name, str(v)))
    for gone in _token_series - served:
        SPEC_TOKENS.remove(*gone)
    _token_series.clear()
    _token_series.update(served)
