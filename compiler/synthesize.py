"""Synthesize: write the candidate as an edit of the current spec, never a rewrite.

The text a person wrote (their instruction, or a whole production prompt they published) is kept
byte for byte; what the round learned goes into the one section the compiler owns
(proxy/registry/sections.py), which each round writes anew:

- `sections` (the default): the rules as a list, each in the words it was validated in. Not
  rewritten as "You end every answer with ...": on the 0.5B model that form was followed on 0/12
  held-out questions, the imperative "End every answer with ..." on 4/12 (bench/README.md).
- `persona`: the published study's second-person paragraph (150-300 words), written by the LLM,
  for a spec born from a short instruction only: a structured prompt is the person's design, and
  a paragraph beside it would restate it. A small model's paragraph is checked, not trusted: one
  that is too short or long, repeats itself, or no longer states a checkable rule in words its
  check reads back from gives way to the list; a rule without a check that it lost is appended.

Every spec is sent with every request, so the learned section has a length budget
(`max_spec_tokens`, estimated as the compiler counts tokens): over it, the list drops its
lowest-ranked rules until it fits, each drop recorded. The person's text is never cut or refused
for its length: it is what they chose to send.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from proxy.registry.sections import bullets, compose, split_spec

from . import prompts
from .checks import checks_from_text, stated
from .llm import LLMClient, estimate_tokens
from .principle import Rule
from .text import content_words

MIN_WORDS, MAX_WORDS = 150, 300
BUDGET_DROP = "dropped to fit the length budget: "  # a repair naming a rule the learned section left out
SHORT_INSTRUCTION_WORDS = 60  # a persona paragraph is offered only beside an instruction this short
_PREAMBLE_RE = re.compile(r"^(here is|here's|sure|system prompt|persona)[^\n]*:\s*$", re.I | re.M)
_STRUCTURE_RE = re.compile(r"^\s*(?:#{1,6}\s|[-*+]\s|\d+[.)]\s|```|\|)", re.M)


@dataclass
class Synthesis:
    text: str
    method: str  # sections | llm
    repairs: list[str] = field(default_factory=list)
    rejected: str = ""  # why no learned section within the length budget could be written
    rules: tuple[Rule, ...] = ()  # the rules the learned section states, best first: what the gate scores

    @property
    def tokens(self) -> int:
        """What the spec adds to every request it is injected into."""
        return spec_tokens(self.text)

    @property
    def learned_tokens(self) -> int:
        """What the compiler's section adds: the part the length budget bounds."""
        return spec_tokens(split_spec(self.text)[1])


def spec_tokens(text: str) -> int:
    """Tokens a spec adds to each request: the compiler's (pessimistic, ~4 characters) estimate."""
    return estimate_tokens(text) if text.strip() else 0


def covers(text: str, p: Rule) -> bool:
    """Whether the spec still says what `p` says. A checkable rule must be stated so that its
    check reads back from the text (every kind's canonical words do, tests/test_check_kinds.py):
    the gate scores the spec by the rules it states, and a paraphrase ("close warmly, hoping it
    helps") tells neither the gate nor the model the exact words."""
    if p.check is not None:
        return stated(p.check) in checks_from_text(text)
    words = content_words(p.text)
    return not words or len(words & content_words(text)) / len(words) >= 0.5


def short_instruction(human: str) -> bool:
    """A one-paragraph instruction with no Markdown structure: the only kind a persona paragraph
    may sit beside."""
    text = human.strip()
    return len(text.split()) <= SHORT_INSTRUCTION_WORDS and "\n\n" not in text and not _STRUCTURE_RE.search(text)


def clean_paragraph(raw: str) -> str:
    text = _PREAMBLE_RE.sub("", raw).strip().strip('"').strip()
    return " ".join(text.split())


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


def sections_text(human: str, principles: Sequence[Rule]) -> str:
    """The person's text, then each rule in the words it was validated in."""
    return compose(human, bullets([p.text.strip() for p in principles]))


def within_budget(synth: Synthesis, human: str, principles: Sequence[Rule], budget: int | None) -> Synthesis:
    """`synth` if its learned section fits `budget` tokens; else the list with the lowest-ranked
    rules dropped until it fits (`principles` come best first); else rejected, saying why."""
    if budget is None or synth.learned_tokens <= budget:
        return synth
    repairs = [*synth.repairs, f"learned section of ~{synth.learned_tokens} tokens is over the budget of {budget}"]
    kept = list(principles)
    while kept:
        text = sections_text(human, kept)
        if spec_tokens(split_spec(text)[1]) <= budget:
            return Synthesis(text, "sections", repairs, rules=tuple(kept))
        repairs.append(f"{BUDGET_DROP}{kept.pop().text}")
    reason = (f"no learned rule fits the learned section's length budget of {budget} tokens "
              "(MAX_SPEC_TOKENS, compiler/tuning.py)")  # fmt: skip
    return Synthesis(human, "sections", repairs, rejected=reason)


async def synthesize(
    human: str,
    principles: Sequence[Rule],
    llm: LLMClient | None,
    *,
    fmt: str = "sections",
    max_tokens: int = 512,
    max_spec_tokens: int | None = None,
) -> Synthesis:
    """`human`: the person's text this spec keeps (the served version's, else the instruction)."""
    synth = await _write(human, principles, llm, fmt=fmt, max_tokens=max_tokens)
    return within_budget(synth, human, principles, max_spec_tokens)


async def _write(
    human: str, principles: Sequence[Rule], llm: LLMClient | None, *, fmt: str, max_tokens: int
) -> Synthesis:
    listed = Synthesis(sections_text(human, principles), "sections", rules=tuple(principles))
    if fmt != "persona" or llm is None or not principles:
        return listed
    if not short_instruction(human):
        return replace(listed, repairs=["persona is for a short instruction: the person's prompt is kept as written"])
    raw = await llm.chat(
        prompts.synthesize(human, [p.text for p in principles], MIN_WORDS, MAX_WORDS),
        max_tokens=max_tokens,
        stage="synthesize",
    )
    paragraph = clean_paragraph(raw)
    words = len(paragraph.split())
    if words < MIN_WORDS // 3 or words > MAX_WORDS * 2:
        return replace(listed, repairs=[f"LLM paragraph had {words} words"])
    if looping(paragraph):
        return replace(listed, repairs=["LLM paragraph repeats itself"])
    if lost := [p.text for p in principles if p.check is not None and not covers(paragraph, p)]:
        # a checkable rule appended after a paragraph that lost it was followed 0/12 by the 0.5B
        # model, the same rule in the list 4/12 (bench/README.md): the list states it
        return replace(listed, repairs=[f"LLM paragraph lost: {t}" for t in lost])
    missing = [p for p in principles if not covers(paragraph, p)]
    if missing:
        paragraph = " ".join([paragraph, *(p.text.strip() for p in missing)])
    return Synthesis(
        compose(human, paragraph), "llm", [f"appended: {p.text}" for p in missing], rules=tuple(principles)
    )
