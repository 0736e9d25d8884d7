"""What the console shows about a version, read from its text and front matter (compiler-written
or not: every field is optional and read defensively)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..registry import PRODUCTION, SpecState, SpecVersion
from ..routing import CANDIDATE


@dataclass(slots=True)
class Tokens:
    count: int
    estimated: bool


def spec_tokens(spec: SpecVersion) -> Tokens:
    """Tokens the spec adds to each request: front matter `spec_tokens`, else characters / 4."""
    given = spec.meta.get("spec_tokens")
    if isinstance(given, int) and not isinstance(given, bool) and given >= 0:
        return Tokens(given, False)
    return Tokens(round(len(spec.text) / 4), True)


def parent_of(spec: SpecVersion, state: SpecState) -> SpecVersion | None:
    parent = spec.meta.get("parent")
    if isinstance(parent, int) and not isinstance(parent, bool) and parent in state.versions and parent != spec.version:
        return state.versions[parent]
    return None


def rollback_target(state: SpecState) -> int | None:
    """Where "roll back" moves `production`: the version the current production one was made
    from (its parent: the compiler compiles from production), else the highest version below it."""
    current = state.labels.get(PRODUCTION)
    if current is None or current not in state.versions:
        return None
    parent = parent_of(state.versions[current], state)
    if parent is not None:
        return parent.version
    older = [v for v in state.versions if v < current]
    return max(older) if older else None


def holds_of(state: SpecState) -> dict[int, str]:
    """Versions awaiting approval or rejected (approval mode): their status, for a badge."""
    return {v: hold.status for v, hold in state.holds.items() if hold.blocks}


@dataclass(frozen=True, slots=True)
class Experiment:
    """The canary experiment as the proxy runs it: `candidate` against `production`, served to
    `fraction` of the users that name no version (what the auto-promote review compares)."""

    candidate: int
    production: int
    fraction: float

    @property
    def live(self) -> bool:
        return self.fraction > 0


def experiment(state: SpecState, fraction: float) -> Experiment | None:
    """None unless `candidate` and `production` point at two different versions."""
    cand, prod = state.labels.get(CANDIDATE), state.labels.get(PRODUCTION)
    if cand is None or prod is None or cand == prod or cand not in state.versions:
        return None
    return Experiment(cand, prod, fraction)


def labels_of(state: SpecState) -> dict[int, list[str]]:
    out: dict[int, list[str]] = {}
    for label, version in sorted(state.labels.items()):
        out.setdefault(version, []).append(label)
    return out


@dataclass(slots=True)
class PrincipleView:
    text: str
    status: str
    source: str
    method: str
    check: str | None
    judge: str | None
    support: Any
    relevant: Any
    heldout: Any
    accuracy: Any
    prevalence: Any
    quotes: list[str] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)


def _judge(raw: Any) -> str | None:
    if raw is None or raw == "":
        return None
    if isinstance(raw, dict):
        return ", ".join(f"{k}: {v}" for k, v in raw.items())
    return str(raw)


def principles(meta: dict[str, Any], key: str = "principles") -> list[PrincipleView]:
    raw = meta.get(key)
    if not isinstance(raw, list):
        return []
    out = []
    for p in raw:
        if not isinstance(p, dict) or not p.get("text"):
            continue
        found = p.get("evidence")
        evidence = found if isinstance(found, dict) else {}
        quotes = [str(c) for c in evidence.get("comments") or [] if str(c).strip()]
        facts = {k: v for k, v in evidence.items() if k != "comments"}
        out.append(
            PrincipleView(
                str(p["text"]), str(p.get("status") or ""), str(p.get("source") or ""), str(p.get("method") or ""),
                str(p["check"]) if p.get("check") else None, _judge(p.get("judge")),
                p.get("support"), p.get("relevant"), p.get("heldout"), p.get("accuracy"), p.get("prevalence"),
                quotes, facts,
            )
        )  # fmt: skip
    return out


def flat(value: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """A nested front-matter mapping as (dotted key, scalar or short list) rows."""
    if not isinstance(value, dict):
        return [(prefix or "value", value)] if value not in (None, {}, []) else []
    rows: list[tuple[str, Any]] = []
    for k, v in value.items():
        name = f"{prefix}.{k}" if prefix else str(k)
        if isinstance(v, dict):
            rows += flat(v, name)
        elif isinstance(v, list):
            rows.append((name, ", ".join(str(x) for x in v)))
        else:
            rows.append((name, v))
    return rows
