"""The text toolkit every stage shares: words, n-grams, stopwords, language, sentences and rules.

One home so that no stage imports another for a helper, and so that the rule language
(compiler/checks.py) imports nothing but this module: no ledger, no metrics, no LLM client.
Everything here is a pure function of strings.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence

_WORD_RE = re.compile(r"[\w']+")

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
# every language's stopwords and the English function words a phrase worth learning never is
ALL_STOPWORDS = frozenset().union(*STOPWORDS.values()) | frozenset(
    "it's i'm you're we they he she my me our us so do if or but at by from was were will would could".split()
)
LANGUAGE_NAMES = {"en": "English", "fr": "French", "de": "German", "es": "Spanish", "it": "Italian", "pt": "Portuguese"}


# -- words ----------------------------------------------------------------------------------
def normalize(text: str) -> str:
    """Lower-case words joined by single spaces: how phrases are compared and stored."""
    return " ".join(_WORD_RE.findall(text.lower()))


def tokens(text: str) -> set[str]:
    return set(_WORD_RE.findall(text.lower()))


def jaccard(a: set[str], b: set[str]) -> float:
    return len(a & b) / len(a | b) if a or b else 1.0


def word_ngrams(words: Sequence[str], n_max: int) -> Iterator[tuple[str, ...]]:
    """Every run of 1..n_max consecutive words, shortest first."""
    for n in range(1, n_max + 1):
        for i in range(len(words) - n + 1):
            yield tuple(words[i : i + n])


def word_count(text: str) -> int:
    return len(text.split())


_CONTENT_WORD_RE = re.compile(r"[a-z0-9']+")


def _stem(word: str) -> str:
    for suffix in ("ing", "ed", "es", "s", "ly"):
        if len(word) > len(suffix) + 3 and word.endswith(suffix):
            return word[: -len(suffix)]
    return word


def content_words(text: str) -> set[str]:
    """The words that carry meaning, crudely stemmed: what two rules saying the same share."""
    return {_stem(w) for w in _CONTENT_WORD_RE.findall(text.lower()) if w not in ALL_STOPWORDS}


def display_phrase(phrase: str, texts: Sequence[str]) -> str:
    """The normalized `phrase` as a user saw it (original casing), from the first of `texts`
    that has it; else the phrase itself."""
    pattern = re.compile(r"\b" + r"\W+".join(map(re.escape, phrase.split())) + r"\b", re.I)
    for text in texts:
        if m := pattern.search(text):
            return m.group(0)
    return phrase


def language(text: str) -> str:
    """A stopword vote: the language with the most stopword hits, `unknown` when too few,
    `other` for a mostly non-Latin script."""
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


# -- sentences and rules --------------------------------------------------------------------
_BULLET_RE = re.compile(r"^\s*(?:[-*•+]|\d+[.)]|rule\s*\d*:)\s*", re.I)
_SENTENCE_RE = re.compile(r"(?<=[.!?])\s+(?=[A-Z\"'])")
_ATTACHED_RE = re.compile(r"\s*\[\s*check\s*:\s*([^\]]*)\]\s*", re.I)
# echoes of the proposer's prompt; "[check:" left after the rule's own check is the check menu copied out
_JUNK = ("preferred", "rejected", "question:", "answer a", "answer b", "here are", "rules:", "[check")


def split_sentences(text: str) -> list[str]:
    """Sentences, line by line, list markers stripped: the rules a prose or listed spec states."""
    out = []
    for block in text.splitlines():
        block = _BULLET_RE.sub("", block).strip()
        out += [s.strip() for s in _SENTENCE_RE.split(block) if s.strip()]
    return out


def split_attached(rule: str) -> tuple[str, str | None]:
    """`Give an example. [check: contains_any:for example|for instance]` -> the rule's words
    and the raw check an LLM attached to it (parsed and validated by the caller)."""
    m = _ATTACHED_RE.search(rule)
    if m is None:
        return rule, None
    return (rule[: m.start()] + " " + rule[m.end() :]).strip(), m.group(1)


def parse_rules(text: str) -> list[str]:
    """An LLM's list of rules, one per line; preambles, fragments and echoes of the prompt
    dropped. A check the LLM attached (`[check: ...]`) stays at the end of its rule."""
    rules: list[str] = []
    for line in text.splitlines():
        if not _BULLET_RE.match(line):
            continue
        rule, attached = split_attached(_BULLET_RE.sub("", line))
        rule = rule.strip().strip("*` ").strip()
        if len(rule) > 1 and rule[0] == rule[-1] and rule[0] in "\"'":
            rule = rule[1:-1].strip()  # the whole rule quoted, not a quoted phrase inside it
        words = [w for w in rule.split() if any(c.isalpha() for c in w)]
        if not (3 <= len(words) <= 30) or any(j in rule.lower() for j in _JUNK):
            continue
        rule = rule[0].upper() + rule[1:]
        if rule[-1] not in ".!?":
            rule += "."
        if normalize(rule) not in {normalize(split_attached(r)[0]) for r in rules}:
            rules.append(f"{rule} [check: {attached}]" if attached else rule)
    return rules
