"""A principle: one imperative rule for the writer, with the evidence for it.

A principle may carry a `Check` (compiler/checks.py) — a predicate a program can test on an
answer (at most N words, no bullet list, never says X, includes one of these phrases).
Checkable principles are validated by measuring held-out pairs directly; the others by an LLM
judge that passed calibration. Both yield the same numbers: of n held-out pairs, on how
many the rule takes a side (prevalence) and how often it sides with the user (accuracy).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .checks import Check, CheckSyntaxError


@dataclass
class Principle:
    """source: current (kept from the current spec) | evidence | comment | llm."""

    text: str
    source: str
    check: Check | None = None
    evidence: dict[str, Any] = field(default_factory=dict)
    proposed_from: list[str] = field(default_factory=list)
    merged: list[str] = field(default_factory=list)
    # filled in by validation
    method: str = ""
    n: int = 0
    relevant: int = 0
    support: int = 0
    users: int = 0  # distinct voices the rule sides with on held-out feedback (dataset.Example.voice)
    status: str = ""  # kept | added | dropped | unvalidated
    judge: str = ""  # which judge validated it (method "judge"): model and kind, with its calibration
    seen: set[str] = field(default_factory=set)  # ids of the held-out items it was measured on
    agrees: set[str] = field(default_factory=set)  # those it sides with the user on

    @property
    def prevalence(self) -> float:
        return self.relevant / self.n if self.n else 0.0

    @property
    def accuracy(self) -> float | None:
        return self.support / self.relevant if self.relevant else None

    @property
    def score(self) -> float:
        """prevalence x accuracy = correct decisions / pairs judged."""
        return self.support / self.n if self.n else 0.0

    def to_meta(self) -> dict[str, Any]:
        out: dict[str, Any] = {"text": self.text, "source": self.source, "status": self.status}
        if self.check:
            out["check"] = str(self.check)
        out.update(
            method=self.method,
            support=self.support,
            relevant=self.relevant,
            users=self.users,
            heldout=self.n,
            accuracy=None if self.accuracy is None else round(self.accuracy, 3),
            prevalence=round(self.prevalence, 3),
        )
        if self.judge:
            out["judge"] = self.judge
        if self.evidence:
            out["evidence"] = self.evidence
        if self.merged:
            out["merged"] = self.merged
        return out

    @classmethod
    def from_meta(cls, meta: dict[str, Any]) -> Principle:
        try:
            check = Check.parse(str(meta["check"])) if meta.get("check") else None
        except CheckSyntaxError:
            check = None  # a front matter written by hand: the rule stays, judged as words
        return cls(str(meta["text"]), "current", check, evidence=dict(meta.get("evidence") or {}))
