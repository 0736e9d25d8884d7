"""Propose: candidate principles from three sources, all validated the same way afterwards.

1. the current spec — the starting point; its rules are kept unless held-out feedback
   contradicts them;
2. measured evidence (`evidence.py`) — checkable rules, the backbone when the LLM is small;
3. an LLM that reads the instruction, the current rules and a sample of about 20 pairs over a
   few passes (a different slice and seed each pass) and writes imperative rules; a rule that
   states a checkable property, or carries a check in the check language (compiler/checks.py),
   is measured by that check.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence

from proxy.registry import SpecVersion
from proxy.registry.sections import split_spec

from . import prompts
from .checks import Check, CheckSyntaxError, check_text, checks_from_text, written_phrases
from .dataset import Pair
from .llm import LLMClient, run_all
from .principle import Principle
from .text import parse_rules, split_attached, split_sentences


def llm_principle(rule: str, proposed_from: list[str]) -> Principle:
    """A proposed rule and the check it carries. An attached check in the check language is
    parsed (never run: it is data); when the rule's words do not state it, the principle takes
    the check's canonical words, so what is validated is what the spec will say and the check
    reads back from the spec. A malformed check is reported and the rule stays words only."""
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
    return Principle(words, "llm", check, evidence=evidence, proposed_from=proposed_from)


def checkable(rule: str) -> Check | None:
    """A proposed rule that states one checkable property ("under 50 words", never "X") is
    measured like evidence, so even a weak judge's blind spots cost it nothing."""
    checks = checks_from_text(rule)
    return checks[0] if len(checks) == 1 else None


def current_principles(version: SpecVersion | None) -> list[Principle]:
    """The current spec's learned rules, the ones a round may keep, drop or replace: a compiled
    version lists them in its front matter; any other version states them in its learned section.
    The person's text is never among them: it is kept byte for byte, not validated away."""
    if version is None:
        return []
    listed = version.meta.get("principles")
    if isinstance(listed, list) and listed:
        return [
            Principle.from_meta(m)
            for m in listed
            if isinstance(m, dict) and m.get("text") and m.get("status") != "dropped"
        ]
    return [Principle(s, "current") for s in split_sentences(split_spec(version.text)[1]) if len(s.split()) >= 2]


def sample_pairs(contrasts: Sequence[Pair], k: int, seed: int) -> list[Pair]:
    """Up to k pairs, real pairs (same prompt) before cross pairs, seeded."""
    rng = random.Random(seed)
    real = [p for p in contrasts if p.source != "cross"]
    cross = [p for p in contrasts if p.source == "cross"]
    rng.shuffle(real)
    rng.shuffle(cross)
    return (real + cross)[:k]


async def propose_llm(
    llm: LLMClient,
    instruction: str,
    current: Sequence[Principle],
    contrasts: Sequence[Pair],
    complaints: Sequence[str],
    *,
    passes: int,
    sample: int,
    max_tokens: int,
    temperature: float,
    seed: int,
    on_pass: Callable[[int, int], None] | None = None,
) -> list[Principle]:
    pairs = sample_pairs(contrasts, sample, seed)
    if not pairs or passes <= 0:
        return []
    passes = min(passes, len(pairs))
    batches = [pairs[i::passes] for i in range(passes)]
    current_texts = [p.text for p in current]
    n_rules = 5

    async def one(i: int, batch: list[Pair]) -> list[Principle]:
        msgs = prompts.propose(instruction, current_texts, batch, complaints[:5], n_rules)
        text = await llm.chat(msgs, max_tokens=max_tokens, temperature=temperature, seed=seed + i, stage="propose")
        if on_pass:
            on_pass(i + 1, passes)
        return [llm_principle(r, [p.id for p in batch]) for r in parse_rules(text)[:n_rules]]

    found = await run_all(one(i, b) for i, b in enumerate(batches))
    answers = [e.response for p in contrasts for e in (p.chosen, p.rejected)]
    return [only_written_phrases(p, answers) for batch in found for p in batch]


def only_written_phrases(p: Principle, answers: Sequence[str]) -> Principle:
    """A proposed check may require only phrases some answer has written: the 0.5B proposer
    copies the prompt's placeholder ("phrase two") into a check, which no answer can have been
    liked for. Such a check is refused with the reason; the rule keeps the LLM's own words."""
    if p.check is None or written_phrases(p.check, answers) is not None:
        return p
    p.evidence["check_error"] = f"{p.check}: requires a phrase no answer has used"
    p.text, p.check = str(p.evidence.pop("proposed_as", p.text)), None
    return p
