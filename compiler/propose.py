"""Propose: candidate principles from three sources, all validated the same way afterwards.

1. the current spec — the starting point; its rules are kept unless held-out feedback
   contradicts them;
2. measured evidence (`evidence.py`) — checkable rules, the backbone when the LLM is small;
3. an LLM that reads the instruction, the current rules and a sample of about 20 pairs over a
   few passes (a different slice and seed each pass) and writes imperative rules; a rule that
   states a checkable property, or carries a check in the check language (compiler/checks.py),
   is measured by that check (principle.llm_rule).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import replace

from proxy.registry import SpecVersion
from proxy.registry.sections import split_spec

from . import prompts
from .checks import written_phrases
from .dataset import Pair
from .llm import LLMClient, run_all
from .principle import Rule, Source, llm_rule
from .text import parse_rules, split_sentences


def current_principles(version: SpecVersion | None) -> list[Rule]:
    """The current spec's learned rules, the ones a round may keep, drop or replace: a compiled
    version lists them in its front matter; any other version states them in its learned section.
    The person's text is never among them: it is kept byte for byte, not validated away."""
    if version is None:
        return []
    listed = version.meta.get("principles")
    if isinstance(listed, list) and listed:
        return [
            Rule.from_meta(m) for m in listed if isinstance(m, dict) and m.get("text") and m.get("status") != "dropped"
        ]
    return [Rule(s, Source.CURRENT) for s in split_sentences(split_spec(version.text)[1]) if len(s.split()) >= 2]


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
    current: Sequence[Rule],
    contrasts: Sequence[Pair],
    complaints: Sequence[str],
    *,
    passes: int,
    sample: int,
    max_tokens: int,
    temperature: float,
    seed: int,
    on_pass: Callable[[int, int], None] | None = None,
) -> list[Rule]:
    pairs = sample_pairs(contrasts, sample, seed)
    if not pairs or passes <= 0:
        return []
    passes = min(passes, len(pairs))
    batches = [pairs[i::passes] for i in range(passes)]
    current_texts = [p.text for p in current]
    n_rules = 5

    async def one(i: int, batch: list[Pair]) -> list[Rule]:
        msgs = prompts.propose(instruction, current_texts, batch, complaints[:5], n_rules)
        text = await llm.chat(msgs, max_tokens=max_tokens, temperature=temperature, seed=seed + i, stage="propose")
        if on_pass:
            on_pass(i + 1, passes)
        return [llm_rule(r, [p.id for p in batch]) for r in parse_rules(text)[:n_rules]]

    found = await run_all(one(i, b) for i, b in enumerate(batches))
    answers = [e.response for p in contrasts for e in (p.chosen, p.rejected)]
    return [only_written_phrases(p, answers) for batch in found for p in batch]


def only_written_phrases(p: Rule, answers: Sequence[str]) -> Rule:
    """A proposed check may require only phrases some answer has written: the 0.5B proposer
    copies the prompt's placeholder ("phrase two") into a check, which no answer can have been
    liked for. Such a check is refused with the reason; the rule keeps the LLM's own words."""
    if p.check is None or written_phrases(p.check, answers) is not None:
        return p
    evidence = {k: v for k, v in p.evidence.items() if k != "proposed_as"}
    evidence["check_error"] = f"{p.check}: requires a phrase no answer has used"
    return replace(p, text=str(p.evidence.get("proposed_as", p.text)), check=None, evidence=evidence)
