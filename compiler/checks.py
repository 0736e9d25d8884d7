"""The check language: small declarative predicates a program tests on an answer.

A check is data, never code: `KIND` or `KIND:ARG`, parsed against the registry `KINDS`, so a
principle proposed by an LLM (or read from a spec file) can carry one without anything of it
being executed. Each kind is one `Kind` entry holding all there is to know of it: its argument,
its test, the canonical words that state it (`check_text`) and the patterns that read those
words back (`checks_from_text`), so a principle and its check travel together through the spec
text itself; the patterns that read it from a down-vote comment (`check_of_comment`); its
family, negation and refinement; and its place in the menu the LLM is shown. The stages ask the
registry; none lists kinds of its own.

    check := ["when:" PHRASE ";"] ["not:"] KIND [":" ARG]
    ARG   := a whole number | a language (en, fr, de, es, it, pt) | a phrase | phrase|phrase|...
    "not:" is sugar for a kind's negation: not:list = no_list, not:contains:X = forbid:X.
    "when:PHRASE;" scopes a check to questions that mention PHRASE ("when:t-shirt;contains:blue":
    recommend the blue one when asked about t-shirts); an answer to any other question follows it.

This module imports only compiler/text.py: the rule language loads without the ledger, the LLM
client or metrics (tests/test_check_kinds.py checks it).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Literal, Protocol

from .text import LANGUAGE_NAMES, language, normalize, word_count

_LIST_RE = re.compile(r"^\s*(?:[-*•+]|\d+[.)])\s+\S", re.M)
_NUMBERED_RE = re.compile(r"^\s*\d+[.)]\s+\S", re.M)
_HEADING_RE = re.compile(r"^\s{0,3}(?:#{1,6}\s+\S.*|\*\*[^*\n]{2,60}\*\*:?)\s*$", re.M)
_SENTENCE_END_RE = re.compile(r"[.!?]+(?:[\"')\]]*)(?=\s|$)")
_CLOSED_RE = re.compile(r"[.!?][\"')\]]*$")
# pictographs, symbols and dingbats (☀ ✅ ❤ ⭐ 😀 🚀): what users call emoji
_EMOJI_RE = re.compile("[\U0001f000-\U0001faff\u2600-\u27bf\u2b50\u2b55]")
MAX_PHRASES, MAX_PHRASE_WORDS, MAX_NUMBER = 8, 8, 5000


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


def has_emoji(text: str) -> bool:
    return bool(_EMOJI_RE.search(text))


def contains_phrase(text: str, phrase: str) -> bool:
    return f" {phrase} " in f" {normalize(text)} "


class CheckSyntaxError(ValueError):
    """A check that is not in the language: unknown kind, missing or malformed argument."""


class Rated(Protocol):
    """What a check reads: any answer with its prompt (read-only, so frozen records qualify)."""

    @property
    def prompt(self) -> str: ...
    @property
    def response(self) -> str: ...


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
            kind = KINDS[self.kind]
        except KeyError:
            raise ValueError(f"unknown check {self.kind!r}") from None
        return kind.test(text, self.arg)

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
                raise CheckSyntaxError(
                    "when: needs a phrase and ';' before the check, e.g. when:refund;contains:policy"
                )
            scope, text = _phrase(scope), text.strip()
        negate = text.lower().startswith("not:")
        if negate:
            text = text[4:]
        name, _, arg = text.partition(":")
        name = name.strip().lower()
        if negate:
            negatable = sorted(k.name for k in KINDS.values() if k.negation)
            if name not in negatable:
                raise CheckSyntaxError(f"not: applies to {', '.join(negatable)}, not {name!r}")
            name = KINDS[name].negation
        if name not in KINDS:
            raise CheckSyntaxError(f"unknown check kind {name!r}; the language has {', '.join(KINDS)}")
        return cls(name, _arg(KINDS[name], arg), scope)


# -- the registry --------------------------------------------------------------------------
ArgType = Literal["", "int", "lang", "phrase", "phrases"]
Reader = Callable[["Kind", re.Match[str]], "Check | None"]


def read_arg(kind: Kind, m: re.Match[str]) -> Check | None:
    """The check a pattern of `kind` matched: group 1 is its argument, in the words of a spec
    or a comment (a number, a language's name, a phrase, quoted phrases)."""
    if kind.arg == "lang":
        return Check(kind.name, _LANGUAGE_CODES[m.group(1).capitalize()])
    if kind.arg == "phrase":
        return Check(kind.name, normalize(m.group(1)))
    if kind.arg == "phrases":
        return Check(kind.name, "|".join(normalize(p) for p in quoted_phrases(m.group(1))))
    return Check(kind.name, m.group(1) if kind.arg else "")


_NEGATION = r"\b(?:not|never|don'?t|stop|no more|without)(?:[^\S\n]+\w+)?"  # at most one word after it
_NEGATED_RE = re.compile(_NEGATION + r"[^\S\n]*$", re.I)
_NEGATED = _NEGATION + r"[^\S\n]+"  # opens a pattern of a negative kind
_LISTS = r"(?:any[^\S\n]+)?(?:bullet(?:ed)?[^\S\n]+|numbered[^\S\n]+)?(?:points|lists?)\b"  # what a negated list names


def unless_negated(kind: Kind, m: re.Match[str]) -> Check | None:
    """`read_arg`, unless a negation stands right before the match in its sentence ("do not
    end with a question", "don't mention 'X'"): that one is the negative kind's to read."""
    before = re.split(r"[.\n]", m.string[: m.start()])[-1]
    return None if _NEGATED_RE.search(before) else read_arg(kind, m)


def _rx(*patterns: str) -> tuple[re.Pattern[str], ...]:
    return tuple(re.compile(p, re.I) for p in patterns)


@dataclass(frozen=True)
class Kind:
    """One kind of check. Adding a kind is adding one of these to KINDS, and its examples to
    tests/test_check_kinds.py: every table a stage uses is derived from the registry."""

    name: str
    arg: ArgType  # "" none, "int" a whole number, "lang" a language code, "phrase", "phrases" (a|b|c)
    test: Callable[[str, str], bool]  # (answer, argument) -> does the answer follow it
    words: Callable[[str], str]  # (argument as users saw it) -> the canonical sentence a spec states
    reads: tuple[re.Pattern[str], ...] = ()  # read the canonical words back (group 1: the argument)
    asks: tuple[re.Pattern[str], ...] = ()  # read it from a down-vote comment (group 1: the argument)
    read: Reader = read_arg  # a match of `reads` or `asks` -> its check (None: not this kind after all)
    family: str = ""  # kinds of one family state one setting and compete for one place ("": its own)
    many: bool = False  # a spec may hold many, one per argument (phrases): each check its own family
    negation: str = ""  # the kind "not:" turns it into
    refines: str = ""  # every answer passing it passes this kind too
    stated_as: str = ""  # its words state (and read back as) this kind
    lower_bound: str = ""  # it is an upper bound, and this kind the lower bound of the same count
    phrase_at: Literal["", "nowhere", "anywhere", "start", "end"] = ""  # where its phrase must be
    theme: str = ""  # the down-vote comment theme that speaks of it (evidence.COMMENT_THEMES)
    menu: int = 0  # its place in the check menu the LLM is shown (0: not offered)

    @property
    def stated(self) -> str:
        """The kind this one's words read back as."""
        return self.stated_as or self.name


def _quoted(phrases: str) -> str:
    items = [f'"{p}"' for p in phrases.split("|")]
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + f" or {items[-1]}"


def _max_words(n: str) -> str:
    if int(n) <= 30:
        # measured on the 0.5B model: "one short sentence" is obeyed 8/8, a bare word count 2/8
        return f"Answer in one short sentence of at most {n} words."
    return f"Keep every answer to at most {n} words."


_LANGUAGES = "|".join(LANGUAGE_NAMES.values())  # English|French|...: as rules and comments name them
_LANGUAGE_CODES = {v: k for k, v in LANGUAGE_NAMES.items()}
_Q = r"\"([^\"]+)\""  # a phrase as a spec quotes it
# a phrase as a comment quotes it, in any quotes, followed by the end or a space
_QUOTE = "[\"'\u2018\u2019\u201c\u201d]"
_QUOTED = _QUOTE + '([^"\u2018\u2019\u201c\u201d]{2,60}?)' + _QUOTE + r"(?=\W*(?:$|\s))"
_QUOTED_ITEM_RE = re.compile(_QUOTE + '([^"\u2018\u2019\u201c\u201d]{2,60}?)' + _QUOTE)
_NO_QUOTE = "[^\"'\u2018\u201c]"
_AT_MOST = r"(?:at most|no more than|under|fewer than|maximum of)"
_AT_MOST_SAID = r"(?:under|at most|no more than|max(?:imum)?(?: of)?|fewer than|less than|within)"
_AT_LEAST_SAID = r"(?:at least|no less than|no fewer than|(?:a )?minimum of)"


def quoted_phrases(text: str) -> list[str]:
    """The phrases `text` quotes: in double quotes as a spec writes them, else in any quotes."""
    return re.findall(_Q, text) or _QUOTED_ITEM_RE.findall(text)


# Order matters once: when the comment patterns of several kinds match one comment, the first
# kind wins ("no bullet points": no_list before list). The kinds comments were first read for
# come first; a kind whose comments are read since comes after them, so it only reads comments
# none of them reads.
_WANT = r"(?:^|[.!?]\s*|\bplease\s+|\b(?:should|could|would|can)\s+(?:you\s+)?)(?:always\s+|also\s+)?"  # asks for it
KINDS: dict[str, Kind] = {k.name: k for k in (
    Kind("forbid", "phrase", lambda t, a: not contains_phrase(t, a), lambda p: f'Never use the phrase "{p}".',
         reads=_rx(r"\b(?:never|do not|don't|avoid)\b[^.\n\"]*?" + _Q),
         asks=_rx(r"\b(?:don'?t|do not|never|stop|no more|without)\b" + _NO_QUOTE + r"{0,30}?"
                  r"(?:say(?:ing)?|use|using|writ\w*|start\w*(?: with)?)\s+" + _QUOTED),
         many=True, negation="contains", phrase_at="nowhere", menu=3),
    Kind("ends_with", "phrase", lambda t, a: f" {normalize(t)}".endswith(f" {a}"),
         lambda p: f'End every answer with the line "{p}".',
         reads=_rx(r"\b(?:end|close|finish)\w*\b[^.\n\"]*?with\b[^.\n\"]*?" + _Q),
         asks=_rx(r"\b(?:end|close|finish|sign off)\w*\b" + _NO_QUOTE + r"{0,30}?\b(?:with|by saying)\s+" + _QUOTED),
         phrase_at="end"),
    Kind("starts_with", "phrase", lambda t, a: normalize(t).startswith(a), lambda p: f'Begin your answer with "{p}".',
         reads=_rx(r"\b(?:begin|start)\w*\b[^.\n\"]*?with\s+" + _Q),
         asks=_rx(r"\b(?:begin|start)\w*\b" + _NO_QUOTE + r"{0,30}?\bwith\s+" + _QUOTED),
         phrase_at="start"),
    Kind("language", "lang", lambda t, a: language(t) in (a, "unknown"),  # undetectable short answers pass
         lambda code: f"Always answer in {LANGUAGE_NAMES.get(code, code)}.",
         reads=_rx(rf"\b(?:answer|respond|reply|write)\w*\s+(?:only\s+|always\s+)?in\s+({_LANGUAGES})\b"),
         asks=_rx(rf"\b({_LANGUAGES})\b"), theme="language"),
    Kind("in_language", "lang", lambda t, a: language(t) == a,  # strict: an undetectable answer fails
         lambda code: f"Always answer in {LANGUAGE_NAMES.get(code, code)}.",
         family="language", refines="language", stated_as="language", theme="language"),
    Kind("max_words", "int", lambda t, a: word_count(t) <= int(a), _max_words,
         reads=_rx(rf"\b{_AT_MOST}\s+(\d+)\s+words"), asks=_rx(rf"\b{_AT_MOST_SAID}\s+(\d+)\s+words\b"),
         lower_bound="min_words", theme="length", menu=4),
    Kind("no_list", "", lambda t, a: not has_list(t), lambda _: "Write every answer as one short paragraph, never as a list.",
         reads=_rx(r"\bwithout (?:bullet(?:ed)? )?lists?\b|\bnever as a list\b|\b(?:no|avoid|never use|do not use|don't use) "
                   r"(?:bullet(?:ed)?|numbered)? ?(?:points|lists?)\b",
                   _NEGATED + _LISTS),  # "never create bulleted lists", "don't write lists"
         asks=_rx(r"\b(?:no|without|not as a|don'?t use|do not use|stop using|avoid)\s+"
                  r"(?:bullet(?:ed)?\s*(?:points?|lists?)?|lists?|numbered lists?)\b", _NEGATED + _LISTS),
         family="list", negation="list", theme="format", menu=9),
    Kind("list", "", lambda t, a: has_list(t), lambda _: "Format answers as a bulleted list.",
         reads=_rx(r"\b(?:as|use) a (?:bulleted|numbered) list\b"),
         asks=_rx(r"\bbullet(?:ed)?\s*(?:points?|lists?)?\b|\b(?:as|use|in) a (?:bulleted |numbered )?list\b"
                  r"|\blist (?:form|format)\b"),
         read=unless_negated, negation="no_list", theme="format", menu=8),
    Kind("question", "", lambda t, a: ends_with_question(t),
         lambda _: "End your answer with a question that invites the user to continue.",
         reads=_rx(r"\bend\w*\b[^.\n]*?with a (?:follow-up )?question"),
         asks=_rx(r"\bend\w*\b[^.]{0,30}?\b(?:question|asking me)\b"), read=unless_negated,
         negation="no_question", menu=10),
    # -- comments for the kinds below are read since the check-kind registry ---------------
    Kind("no_question", "", lambda t, a: not ends_with_question(t), lambda _: "Do not end your answer with a question.",
         reads=_rx(_NEGATED + r"end\w*\b[^.\n]*?with a (?:follow-up )?question"),
         asks=_rx(_NEGATED + r"(?:end|finish|clos)\w*\b[^.]{0,30}?\bquestions?\b|\bstop asking (?:me )?questions\b"),
         family="question", negation="question"),
    Kind("min_words", "int", lambda t, a: word_count(t) >= int(a), lambda n: f"Give complete answers of at least {n} words.",
         reads=_rx(r"\bat least\s+(\d+)\s+words"), asks=_rx(rf"\b{_AT_LEAST_SAID}\s+(\d+)\s+words\b"), theme="length"),
    Kind("max_sentences", "int", lambda t, a: sentence_count(t) <= int(a), lambda n: f"Answer in at most {n} sentences.",
         reads=_rx(rf"\b{_AT_MOST}\s+(\d+)\s+sentences?"), asks=_rx(rf"\b{_AT_MOST_SAID}\s+(\d+)\s+sentences?\b"),
         lower_bound="min_sentences", theme="length", menu=5),
    Kind("min_sentences", "int", lambda t, a: sentence_count(t) >= int(a), lambda n: f"Answer in at least {n} sentences.",
         reads=_rx(r"\bat least\s+(\d+)\s+sentences"), asks=_rx(rf"\b{_AT_LEAST_SAID}\s+(\d+)\s+sentences\b"),
         theme="length"),
    Kind("numbered", "", lambda t, a: has_numbered_steps(t), lambda _: "Write answers as numbered steps (1., 2., 3.).",
         reads=_rx(r"\b(?:as|in|use|with) numbered steps\b"),
         asks=_rx(r"\b(?:use|with|in|as|give me|want|need|prefer)\s+(?:\w+\s+)?numbered steps\b"
                  r"|\bnumber (?:the|your|each) steps?\b"),
         read=unless_negated, family="list", refines="list", theme="format", menu=6),
    Kind("headings", "", lambda t, a: has_headings(t), lambda _: "Organize every answer under short Markdown headings.",
         reads=_rx(r"\b(?:under|use|with)\b[^.\n]*?\bheadings\b"),
         asks=_rx(r"\b(?:use|add|need|want|give me)\b[^.\n]{0,20}?\b(?:section )?(?:headings|headers)\b"),
         read=unless_negated, theme="format", menu=7),
    Kind("contains_any", "phrases", lambda t, a: any(contains_phrase(t, p) for p in a.split("|")),
         lambda ps: f"Include one of these phrases in every answer: {_quoted(ps)}.",
         reads=_rx(r"\binclude\w*\b[^.\n\"]*?\bone of (?:these|the(?:se)? following) (?:phrases|words)\b[^\"\n]*?"
                   r"((?:\"[^\"]+\"(?:,\s*|\s+or\s+)?)+)"),
         asks=_rx(_WANT + r"(?:include|use|say|mention|add)\b" + _NO_QUOTE + r"{0,20}?\b(?:one of|either)\b" + _NO_QUOTE
                  + r"{0,20}?((?:" + _QUOTE + r"[^\"\u2018\u2019\u201c\u201d]{2,60}?" + _QUOTE + r"(?:,\s*|\s+or\s+)?){2,})"),
         read=unless_negated, many=True, phrase_at="anywhere", menu=1),
    Kind("contains", "phrase", contains_phrase, lambda p: f'Include the phrase "{p}" in every answer.',
         reads=_rx(r"\binclude\w*\b[^.\n\"]*?\bthe phrase\s+" + _Q),
         asks=_rx(_WANT + r"(?:include|mention|use|say|add)\s+(?:the\s+(?:phrase|words?)\s+)?" + _QUOTED),
         read=unless_negated, many=True, negation="forbid", phrase_at="anywhere", menu=2),
    Kind("no_emoji", "", lambda t, a: not has_emoji(t), lambda _: "Never use emoji.",
         reads=_rx(r"\b(?:never use|do not use|don't use|avoid|without)\s+emojis?\b"),
         asks=_rx(r"\b(?:no|stop using|don'?t use|do not use|without|avoid|too many|fewer|less)\s+(?:the\s+|so many\s+)?"
                  r"emoj(?:i|is|ies)\b")),
)}  # fmt: skip


def _registry_errors() -> list[str]:
    """What would make the registry inconsistent: a relation to a kind that is not in it, a
    negation that is not mutual, two kinds in one place of the LLM's menu."""
    errors = []
    for k in KINDS.values():
        for field in ("family", "negation", "refines", "stated_as", "lower_bound"):
            other = getattr(k, field)
            if other and other not in KINDS:
                errors.append(f"{k.name}.{field} = {other!r} is not a kind")
        if k.negation in KINDS and KINDS[k.negation].negation != k.name:
            errors.append(f"{k.name} negates {k.negation}, which does not negate it")
    menu = [k.menu for k in KINDS.values() if k.menu]
    if len(menu) != len(set(menu)):
        errors.append("two kinds share a place in the LLM's menu")
    return errors


if _errors := _registry_errors():
    raise RuntimeError("compiler.checks.KINDS: " + "; ".join(_errors))

PHRASE_KINDS = frozenset(k.name for k in KINDS.values() if k.arg in ("phrase", "phrases"))  # checks on wording
REQUIRES_PHRASE = frozenset(k.name for k in KINDS.values() if k.phrase_at in ("anywhere", "start", "end"))
REFINED = frozenset(k.refines for k in KINDS.values() if k.refines)  # kinds a stricter kind refines
_PLACEHOLDERS = {"": "", "int": "N", "lang": "fr", "phrase": "phrase", "phrases": "phrase one|phrase two"}


def llm_menu() -> str:
    """The checks the LLM is offered, in the order it is shown them, as it may write them."""
    offered = sorted((k for k in KINDS.values() if k.menu), key=lambda k: k.menu)
    return ", ".join(f"[check: {k.name}:{_PLACEHOLDERS[k.arg]}]" if k.arg else f"[check: {k.name}]" for k in offered)


def family(check: Check) -> str:
    """Checks of one family state one setting ("at most 25 words" and "at most 50 words", "use a
    list" and "never a list"); a phrase to use or avoid is its own family."""
    kind = KINDS[check.kind]
    return str(check) if kind.many else kind.family or kind.name


def stated(check: Check) -> Check:
    """The check its words read back as (`in_language` is stated as `language`)."""
    return replace(check, kind=KINDS[check.kind].stated)


def _phrase(raw: str) -> str:
    phrase = normalize(raw)
    if not phrase or len(phrase.split()) > MAX_PHRASE_WORDS:
        raise CheckSyntaxError(f"a phrase of 1 to {MAX_PHRASE_WORDS} words is needed, got {raw!r}")
    return phrase


def _arg(kind: Kind, raw: str) -> str:
    raw = raw.strip()
    if not kind.arg:
        if raw:
            raise CheckSyntaxError(f"{kind.name} takes no argument")
        return ""
    if not raw:
        raise CheckSyntaxError(f"{kind.name} needs an argument")
    if kind.arg == "int":
        if not raw.isdigit() or not 0 < int(raw) <= MAX_NUMBER:
            raise CheckSyntaxError(f"{kind.name} needs a whole number from 1 to {MAX_NUMBER}, got {raw!r}")
        return str(int(raw))
    if kind.arg == "lang":
        code = {v.lower(): k for k, v in LANGUAGE_NAMES.items()}.get(raw.lower(), raw.lower())
        if code not in LANGUAGE_NAMES:
            raise CheckSyntaxError(f"{kind.name} needs one of {', '.join(LANGUAGE_NAMES)}, got {raw!r}")
        return code
    if kind.arg == "phrase":
        return _phrase(raw)
    phrases = list(dict.fromkeys(_phrase(p) for p in raw.split("|") if p.strip()))
    if not 1 <= len(phrases) <= MAX_PHRASES:
        raise CheckSyntaxError(f"{kind.name} needs 1 to {MAX_PHRASES} phrases separated by |")
    return "|".join(phrases)


def _complete(check: Check) -> bool:
    """A check a pattern read has the argument its kind needs (a quoted phrase can normalize
    to nothing)."""
    return bool(check.arg) or not KINDS[check.kind].arg


# -- words: what a spec says, and reading it back ----------------------------------------------
_SCOPED_RE = re.compile(r'\bWhen the question mentions "([^"\n]+)",\s*((?:[^"\n.!?]|"[^"\n]*")*[.!?]?)')


def check_text(check: Check, display: str = "") -> str:
    """The canonical words of a check: what a spec says so that `checks_from_text` finds it
    again. `display` is the phrase as users saw it (original casing)."""
    if check.scope:
        words = check_text(Check(check.kind, check.arg), display).replace(" in every answer", "")
        words = words.replace("every answer", "your answer")
        return f'When the question mentions "{check.scope}", ' + words[0].lower() + words[1:]
    return KINDS[check.kind].words(display or check.arg)


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
    for kind in KINDS.values():
        for pattern in kind.reads:
            for m in pattern.finditer(text):
                check = kind.read(kind, m)
                if check is not None and _complete(check) and check not in found:
                    found.append(check)
    return found


def check_of_comment(comment: str) -> tuple[Check, str] | None:
    """The one checkable wish a down-vote comment names ("please answer in French", "end with
    'Hope this helps!'", "don't say 'Certainly'", "use bullet points", "under 25 words"), with
    the phrase(s) as the user wrote them; None when it names nothing checkable ("too long"
    alone has no number: the length evidence measures that one)."""
    for kind in KINDS.values():
        for pattern in kind.asks:
            check = kind.read(kind, m) if (m := pattern.search(comment)) else None
            if m and check is not None and _complete(check):
                if kind.arg == "phrases":
                    return check, "|".join(p.strip() for p in quoted_phrases(m.group(1)))
                return check, m.group(1).strip() if kind.arg == "phrase" else ""
    return None


def written_phrases(check: Check, answers: Sequence[str]) -> Check | None:
    """The check with only the required phrases some answer already contains (None when none
    is left); checks that require no phrase are returned unchanged."""
    if check.kind not in REQUIRES_PHRASE:
        return check
    kept = [p for p in check.arg.split("|") if any(contains_phrase(a, p) for a in answers)]
    return replace(check, arg="|".join(kept)) if kept else None
