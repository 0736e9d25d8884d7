"""Wishes users wrote in words no built-in pattern reads ("give me an example", "tell me why").

`checks.check_of_comment` reads the wishes that name their property ("answer in French",
"end with 'Hope this helps!'"). The others are handed to the LLM one distinct comment at a
time, with the answer it was written on, to write the one rule with a check (the check
language of compiler/checks.py) that answer broke. The comment stays data: what it yields is a
candidate like any other, validated and gated on held-out votes, and it is bounded twice over:

- it counts as requested only by the distinct users whose commented answers break its check
  (a complaint about an answer that already passes the check did not ask for it), and the
  gate's minimum of requesting users applies to that count; most liked answers must pass it;
- a check may require only phrases the served model has already written in some answer, so no
  comment can bring new text (a brand, a link, a slogan) into the spec; phrases to avoid are
  always allowed. A required phrase takes the form liked answers write it in (`liked_form`).

When the LLM's check does not fit what users liked (no check, a phrase no answer used, or one
most liked answers break), the wish is grounded instead (`grounded_check`): the phrases most
liked answers share and none of the answers it was written on contain are offered to the LLM,
one Yes/No question each, and the one it says the complaint asks for becomes the check ("tell me
why" -> the liked answers' "because", where the LLM itself wrote "why").
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from . import prompts
from .checks import KINDS, REQUIRES_PHRASE, Check, check_of_comment, check_text, checks_from_text, written_phrases
from .comments import down_comments, flag_comment
from .dataset import Example
from .judge import YES_NO
from .llm import LLMClient, run_all
from .principle import Rule, Source, llm_rule
from .text import display_phrase, normalize, parse_rules, word_ngrams

_CLAUSE_RE = re.compile(r"[.,;:!?()\n]")  # a phrase never grows across these
GROUNDING_CANDIDATES = 6  # shared phrases offered to the LLM per wish, most widely liked first


@dataclass
class Wish:
    """One distinct comment (as first written) and the down votes that carry it."""

    comment: str
    downs: list[Example] = field(default_factory=list)

    @property
    def voices(self) -> set[str]:
        return {e.voice for e in self.downs}


def untranslated_wishes(examples: Sequence[Example], *, limit: int) -> list[Wish]:
    """The unflagged down-vote comments no pattern translates, one Wish per distinct text, the
    ones most users wrote first."""
    groups: dict[str, Wish] = {}
    for e in down_comments(examples):
        comment = (e.comment or "").strip()
        if comment and check_of_comment(comment) is None:
            groups.setdefault(normalize(comment), Wish(comment)).downs.append(e)
    ranked = sorted(groups.values(), key=lambda w: (-len(w.voices), -len(w.downs), normalize(w.comment)))
    return ranked[: max(0, limit)]


def liked_form(phrase: str, liked: Sequence[str]) -> str:
    """The phrase one word longer when every liked answer that uses it has that same longer
    form ("example" -> "for example"), else the phrase: users liked a surface form, and a small
    model follows a quoted phrase it can copy (in one bench.quality run, a spec quoting "example"
    left the served answers' rate where it was)."""
    n = len(phrase.split())
    lefts: list[set[str]] = []
    rights: list[set[str]] = []
    for text in liked:
        at = [(words, i) for clause in _CLAUSE_RE.split(text) if (words := normalize(clause).split())
              for i in range(len(words) - n + 1) if words[i : i + n] == phrase.split()]  # fmt: skip
        if at:
            lefts.append({" ".join(w[i - 1 : i + n]) for w, i in at if i > 0})
            rights.append({" ".join(w[i : i + n + 1]) for w, i in at if i + n < len(w)})
    for sides in (lefts, rights):
        common = set.intersection(*sides) if sides else set()
        if common:
            return sorted(common)[0]
    return phrase


def in_liked_form(check: Check, liked: Sequence[str]) -> Check:
    """A required phrase in the form liked answers write it (`liked_form`); one phrase left of
    several is a plain `contains`, so the same wish measured by evidence is the same check."""
    if KINDS[check.kind].phrase_at != "anywhere":
        return check
    forms = list(dict.fromkeys(liked_form(p, liked) for p in check.arg.split("|")))
    return replace(check, kind="contains", arg=forms[0]) if len(forms) == 1 else replace(check, arg="|".join(forms))


def _phrases(text: str, n_max: int = 3) -> set[str]:
    """Word n-grams inside one clause, stopwords included: "because" is what "tell me why" wants."""
    out: set[str] = set()
    for clause in _CLAUSE_RE.split(text):
        words = normalize(clause).split()
        out |= {" ".join(gram) for gram in word_ngrams(words, n_max)}
    return out


def shared_phrases(liked: Sequence[str], complained: Sequence[str], disliked: Sequence[str], limit: int) -> list[str]:
    """Phrases at least two and most of the liked answers use, none of the answers the wish was
    written on (`complained`), and at most a fifth as many disliked answers: the widest first,
    then the shortest, one per set of liked answers (a longer phrase on the same answers adds
    nothing)."""
    in_liked: dict[str, set[int]] = {}
    for i, text in enumerate(liked):
        for g in _phrases(text):
            in_liked.setdefault(g, set()).add(i)
    banned = set().union(*map(_phrases, complained)) if complained else set()
    disliked_grams = [_phrases(t) for t in disliked]
    ranked = sorted(((g, ids) for g, ids in in_liked.items() if len(ids) >= 2 and 2 * len(ids) >= len(liked)
                     and g not in banned), key=lambda t: (-len(t[1]), len(t[0].split()), t[0]))  # fmt: skip
    picked: list[tuple[str, set[int]]] = []
    for g, ids in ranked:
        if 5 * sum(g in d for d in disliked_grams) > len(ids):
            continue
        if any(ids == got and (got_g in g or g in got_g) for got_g, got in picked):
            continue
        picked.append((g, ids))
        if len(picked) >= limit:
            break
    return [g for g, _ in picked]


async def grounded_check(llm: LLMClient, instruction: str, wish: Wish, examples: Sequence[Example], *,
                         max_tokens: int) -> tuple[Check, float] | None:  # fmt: skip
    """The shared phrase the LLM says this wish asks for, as a `contains` check: the one with the
    highest P(yes), if that leans yes (the 1.5B judge's margins are small: see
    prompts.phrase_meets_wish); None when none does. The data still decide: the check is
    validated and gated on held-out votes like any other."""
    liked = [e.response for e in examples if e.up]
    disliked = [e.response for e in examples if not e.up]
    candidates = shared_phrases(liked, [e.response for e in wish.downs], disliked, GROUNDING_CANDIDATES)
    if not candidates:
        return None
    answers = [e.response for e in examples]
    p_yes = await run_all(
        llm.choose(prompts.phrase_meets_wish(instruction, wish.comment, display_phrase(g, answers)),
                   max_tokens=max_tokens, stage="translate", options=YES_NO)
        for g in candidates
    )  # fmt: skip
    p, phrase = max(zip(p_yes, candidates, strict=True), key=lambda t: t[0])
    return (Check("contains", phrase), p) if p > 0.5 and p_yes.count(p) == 1 else None


def first_rule(reply: str) -> str | None:
    """The rule of a completion-form reply ("Rule: Provide an example. [check: ...]")."""
    lines = [ln.strip() for ln in reply.strip().splitlines() if ln.strip()]
    if not lines:
        return None
    rules = parse_rules("- " + lines[0].removeprefix("Rule:").lstrip("- ").strip())
    return rules[0] if rules else None


def rule_text(proposed: Rule, check: Check, examples: Sequence[Example]) -> str:
    """The rule in the LLM's words when they state the check; else those words (what the user
    meant: "Provide an example.") followed by the check's canonical words (what reads back),
    quoting a required phrase as the answers wrote it: in two bench.quality runs the 0.5B model
    gave an example in 6/12 answers when the spec quoted "For example" (beside "for example"),
    in 1/12 when it quoted only "for example"."""
    words = str(proposed.evidence.get("proposed_as", ""))
    if check == proposed.check and not words:
        return proposed.text
    if not words and not checks_from_text(proposed.text):
        words = proposed.text  # a rule that stated no check of its own: what the user meant
    answers = [e.response for e in examples]
    phrases = check.arg.split("|") if check.kind in REQUIRES_PHRASE else []
    display = "|".join(display_phrase(p, answers) for p in phrases)
    return f"{words} {check_text(check, display)}".strip()


NEW_TEXT = "requires a phrase no answer has used"
_CONTACT_RE = re.compile(r"@|\d{3,}|\b[a-z0-9-]+\.[a-z]{2,}\b", re.I)  # an address, a number to call, a domain
_NAME_RE = re.compile(r"(?<=[a-z,;:] )[A-Z][a-zA-Z0-9]+")  # a capitalized word inside a sentence: a name, a brand


def why_refused(rule: str) -> str | None:
    """Why a rule that brings new words into the spec is refused outright, not even held for a
    person: it reads as an instruction to the model, a link, an address or a number, or names
    something (a capitalized word inside a sentence: a brand, a product, a person)."""
    if why := flag_comment(rule):
        return why
    words = re.sub(r"\[check:[^\]]*\]", "", rule)
    if m := _CONTACT_RE.search(words):
        return f"{m.group(0)!r} reads as an address, a number or a link"
    if m := _NAME_RE.search(words):
        return f"{m.group(0)!r} reads as a name or a brand"
    return None


def new_text_rules(report: Sequence[dict[str, Any]]) -> list[Rule]:
    """The wishes refused only because their rule asks for words the served model has never
    written (a way of explaining it has not tried yet): a person may still want them. Each
    becomes a rule for a version held for approval; what reads as a link, an address, a brand
    or an instruction stays refused (its report row says why)."""
    out: dict[str, Rule] = {}
    for row in report:
        if row.get("outcome") != NEW_TEXT or not row.get("rule"):
            continue
        proposed = llm_rule(str(row["rule"]), [])
        if (why := why_refused(str(row["rule"]))) is not None:
            row["outcome"] = f"{NEW_TEXT}; refused: {why}"
            continue
        row["outcome"] = f"{NEW_TEXT}; held for a person"
        evidence = {"comments": [row["comment"]], "count": row.get("count", 1), "users": row.get("users", 1),
                    "new_text": True}  # fmt: skip
        out.setdefault(proposed.text, Rule(proposed.text, Source.COMMENT, proposed.check, evidence=evidence))
    return list(out.values())


def fitting_check(proposed: Rule | None, answers: Sequence[str],
                  liked: Sequence[Example]) -> tuple[Check | None, str]:  # fmt: skip
    """The LLM's check as the liked answers write it, or None and why it does not fit."""
    if proposed is None or proposed.check is None:
        return None, "no rule with a check"
    written = written_phrases(proposed.check, answers)
    if written is None:
        return None, NEW_TEXT
    check = in_liked_form(written, [e.response for e in liked])
    if 2 * sum(check.passes(e) for e in liked) < len(liked):
        return None, "most liked answers break it"  # whatever users asked, it is not this
    return check, ""


async def translate_wishes(
    llm: LLMClient,
    instruction: str,
    wishes: Sequence[Wish],
    examples: Sequence[Example],
    *,
    min_users: int,
    max_tokens: int,
    seed: int,
) -> tuple[list[Rule], list[dict[str, Any]]]:
    """Candidate rules (source `comment`) from the wishes, one per distinct check, and a
    report row per wish: the rule the LLM wrote and what became of it (`grounded`: the shared
    phrase that replaced a check that did not fit). `examples`: the training votes, whose answers
    bound the phrases a check may require."""

    async def one(i: int, wish: Wish) -> str:
        msgs = prompts.translate_wish(instruction, wish.comment)
        return await llm.chat(msgs, max_tokens=max_tokens, temperature=0.0, seed=seed + i, stage="translate")

    replies = await run_all(one(i, w) for i, w in enumerate(wishes))
    answers = [e.response for e in examples]
    liked_answers = [e for e in examples if e.up]
    shown = sorted(examples, key=lambda e: not e.up)  # a phrase's casing: liked answers first
    by_check: dict[Check, tuple[str, list[Wish]]] = {}  # check -> the rule's text, the wishes asking
    report: list[dict[str, Any]] = []
    for wish, reply in zip(wishes, replies, strict=True):
        row: dict[str, Any] = {"comment": wish.comment[:200], "count": len(wish.downs), "users": len(wish.voices)}
        report.append(row)
        rule = first_rule(reply)
        proposed = llm_rule(rule, []) if rule else None
        if rule:
            row["rule"] = rule
        check, misfit = fitting_check(proposed, answers, liked_answers)
        if check is None:
            found = await grounded_check(llm, instruction, wish, examples, max_tokens=max_tokens)
            if found is None:
                row["outcome"] = misfit
                continue
            check, p_yes = found
            row["grounded"] = {"phrase": check.arg, "p_yes": round(p_yes, 3), "instead_of": misfit}
        row["check"] = str(check)
        text = (rule_text(proposed, check, shown) if proposed
                else check_text(check, display_phrase(check.arg, [e.response for e in shown])))  # fmt: skip
        by_check.setdefault(check, (text, []))[1].append(wish)
    out: list[Rule] = []
    for check, (text, asking) in by_check.items():
        downs = [e for w in asking for e in w.downs if not check.passes(e)]
        voices = {e.voice for e in downs}
        for row in report:
            if row.get("check") == str(check):
                row["outcome"] = "candidate" if len(voices) >= min_users else f"requested by {len(voices)} user(s)"
        if len(voices) < min_users:
            continue
        comments = list(dict.fromkeys(w.comment for w in asking))[:3]
        evidence = {"comments": comments, "count": len(downs), "users": len(voices), "translated": True}
        out.append(Rule(text, Source.COMMENT, check, evidence=evidence))
    return out, report
