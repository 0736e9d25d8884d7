"""Synthesize: write the spec from the kept principles.

Default: one second-person persona paragraph of 150-300 words (it beat a numbered list in the
published study), written by the LLM. A small model's paragraph is checked, not trusted: one
that is too short or long, repeats itself, or no longer states a checkable rule in words its
check reads back from gives way to the template (the instruction, then the rules in the words
they were validated in); otherwise a rule without a check that it lost is appended verbatim,
and the person's instruction is put first verbatim unless the text holds it verbatim. Option
`rules`: the instruction followed by the numbered rules, no LLM.

Every spec is sent with every request, so it has a length budget (`max_spec_tokens`, estimated as
the compiler counts tokens): a paragraph over it gives way to the template; a template over it
drops its lowest-ranked rules until it fits, each drop recorded; a spec whose instruction alone
exceeds the budget is rejected with the reason.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from . import prompts
from .checks import Check, checks_from_text
from .compress import content_words
from .llm import LLMClient, estimate_tokens
from .principle import Principle

MIN_WORDS, MAX_WORDS = 150, 300
_PREAMBLE_RE = re.compile(r"^(here is|here's|sure|system prompt|persona)[^\n]*:\s*$", re.I | re.M)


@dataclass
class Synthesis:
    text: str
    method: str  # llm | template | rules
    repairs: list[str] = field(default_factory=list)
    rejected: str = ""  # why no spec within the length budget could be written ("" when one was)

    @property
    def tokens(self) -> int:
        """What the spec adds to every request it is injected into."""
        return spec_tokens(self.text)


def spec_tokens(text: str) -> int:
    """Tokens a spec adds to each request: the compiler's (pessimistic, ~4 characters) estimate."""
    return estimate_tokens(text) if text.strip() else 0


# checks that `checks_from_text` reads back from a sentence; `in_language` is stated as `language`
_STATED_AS = {"in_language": "language"}
_READABLE = {"max_words", "min_words", "forbid", "starts_with", "ends_with", "question", "language", "no_list", "list"}


def _stated(check: Check) -> Check:
    return replace(check, kind=_STATED_AS.get(check.kind, check.kind))


def covers(text: str, p: Principle) -> bool:
    """Whether the spec still says what `p` says. A checkable rule must be stated so that its
    check reads back from the text: the gate scores the spec by the rules it states, and a
    paraphrase ("close warmly, hoping it helps") tells neither the gate nor the model the
    exact words."""
    if p.check is not None and _stated(p.check).kind in _READABLE:
        return _stated(p.check) in checks_from_text(text)
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
    """The spec without an LLM: the instruction, then each rule in the words it was validated in.
    Not rewritten as "You end every answer with ...": on the 0.5B model that form was followed
    on 0/12 held-out questions, the imperative "End every answer with ..." on 4/12
    (bench/README.md)."""
    sentences = [" ".join(instruction.split()), *(p.text.strip() for p in principles)]
    return " ".join(s if s.endswith((".", "!", "?")) else s + "." for s in sentences if s).strip()


def within_budget(synth: Synthesis, instruction: str, principles: Sequence[Principle], budget: int | None) -> Synthesis:
    """`synth` if it fits `budget` tokens; else the template, with the lowest-ranked rules dropped
    until it fits (`principles` come best first); else rejected, saying why."""
    if budget is None or synth.tokens <= budget:
        return synth
    repairs = [*synth.repairs, f"{synth.method} spec of ~{synth.tokens} tokens is over the budget of {budget}"]
    render = rules_text if synth.method == "rules" else template_text
    method = "rules" if synth.method == "rules" else "template"
    kept = list(principles)
    while kept:
        text = render(instruction, kept)
        if spec_tokens(text) <= budget:
            return Synthesis(text, method, repairs)
        repairs.append(f"dropped to fit the length budget: {kept.pop().text}")
    text = render(instruction, [])
    if spec_tokens(text) <= budget:
        return Synthesis(text, method, repairs)
    reason = (f"no spec fits the length budget of {budget} tokens (SPECLEARN_COMPILER_MAX_SPEC_TOKENS): "
              f"the instruction alone is ~{spec_tokens(text)} tokens")  # fmt: skip
    return Synthesis(text, method, repairs, rejected=reason)


async def synthesize(
    instruction: str,
    principles: Sequence[Principle],
    llm: LLMClient | None,
    *,
    fmt: str = "persona",
    max_tokens: int = 512,
    max_spec_tokens: int | None = None,
) -> Synthesis:
    synth = await _write(instruction, principles, llm, fmt=fmt, max_tokens=max_tokens)
    return within_budget(synth, instruction, principles, max_spec_tokens)


async def _write(
    instruction: str, principles: Sequence[Principle], llm: LLMClient | None, *, fmt: str, max_tokens: int
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
    if lost := [p.text for p in principles if p.check is not None and not covers(text, p)]:
        # a checkable rule appended after a paragraph that lost it was followed 0/12 by the 0.5B
        # model, the same rule in the template 4/12 (bench/README.md): the template states it
        return Synthesis(template_text(instruction, principles), "template", [f"LLM paragraph lost: {t}" for t in lost])
    text, repairs = repair(text, instruction, principles)
    return Synthesis(text, "llm", repairs)
