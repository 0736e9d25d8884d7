"""A principle: one imperative rule for the writer, with the evidence for it.

A principle may carry a `Check` — a predicate a program can test on an answer (at most N words,
no bullet list, never says X). Checkable principles are validated by measuring held-out pairs
directly; the others by an LLM judge. Both yield the same numbers: of n held-out pairs, on how
many the rule takes a side (prevalence) and how often it sides with the user (accuracy).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from .dataset import normalize

_LIST_RE = re.compile(r"^\s*(?:[-*•+]|\d+[.)])\s+\S", re.M)

STOPWORDS: dict[str, frozenset[str]] = {
    "en": frozenset(
        "the a an and of to is are in it that for you with on this be as i your have not was can what".split()
    ),
    "fr": frozenset("le la les et des est un une que pour dans vous pas du sur ce qui au avec je nous".split()),
    "de": frozenset("der die das und ist nicht ein eine zu den mit sie ich es auf für von dem sich auch".split()),
    "es": frozenset("el la los las y es un una que de en por para con no se su lo del como".split()),
    "it": frozenset("il lo la gli le e è un una che di per non con sono del della si ti ho".split()),
    "pt": frozenset("o a os as e é um uma que de para com não do da em se por você".split()),
}
LANGUAGE_NAMES = {"en": "English", "fr": "French", "de": "German", "es": "Spanish", "it": "Italian", "pt": "Portuguese"}


def word_count(text: str) -> int:
    return len(text.split())


def has_list(text: str) -> bool:
    return len(_LIST_RE.findall(text)) >= 2


def ends_with_question(text: str) -> bool:
    return text.rstrip().rstrip("\"')*_ ").endswith("?")


def language(text: str) -> str:
    """A stopword vote: the language with the most stopword hits, `unknown` when too few."""
    words = normalize(text).split()
    if not words:
        return "unknown"
    letters = [c for c in text if c.isalpha()]
    if letters and sum(not c.isascii() for c in letters) / len(letters) > 0.5:
        return "other"
    hits = {lang: sum(w in sw for w in words) for lang, sw in STOPWORDS.items()}
    best = max(hits, key=lambda k: (hits[k], k == "en"))
    if hits[best] < 2 or hits[best] < 0.08 * len(words):
        return "unknown"
    return best


@dataclass(frozen=True, slots=True)
class Check:
    """A testable predicate. kind: max_words | min_words | list | no_list | question |
    no_question | language (undetectable short answers pass) | in_language (strict) | forbid |
    starts_with | ends_with (e.g. a required closing line)."""

    kind: str
    arg: str = ""

    def test(self, text: str) -> bool:
        k, arg = self.kind, self.arg
        if k == "max_words":
            return word_count(text) <= int(arg)
        if k == "min_words":
            return word_count(text) >= int(arg)
        if k == "list":
            return has_list(text)
        if k == "no_list":
            return not has_list(text)
        if k == "question":
            return ends_with_question(text)
        if k == "no_question":
            return not ends_with_question(text)
        if k == "language":
            return language(text) in (arg, "unknown")
        if k == "forbid":
            return f" {arg} " not in f" {normalize(text)} "
        if k == "starts_with":
            return normalize(text).startswith(arg)
        if k == "ends_with":
            return f" {normalize(text)}".endswith(f" {arg}")
        if k == "in_language":
            return language(text) == arg
        raise ValueError(f"unknown check {k!r}")

    def __str__(self) -> str:
        return f"{self.kind}:{self.arg}" if self.arg else self.kind

    @classmethod
    def parse(cls, raw: str) -> Check:
        kind, _, arg = raw.partition(":")
        return cls(kind, arg)


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
    status: str = ""  # kept | added | dropped | unvalidated

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
            heldout=self.n,
            accuracy=None if self.accuracy is None else round(self.accuracy, 3),
            prevalence=round(self.prevalence, 3),
        )
        if self.evidence:
            out["evidence"] = self.evidence
        if self.merged:
            out["merged"] = self.merged
        return out

    @classmethod
    def from_meta(cls, meta: dict[str, Any]) -> Principle:
        check = Check.parse(meta["check"]) if meta.get("check") else None
        return cls(str(meta["text"]), "current", check, evidence=dict(meta.get("evidence") or {}))
