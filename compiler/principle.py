"""A principle: one imperative rule for the writer, what held-out feedback measured of it, and
the verdict validation gave it: three records, each written once by the stage that owns it.

- `Rule`: the words, where they came from (`Source`), the `Check` a program can test on an
  answer (compiler/checks.py: at most N words, no bullet list, never says X, includes one of
  these phrases) and the evidence that proposed it. Written by propose, evidence and wishes;
  compress merges rules into new ones.
- `Measurement`: of n held-out items, on how many the rule takes a side (prevalence) and how
  often it sides with the user (accuracy), by its check or by a judge that passed calibration.
  Written by validate.
- `Principle`: a rule, its measurement and its `Status` (kept, added, dropped, ...), with the
  notes the verdict leaves (which rules explain or supersede it). Written by validate's select.

The front matter keeps one flat record per principle (`to_meta`/`from_meta`): the keys a
published spec has always had.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from .checks import Check, CheckSyntaxError, check_text, checks_from_text
from .text import split_attached


class Source(StrEnum):
    """Where a rule came from."""

    CURRENT = "current"  # the current spec's learned section (a person's or an earlier round's)
    EVIDENCE = "evidence"  # a measured property of the training contrasts
    COMMENT = "comment"  # what users asked for in words
    LLM = "llm"  # the proposer


class Method(StrEnum):
    """How a rule was measured on held-out feedback."""

    UNMEASURED = ""  # not validated (yet)
    CHECK = "check"  # its check on every held-out pair
    CHECK_UNARY = "check-unary"  # its check on the held-out votes one by one (no pair to decide on)
    JUDGE = "judge"  # a calibrated judge, both orders, on a sample of pairs
    NONE = "none"  # no judge and no pair to judge on
    UNCALIBRATED = "uncalibrated"  # no judge passed calibration: left unvalidated, not judged by noise


class Status(StrEnum):
    """The verdict on a candidate rule."""

    KEPT = "kept"  # a current rule the feedback does not contradict
    ADDED = "added"  # a new rule that validated
    DROPPED = "dropped"  # a current rule the feedback contradicts
    SUPERSEDED = "superseded"  # a better-validated rule of its check family holds its place
    REDUNDANT = "redundant"  # the kept rules already side with the users on its items
    UNREQUESTED = "unrequested"  # no held-out contrast, and no user asked for it in words
    REJECTED = "rejected"  # did not validate (or too few users back it)
    UNVALIDATED = "unvalidated"  # nothing measured it


@dataclass(frozen=True)
class Rule:
    """What the spec would say, and why it was proposed. `evidence` is read, never written:
    stages that learn more of a rule make a new one (`dataclasses.replace`)."""

    text: str
    source: Source
    check: Check | None = None
    evidence: dict[str, Any] = field(default_factory=dict)
    proposed_from: tuple[str, ...] = ()  # ids of the training pairs the proposer was shown
    merged: tuple[str, ...] = ()  # near-duplicates compress folded into this one

    @classmethod
    def from_meta(cls, meta: dict[str, Any]) -> Rule:
        """A rule of a published version's front matter, as the next round's current rule."""
        try:
            check = Check.parse(str(meta["check"])) if meta.get("check") else None
        except CheckSyntaxError:
            check = None  # a front matter written by hand: the rule stays, judged as words
        return cls(str(meta["text"]), Source.CURRENT, check, evidence=dict(meta.get("evidence") or {}))


@dataclass(frozen=True)
class Measurement:
    """What held-out feedback says of one rule."""

    method: Method = Method.UNMEASURED
    n: int = 0  # held-out items measured on
    relevant: int = 0  # those the rule takes a side on
    support: int = 0  # those it sides with the user on
    users: int = 0  # distinct voices the rule sides with on held-out feedback (dataset.Example.voice)
    seen: frozenset[str] = frozenset()  # ids of the held-out items it was measured on
    agrees: frozenset[str] = frozenset()  # those it sides with the user on
    judge: str = ""  # which judge measured it (method "judge"): model and kind, with its calibration

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


@dataclass(frozen=True)
class Principle:
    """A rule with its measurement and verdict. `notes` are what the verdict adds to the rule's
    evidence (explained_by, superseded_by, too_few_users): shown with it, never written into it."""

    rule: Rule
    measured: Measurement = Measurement()
    status: Status | None = None
    notes: dict[str, Any] = field(default_factory=dict)

    @property
    def text(self) -> str:
        return self.rule.text

    @property
    def source(self) -> Source:
        return self.rule.source

    @property
    def check(self) -> Check | None:
        return self.rule.check

    @property
    def evidence(self) -> dict[str, Any]:
        """The rule's evidence and the verdict's notes on it, as the front matter records them."""
        return {**self.rule.evidence, **self.notes} if self.notes else self.rule.evidence

    def to_meta(self) -> dict[str, Any]:
        m = self.measured
        out: dict[str, Any] = {"text": self.text, "source": str(self.source), "status": str(self.status or "")}
        if self.check:
            out["check"] = str(self.check)
        out.update(
            method=str(m.method),
            support=m.support,
            relevant=m.relevant,
            users=m.users,
            heldout=m.n,
            accuracy=None if m.accuracy is None else round(m.accuracy, 3),
            prevalence=round(m.prevalence, 3),
        )
        if m.judge:
            out["judge"] = m.judge
        if self.evidence:
            out["evidence"] = self.evidence
        if self.rule.merged:
            out["merged"] = list(self.rule.merged)
        return out


def mostly_explained(agreeing: frozenset[str] | set[str], explained: set[str]) -> bool:
    """90%+ of the items a rule sides with the users on are ones other rules already explain."""
    return bool(agreeing) and len(agreeing & explained) >= 0.9 * len(agreeing)


def checkable(rule: str) -> Check | None:
    """A proposed rule that states one checkable property ("under 50 words", never "X") is
    measured like evidence, so even a weak judge's blind spots cost it nothing."""
    checks = checks_from_text(rule)
    return checks[0] if len(checks) == 1 else None


def llm_rule(rule: str, proposed_from: Sequence[str] = ()) -> Rule:
    """A rule an LLM wrote and the check it carries. An attached check in the check language is
    parsed (never run: it is data); when the rule's words do not state it, the rule takes the
    check's canonical words, so what is validated is what the spec will say and the check reads
    back from the spec. A malformed check is reported and the rule stays words only."""
    words, attached = split_attached(rule)
    evidence: dict[str, str] = {}
    check = checkable(words)
    if attached:
        try:
            check = Check.parse(attached)
        except CheckSyntaxError as exc:
            evidence["check_error"] = f"{attached!r}: {exc}"
        else:
            if check not in checks_from_text(words):
                evidence["proposed_as"] = words
                words = check_text(check)
    return Rule(words, Source.LLM, check, evidence=evidence, proposed_from=tuple(proposed_from))
