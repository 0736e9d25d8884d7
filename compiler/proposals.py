"""Proposals: a learned rule that would change what the person wrote is shown, never applied.

The person's text is served byte for byte (compiler/synthesize.py). A rule the round validated
may still contradict or supersede one of their sentences ("Answer in at most 50 words." where
they wrote "Keep answers under 200 words."): adding it beside their sentence would leave the
model two orders, and replacing their sentence is their call. Such a rule leaves the learned
section and becomes a proposal: the sentence, the rule that would replace it and the rule's
evidence, published as a version held for approval (never served until a person approves it)
and shown in the round report and the console.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .checks import KINDS, Check, checks_from_text
from .principle import Principle
from .text import split_sentences


def contradicts(rule: Check, stated: Check) -> bool:
    """Whether an answer could not follow both, or `rule` changes the setting `stated` fixes:
    the negation, another value of a kind whose argument is a setting (not a phrase of which a
    spec may hold many), or an upper bound below the lower bound of the same count."""
    if rule.scope != stated.scope:
        return False
    a, b = KINDS[KINDS[rule.kind].stated], KINDS[KINDS[stated.kind].stated]
    if a.negation == b.name and rule.arg == stated.arg:
        return True
    if a.name == b.name and a.arg and not a.many:
        return rule.arg != stated.arg
    if a.lower_bound == b.name:
        return int(rule.arg) < int(stated.arg)
    if b.lower_bound == a.name:
        return int(rule.arg) > int(stated.arg)
    return False


@dataclass(frozen=True)
class Proposal:
    """Replace `sentence` (the person's, verbatim) by `rule`'s words."""

    sentence: str
    rule: Principle

    def apply(self, human: str) -> str:
        return human.replace(self.sentence, self.rule.text.strip(), 1)

    def to_meta(self) -> dict[str, Any]:
        return {"replaces": self.sentence, "with": self.rule.text, "rule": self.rule.to_meta()}


def stated_checks(human: str) -> list[tuple[str, Check]]:
    """Each sentence of the person's text with a check it states, in order."""
    return [(s, c) for s in split_sentences(human) for c in checks_from_text(s) if s in human]


def find_proposals(kept: Sequence[Principle], human: str) -> tuple[list[Principle], list[Proposal]]:
    """The rules that may go into the learned section, and the proposals: each new rule whose
    check contradicts a sentence of the person's text, paired with the first such sentence."""
    stated = stated_checks(human)
    keep: list[Principle] = []
    proposals: list[Proposal] = []
    for p in kept:
        hit = next((s for s, c in stated if p.check is not None and contradicts(p.check, c)), None)
        if hit is None:
            keep.append(p)
        else:
            proposals.append(Proposal(hit, p))
    return keep, proposals
