"""Synthesize: write the spec from the kept principles.

Default: one second-person persona paragraph of 150-300 words (it beat a numbered list in the
published study), written by the LLM. A small model's paragraph is then repaired, not trusted:
a kept rule whose key detail (a number, a quoted phrase, a language) is missing is appended
verbatim, and the person's instruction is put first verbatim unless the text holds it verbatim. Option
`rules`: the instruction followed by the numbered rules, written without the LLM.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from . import prompts
from .compress import content_words
from .evidence import LANGUAGE_NAMES
from .llm import LLMClient
from .principle import Principle

MIN_WORDS, MAX_WORDS = 150, 300
_PREAMBLE_RE = re.compile(r"^(here is|here's|sure|system prompt|persona)[^\n]*:\s*$", re.I | re.M)


@dataclass
class Synthesis:
    text: str
    method: str  # llm | template | rules
    repairs: list[str] = field(default_factory=list)


def key_detail(p: Principle) -> str | None:
    """The token a spec must contain to still say what a checkable principle says."""
    if p.check is None:
        return None
    k, arg = p.check.kind, p.check.arg
    if k in ("max_words", "min_words"):
        return arg
    if k == "language":
        return LANGUAGE_NAMES.get(arg, arg)
    if k in ("forbid", "starts_with"):
        m = re.search(r'"([^"]+)"', p.text)
        return m.group(1) if m else arg
    return None


def covers(text: str, p: Principle) -> bool:
    detail = key_detail(p)
    if detail is not None:
        return detail.lower() in text.lower()
    words = content_words(p.text)
    return not words or len(words & content_words(text)) / len(words) >= 0.5


def keeps_instruction(text: str, instruction: str) -> bool:
    """The instruction is an invariant: the spec holds it verbatim (up to case and spacing)."""
    return " ".join(instruction.lower().split()) in " ".join(text.lower().split())


def clean_paragraph(raw: str) -> str:
    text = _PREAMBLE_RE.sub("", raw).strip().strip('"').strip()
    return " ".join(text.split())


def repair(text: str, instruction: str, principles: Sequence[Principle]) -> tuple[str, list[str]]:
    repairs = []
    missing = [p for p in principles if not covers(text, p)]
    if missing:
        text = text.rstrip() + " " + " ".join(p.text for p in missing)
        repairs += [f"appended: {p.text}" for p in missing]
    if instruction.strip() and not keeps_instruction(text, instruction):
        text = " ".join(instruction.split()) + " " + text
        repairs.append("prepended the instruction")
    return text.strip(), repairs


def rules_text(instruction: str, principles: Sequence[Principle]) -> str:
    rules = "\n".join(f"{i}. {p.text}" for i, p in enumerate(principles, 1))
    head = instruction.strip()
    return f"{head}\n\n{rules}" if head else rules


_VERBS_AS_IS = {"never", "always", "do", "don't", "only"}


def second_person(rule: str) -> str:
    """An imperative rule as a sentence about "you": "Be brief." -> "You are brief."."""
    text = rule.strip().rstrip(".!")
    first, _, rest = text.partition(" ")
    word = first.lower()
    if word == "be":
        out = f"You are {rest}"
    elif word == "you" or word == "your":
        out = text
    else:
        out = f"You {word} {rest}" if word in _VERBS_AS_IS or word.isalpha() else f"You: {text}"
    return out.rstrip() + "."


def looping(text: str, ngram: int = 4, limit: int = 3) -> bool:
    """A small model can fall into a loop ("Voici une ... Voici une ..."): any run of `ngram`
    words that comes back more than `limit` times marks the paragraph as degenerate."""
    words = text.lower().split()
    counts: dict[tuple[str, ...], int] = {}
    for i in range(len(words) - ngram + 1):
        key = tuple(words[i : i + ngram])
        counts[key] = counts.get(key, 0) + 1
        if counts[key] > limit:
            return True
    return False


def template_text(instruction: str, principles: Sequence[Principle]) -> str:
    """The persona without an LLM: the instruction, then each rule as a sentence about "you"."""
    return " ".join([" ".join(instruction.split()), *(second_person(p.text) for p in principles)]).strip()


async def synthesize(
    instruction: str,
    principles: Sequence[Principle],
    llm: LLMClient | None,
    *,
    fmt: str = "persona",
    max_tokens: int = 512,
) -> Synthesis:
    if fmt == "rules":
        return Synthesis(rules_text(instruction, principles), "rules")
    if llm is None:
        return Synthesis(template_text(instruction, principles), "template")
    raw = await llm.chat(
        prompts.synthesize(instruction, [p.text for p in principles], MIN_WORDS, MAX_WORDS),
        max_tokens=max_tokens,
        stage="synthesize",
    )
    text = clean_paragraph(raw)
    words = len(text.split())
    if words < MIN_WORDS // 3 or words > MAX_WORDS * 2:
        return Synthesis(template_text(instruction, principles), "template", [f"LLM paragraph had {words} words"])
    if looping(text):
        return Synthesis(template_text(instruction, principles), "template", ["LLM paragraph repeats itself"])
    text, repairs = repair(text, instruction, principles)
    return Synthesis(text, "llm", repairs)
