"""The check language: small declarative predicates a program tests on an answer.

A check is data, never code: `KIND` or `KIND:ARG`, parsed against a fixed table of kinds, so a
principle proposed by an LLM (or read from a spec file) can carry one without anything of it
being executed. Every check has canonical words (`check_text`) that `checks_from_text` reads
back, so a principle and its check travel together through the spec text itself.

    check  := ["when:" PHRASE ";"] ["not:"] KIND [":" ARG]
    KIND   := max_words | min_words | max_sentences | min_sentences      ARG = an integer
            | list | no_list | numbered | headings | question | no_question  (no ARG)
            | language | in_language                                      ARG = en, fr, de, es, it, pt
            | forbid | contains | starts_with | ends_with                 ARG = a phrase
            | contains_any                                                ARG = phrase|phrase|...
    "not:" is sugar for the negative kinds: not:list = no_list, not:question = no_question,
    not:contains:X = forbid:X.
    "when:PHRASE;" scopes a check to questions that mention PHRASE ("when:t-shirt;contains:blue":
    recommend the blue one when asked about t-shirts); an answer to any other question follows it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Protocol

from .dataset import normalize

_LIST_RE = re.compile(r"^\s*(?:[-*•+]|\d+[.)])\s+\S", re.M)
_NUMBERED_RE = re.compile(r"^\s*\d+[.)]\s+\S", re.M)
_HEADING_RE = re.compile(r"^\s{0,3}(?:#{1,6}\s+\S.*|\*\*[^*\n]{2,60}\*\*:?)\s*$", re.M)
_SENTENCE_END_RE = re.compile(r"[.!?]+(?:[\"')\]]*)(?=\s|$)")
_CLOSED_RE = re.compile(r"[.!?][\"')\]]*$")

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


def sentence_count(text: str) -> int:
    """Sentences by their end marks; a last sentence without one still counts."""
    text = _LIST_RE.sub(" ", text).strip()
    if not text:
        return 0
    return len(_SENTENCE_END_RE.findall(text)) + (not _CLOSED_RE.search(text))


def has_list(text: str) -> bool:
    return len(_LIST_RE.findall(text)) >= 2


def has_numbered_steps(text: str) -> bool:
    return len(_NUMBERED_RE.findall(text)) >= 2


def has_headings(text: str) -> bool:
    return bool(_HEADING_RE.search(text))


def ends_with_question(text: str) -> bool:
    return text.rstrip().rstrip("\"')*_ ").endswith("?")


def contains_phrase(text: str, phrase: str) -> bool:
    return f" {phrase} " in f" {normalize(text)} "


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


class CheckSyntaxError(ValueError):
    """A check that is not in the language: unknown kind, missing or malformed argument."""


# kind -> what its argument is: "" none, "int", "lang", "phrase", "phrases"
ARGS: dict[str, str] = {
    "max_words": "int", "min_words": "int", "max_sentences": "int", "min_sentences": "int",
    "list": "", "no_list": "", "numbered": "", "headings": "", "question": "", "no_question": "",
    "language": "lang", "in_language": "lang",
    "forbid": "phrase", "contains": "phrase", "starts_with": "phrase", "ends_with": "phrase",
    "contains_any": "phrases",
}  # fmt: skip
PHRASE_KINDS = tuple(k for k, arg in ARGS.items() if arg in ("phrase", "phrases"))  # checks on wording
REQUIRES_PHRASE = tuple(k for k in PHRASE_KINDS if k != "forbid")  # an answer must write the phrase
_NEGATION = {"list": "no_list", "question": "no_question", "contains": "forbid", "no_list": "list",
             "no_question": "question", "forbid": "contains"}  # fmt: skip
MAX_PHRASES, MAX_PHRASE_WORDS, MAX_NUMBER = 8, 8, 5000
REFINES = {"numbered": "list", "in_language": "language"}  # every answer passing the first passes the second


def _phrase(raw: str) -> str:
    phrase = normalize(raw)
    if not phrase or len(phrase.split()) > MAX_PHRASE_WORDS:
        raise CheckSyntaxError(f"a phrase of 1 to {MAX_PHRASE_WORDS} words is needed, got {raw!r}")
    return phrase


def _arg(kind: str, raw: str) -> str:
    want = ARGS[kind]
    raw = raw.strip()
    if not want:
        if raw:
            raise CheckSyntaxError(f"{kind} takes no argument")
        return ""
    if not raw:
        raise CheckSyntaxError(f"{kind} needs an argument")
    if want == "int":
        if not raw.isdigit() or not 0 < int(raw) <= MAX_NUMBER:
            raise CheckSyntaxError(f"{kind} needs a whole number from 1 to {MAX_NUMBER}, got {raw!r}")
        return str(int(raw))
    if want == "lang":
        code = {v.lower(): k for k, v in LANGUAGE_NAMES.items()}.get(raw.lower(), raw.lower())
        if code not in LANGUAGE_NAMES:
            raise CheckSyntaxError(f"{kind} needs one of {', '.join(LANGUAGE_NAMES)}, got {raw!r}")
        return code
    if want == "phrase":
        return _phrase(raw)
    phrases = list(dict.fromkeys(_phrase(p) for p in raw.split("|") if p.strip()))
    if not 1 <= len(phrases) <= MAX_PHRASES:
        raise CheckSyntaxError(f"{kind} needs 1 to {MAX_PHRASES} phrases separated by |")
    return "|".join(phrases)


_TESTS: dict[str, Callable[[str, str], bool]] = {
    "max_words": lambda t, a: word_count(t) <= int(a),
    "min_words": lambda t, a: word_count(t) >= int(a),
    "max_sentences": lambda t, a: sentence_count(t) <= int(a),
    "min_sentences": lambda t, a: sentence_count(t) >= int(a),
    "list": lambda t, a: has_list(t),
    "no_list": lambda t, a: not has_list(t),
    "numbered": lambda t, a: has_numbered_steps(t),
    "headings": lambda t, a: has_headings(t),
    "question": lambda t, a: ends_with_question(t),
    "no_question": lambda t, a: not ends_with_question(t),
    "language": lambda t, a: language(t) in (a, "unknown"),  # undetectable short answers pass
    "in_language": lambda t, a: language(t) == a,  # strict
    "forbid": lambda t, a: not contains_phrase(t, a),
    "contains": contains_phrase,
    "contains_any": lambda t, a: any(contains_phrase(t, p) for p in a.split("|")),
    "starts_with": lambda t, a: normalize(t).startswith(a),
    "ends_with": lambda t, a: f" {normalize(t)}".endswith(f" {a}"),
}
assert set(_TESTS) == set(ARGS)


class Rated(Protocol):
    prompt: str
    response: str


@dataclass(frozen=True, slots=True)
class Check:
    """One predicate of the language; build it with `Check.parse` when the text comes from
    outside (an LLM, a spec file), which validates it. `scope`: a phrase the question must
    mention for the check to ask anything of the answer."""

    kind: str
    arg: str = ""
    scope: str = ""

    def test(self, text: str, question: str | None = None) -> bool:
        """Does the answer `text` follow the check? A scoped check needs the question: outside
        its scope every answer follows it."""
        if self.scope:
            if question is None:
                raise ValueError(f"the scoped check {self} needs the question")
            if not contains_phrase(question, self.scope):
                return True
        try:
            return _TESTS[self.kind](text, self.arg)
        except KeyError:
            raise ValueError(f"unknown check {self.kind!r}") from None

    def passes(self, answer: Rated) -> bool:
        return self.test(answer.response, answer.prompt)

    def scoped(self, scope: str) -> Check:
        return Check(self.kind, self.arg, _phrase(scope) if scope else "")

    def __str__(self) -> str:
        body = f"{self.kind}:{self.arg}" if self.arg else self.kind
        return f"when:{self.scope};{body}" if self.scope else body

    @classmethod
    def parse(cls, raw: str) -> Check:
        text = raw.strip().strip("`").strip()
        scope = ""
        if text.lower().startswith("when:"):
            scope, sep, text = text[5:].partition(";")
            if not sep:
                raise CheckSyntaxError("when: needs a phrase and ';' before the check, e.g. when:refund;contains:policy")
            scope, text = _phrase(scope), text.strip()
        negate = text.lower().startswith("not:")
        if negate:
            text = text[4:]
        kind, _, arg = text.partition(":")
        kind = kind.strip().lower()
        if negate:
            if kind not in _NEGATION:
                raise CheckSyntaxError(f"not: applies to {', '.join(sorted(_NEGATION))}, not {kind!r}")
            kind = _NEGATION[kind]
        if kind not in ARGS:
            raise CheckSyntaxError(f"unknown check kind {kind!r}; the language has {', '.join(ARGS)}")
        return cls(kind, _arg(kind, arg), scope)


def _quoted(phrases: str) -> str:
    items = [f'"{p}"' for p in phrases.split("|")]
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + f" or {items[-1]}"


_SCOPED_RE = re.compile(r'\bWhen the question mentions "([^"\n]+)",\s*((?:[^"\n.!?]|"[^"\n]*")*[.!?]?)')


def check_text(check: Check, display: str = "") -> str:
    """The canonical words of a check: what a spec says so that `checks_from_text` finds it
    again. `display` is the phrase as users saw it (original casing)."""
    if check.scope:
        words = check_text(Check(check.kind, check.arg), display).replace(" in every answer", "")
        words = words.replace("every answer", "your answer")
        return f'When the question mentions "{check.scope}", ' + words[0].lower() + words[1:]
    k, arg = check.kind, check.arg
    if k == "max_words" and int(arg) <= 30:
        # measured on the 0.5B model: "one short sentence" is obeyed 8/8, a bare word count 2/8
        return f"Answer in one short sentence of at most {arg} words."
    words = {
        "max_words": f"Keep every answer to at most {arg} words.",
        "min_words": f"Give complete answers of at least {arg} words.",
        "max_sentences": f"Answer in at most {arg} sentences.",
        "min_sentences": f"Answer in at least {arg} sentences.",
        "list": "Format answers as a bulleted list.",
        "no_list": "Write every answer as one short paragraph, never as a list.",
        "numbered": "Write answers as numbered steps (1., 2., 3.).",
        "headings": "Organize every answer under short Markdown headings.",
        "question": "End your answer with a question that invites the user to continue.",
        "no_question": "Do not end your answer with a question.",
        "language": f"Always answer in {LANGUAGE_NAMES.get(arg, arg)}.",
        "in_language": f"Always answer in {LANGUAGE_NAMES.get(arg, arg)}.",
        "forbid": f'Never use the phrase "{display or arg}".',
        "contains": f'Include the phrase "{display or arg}" in every answer.',
        "contains_any": f"Include one of these phrases in every answer: {_quoted(display or arg)}.",
        "starts_with": f'Begin your answer with "{display or arg}".',
        "ends_with": f'End every answer with the line "{display or arg}".',
    }
    return words[k]


LANGUAGES_RE = "|".join(LANGUAGE_NAMES.values())  # English|French|...: as rules and comments name them
_Q = r"\"([^\"]+)\""


def language_check(m: re.Match[str]) -> Check:
    return Check("language", {v: k for k, v in LANGUAGE_NAMES.items()}[m.group(1).capitalize()])


def _question_check(m: re.Match[str]) -> Check:
    """"End with a question" or, after a negation in the same sentence, its opposite."""
    before = re.split(r"[.\n]", m.string[: m.start()])[-1].lower()
    return Check("no_question" if re.search(r"\b(?:not|never|don't)\s*$", before) else "question")


def _phrases(m: re.Match[str]) -> Check:
    return Check("contains_any", "|".join(normalize(p) for p in re.findall(_Q, m.group(1))))


_TEXT_CHECKS: tuple[tuple[re.Pattern[str], Callable[[re.Match[str]], Check]], ...] = (
    (re.compile(r"\b(?:at most|no more than|under|fewer than|maximum of)\s+(\d+)\s+words", re.I),
     lambda m: Check("max_words", m.group(1))),
    (re.compile(r"\bat least\s+(\d+)\s+words", re.I), lambda m: Check("min_words", m.group(1))),
    (re.compile(r"\b(?:at most|no more than|under|fewer than|maximum of)\s+(\d+)\s+sentences?", re.I),
     lambda m: Check("max_sentences", m.group(1))),
    (re.compile(r"\bat least\s+(\d+)\s+sentences", re.I), lambda m: Check("min_sentences", m.group(1))),
    (re.compile(r"\b(?:never|do not|don't|avoid)\b[^.\n\"]*?" + _Q, re.I),
     lambda m: Check("forbid", normalize(m.group(1)))),
    (re.compile(r"\binclude\w*\b[^.\n\"]*?\bthe phrase\s+" + _Q, re.I),
     lambda m: Check("contains", normalize(m.group(1)))),
    (re.compile(r"\binclude\w*\b[^.\n\"]*?\bone of (?:these|the(?:se)? following) (?:phrases|words)\b[^\"\n]*?"
                r"((?:\"[^\"]+\"(?:,\s*|\s+or\s+)?)+)", re.I), _phrases),
    (re.compile(r"\b(?:begin|start)\w*\b[^.\n\"]*?with\s+" + _Q, re.I),
     lambda m: Check("starts_with", normalize(m.group(1)))),
    (re.compile(r"\bend\w*\b[^.\n]*?with a (?:follow-up )?question", re.I), _question_check),
    (re.compile(r"\b(?:end|close|finish)\w*\b[^.\n\"]*?with\b[^.\n\"]*?" + _Q, re.I),
     lambda m: Check("ends_with", normalize(m.group(1)))),
    (re.compile(rf"\b(?:answer|respond|reply|write)\w*\s+(?:only\s+|always\s+)?in\s+({LANGUAGES_RE})\b", re.I),
     language_check),
    (
        re.compile(r"\bwithout (?:bullet(?:ed)? )?lists?\b|\bnever as a list\b|\b(?:no|avoid|never use|do not use|don't use) "
                   r"(?:bullet(?:ed)?|numbered)? ?(?:points|lists?)\b", re.I),
        lambda m: Check("no_list"),
    ),
    (re.compile(r"\b(?:as|use) a (?:bulleted|numbered) list\b", re.I), lambda m: Check("list")),
    (re.compile(r"\b(?:as|in|use|with) numbered steps\b", re.I), lambda m: Check("numbered")),
    (re.compile(r"\b(?:under|use|with)\b[^.\n]*?\bheadings\b", re.I), lambda m: Check("headings")),
)  # fmt: skip


def checks_from_text(text: str) -> list[Check]:
    """The checkable rules a spec states in words ("at most 40 words", never "X", ...), so any
    spec — hand-written or compiled, paragraph or list — can be scored on held-out pairs. A
    sentence opening 'When the question mentions "X",' states scoped checks."""
    found: list[Check] = []
    for m in _SCOPED_RE.finditer(text):
        try:
            scoped = [check.scoped(m.group(1)) for check in checks_from_text(m.group(2))]
        except CheckSyntaxError:
            continue  # a hand-written scope longer than a phrase: the sentence states no check
        found += [c for c in scoped if c not in found]
    text = _SCOPED_RE.sub(" ", text)
    for pattern, make in _TEXT_CHECKS:
        for m in pattern.finditer(text):
            check = make(m)
            if (check.arg or not ARGS[check.kind]) and check not in found:
                found.append(check)
    return found


_ATTACHED_RE = re.compile(r"\s*\[\s*check\s*:\s*([^\]]*)\]\s*", re.I)


def split_attached(rule: str) -> tuple[str, str | None]:
    """`Give an example. [check: contains_any:for example|for instance]` -> the rule's words
    and the raw check an LLM attached to it (parsed and validated by the caller)."""
    m = _ATTACHED_RE.search(rule)
    if m is None:
        return rule, None
    return (rule[: m.start()] + " " + rule[m.end() :]).strip(), m.group(1)


def written_phrases(check: Check, answers: Sequence[str]) -> Check | None:
    """The check with only the required phrases some answer already contains (None when none
    is left); checks that require no phrase are returned unchanged."""
    if check.kind not in REQUIRES_PHRASE:
        return check
    if check.kind == "contains_any":
        kept = [p for p in check.arg.split("|") if any(contains_phrase(a, p) for a in answers)]
        return replace(check, arg="|".join(kept)) if kept else None
    return check if any(contains_phrase(a, check.arg) for a in answers) else None
