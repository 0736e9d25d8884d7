"""Measured evidence: general properties that separate preferred from rejected answers.

A small model is a weak proposer, so proposals are grounded in what can be counted: length,
list format, numbered steps, headings, language, a closing question, the words answers start
with, phrases that appear only in rejected answers or only in preferred ones, and what
down-vote comments complain about. Each property becomes a
candidate principle with a `Check` only when it separates the training contrasts clearly; it
then goes through the same held-out validation as every other principle.

Comments are data, never instructions: one that tries to instruct the compiler
(comments.flag_comment) is set aside, reported, and never becomes a principle nor reaches the
proposer; a wish learned from comments needs `min_users` distinct commenters.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Sequence
from typing import Any

from .checks import KINDS, PHRASE_KINDS, REFINED, Check, check_of_comment, check_text
from .comments import down_comments
from .dataset import Example, Pair, Split
from .principle import Rule, Source, mostly_explained
from .text import ALL_STOPWORDS, display_phrase, language, normalize, word_count, word_ngrams

# what down-vote comments complain about -> a principle (with a check when one is measurable)
COMMENT_THEMES: dict[str, tuple[tuple[str, ...], str]] = {
    "length": (("long", "verbose", "wordy", "shorter", "concise", "rambl", "too much", "brief"), ""),
    "language": (("english", "french", "german", "spanish", "italian", "portuguese", "language"), ""),
    "tone": (
        ("rude", "reluctant", "sarcas", "condescend", "impolite", "dismissive", "lazy", "unhelpful", "attitude"),
        "Be warm, polite and willing to help; never sound reluctant or dismissive.",
    ),
    "accuracy": (
        ("wrong", "incorrect", "false", "made up", "hallucinat", "not true", "inaccurate", "fake"),
        "Answer accurately and factually; never invent facts.",
    ),
    "format": (("list", "bullet", "format", "markdown"), ""),
}


def measure(check: Check, contrasts: Sequence[Pair]) -> tuple[int, set[str]]:
    """(relevant, agreeing): how many pairs the check passes one answer of only, and the ids of
    those where it passes the preferred one."""
    relevant, agreeing = 0, set()
    for p in contrasts:
        a, b = check.passes(p.chosen), check.passes(p.rejected)
        if a != b:
            relevant += 1
            if a:
                agreeing.add(p.id)
    return relevant, agreeing


def _ngrams(text: str, n_max: int = 3) -> set[str]:
    return {" ".join(gram) for gram in word_ngrams(normalize(text).split(), n_max)
            if not all(w in ALL_STOPWORDS for w in gram) and not (len(gram) == 1 and len(gram[0]) < 3)}  # fmt: skip


def _length_checks(contrasts: Sequence[Pair]) -> list[Check]:
    chosen = sorted(word_count(p.chosen.response) for p in contrasts)
    rejected = sorted(word_count(p.rejected.response) for p in contrasts)
    if not chosen:
        return []

    def quantile(xs: list[int], q: float) -> int:
        return xs[min(len(xs) - 1, int(q * len(xs)))]

    step = 5 if quantile(chosen, 0.8) < 50 else 10
    upper = math.ceil(quantile(chosen, 0.8) / step) * step
    lower = max(step, (quantile(chosen, 0.2) // step) * step)
    checks = [Check("max_words", str(max(upper, step)))]
    if lower > quantile(rejected, 0.5):
        checks.append(Check("min_words", str(lower)))
    return checks


def _phrase_checks(contrasts: Sequence[Pair], min_support: int, limit: int, *, wanted: bool) -> list[tuple[Check, str]]:
    """Phrases in at least `min_support` answers of one side and (almost) none of the other:
    rejected-only phrases become `forbid` (what users dislike), preferred-only ones `contains`
    (what users like: "for example", "next step", a sign-off no menu names)."""
    in_side: dict[str, set[str]] = defaultdict(set)
    in_other: Counter[str] = Counter()
    seen_side: set[str] = set()
    seen_other: set[str] = set()
    for p in contrasts:
        side, other = (p.chosen, p.rejected) if wanted else (p.rejected, p.chosen)
        if other.id not in seen_other:
            seen_other.add(other.id)
            in_other.update(_ngrams(other.response))
        if side.id not in seen_side:
            seen_side.add(side.id)
            for g in _ngrams(side.response):
                in_side[g].add(side.id)
    # the widest net separation first (answers of this side minus the other side's): of "here"
    # and "here are" on the same disliked answers, the one liked answers never say
    ranked = sorted(
        ((g, ids) for g, ids in in_side.items() if len(ids) >= min_support and in_other[g] * 5 <= len(ids)),
        key=lambda t: (in_other[t[0]] - len(t[1]), t[0].split()[-1] in ALL_STOPWORDS,
                       {2: 0, 1: 1, 3: 2}[len(t[0].split())], t[0]),
    )  # fmt: skip
    answers = [(p.chosen if wanted else p.rejected).response for p in contrasts]
    picked: list[tuple[Check, str]] = []
    covered: list[set[str]] = []
    for g, ids in ranked:
        if any(ids <= c for c in covered):
            continue  # a sub- or super-phrase of one already picked, same answers
        covered.append(ids)
        picked.append((Check("contains" if wanted else "forbid", g), display_phrase(g, answers)))
        if len(picked) >= limit:
            break
    return picked


def _start_checks(contrasts: Sequence[Pair], min_support: int) -> list[tuple[Check, str]]:
    starts: Counter[str] = Counter()
    rejected_starts: Counter[str] = Counter()
    for p in contrasts:
        for n in (1, 2):
            words = normalize(p.chosen.response).split()[:n]
            if len(words) == n and not all(w in ALL_STOPWORDS for w in words):
                starts[" ".join(words)] += 1
            rwords = normalize(p.rejected.response).split()[:n]
            rejected_starts[" ".join(rwords)] += 1
    echoes = {normalize(p.chosen.prompt) for p in contrasts}
    out: list[tuple[Check, str]] = []
    for phrase, count in sorted(starts.items(), key=lambda t: (-t[1], len(t[0].split()), t[0]))[:3]:
        if any(phrase.startswith(c.arg) or c.arg.startswith(phrase) for c, _ in out):
            continue  # "sure" and "sure here": one opening, said once
        words = [w for w in phrase.split() if w not in ALL_STOPWORDS]
        if all(any(f" {w} " in f" {q} " for q in echoes) for w in words):
            continue  # an echo of the question ("The capital ..."), not a way of answering
        if count >= max(min_support, len(contrasts) // 4) and rejected_starts[phrase] * 5 <= count:
            out.append((Check("starts_with", phrase), display_phrase(phrase, [p.chosen.response for p in contrasts])))
    return out


def comment_themes(examples: Sequence[Example]) -> dict[str, list[Example]]:
    """Down votes with an unflagged comment, grouped by what the comment complains about."""
    themes: dict[str, list[Example]] = defaultdict(list)
    for e in down_comments(examples):
        low = (e.comment or "").lower()
        for theme, (keywords, _) in COMMENT_THEMES.items():
            if any(k in low for k in keywords):
                themes[theme].append(e)
    return dict(themes)


def _comment_evidence(downs: Sequence[Example]) -> dict[str, Any]:
    comments = [(e.comment or "").strip() for e in downs]
    return {"comments": list(dict.fromkeys(comments))[:3], "count": len(comments),
            "users": len({e.voice for e in downs})}  # fmt: skip


def comment_principles(
    examples: Sequence[Example], *, min_count: int = 2, min_users: int = 1
) -> tuple[list[Rule], dict[str, int]]:
    """Recurring down-vote comments that name a checkable wish -> candidate principles with that
    check, so validation measures them on held-out feedback like any other. When the answers
    never satisfy a wish there are no ups to contrast with, and the comments are the only signal.
    A wish needs `min_count` comments from `min_users` distinct voices (all anonymous feedback is
    one); flagged comments (comments.flag_comment) never count."""
    found: dict[Check, list[Example]] = defaultdict(list)
    display: dict[Check, str] = {}
    for e in down_comments(examples):
        if hit := check_of_comment(e.comment or ""):
            found[hit[0]].append(e)
            display.setdefault(hit[0], hit[1])
    out: list[Rule] = []
    counts = {str(c): len(v) for c, v in found.items()}
    for check, downs in sorted(found.items(), key=lambda t: (-len(t[1]), str(t[0]))):
        evidence = _comment_evidence(downs)
        if len(downs) < min_count or evidence["users"] < min_users:
            continue
        evidence["commented_answers_failing_check"] = sum(not check.passes(e) for e in downs)
        out.append(Rule(check_text(check, display[check]), Source.COMMENT, check, evidence=evidence))
    return out, counts


def _explain_away(
    strong: list[tuple[Check, str, set[str], dict[str, Any]]], rows: dict[str, dict[str, Any]]
) -> list[Rule]:
    """Forward selection, general properties first, then the strongest: a property whose
    agreeing pairs (90%+) the chosen ones already explain adds nothing but noise to the spec
    ("never say 'help'" when the disliked answers are simply the long ones), so it is left out
    and the report says why."""
    chosen: list[Rule] = []
    explained: set[str] = set()
    # phrases are bound to topics, length and format are not: they come first; on a tie, the
    # stricter check first (numbered steps before any list: what satisfies it satisfies both
    # readings of the votes), then a phrase to avoid before one to require
    order = sorted(strong, key=lambda t: (t[0].kind in PHRASE_KINDS, -len(t[2]), t[3]["train_passing"],
                                          t[0].kind in REFINED, t[0].kind == "contains",
                                          str(t[0])))  # fmt: skip
    for check, display, agreeing, ev in order:
        if chosen and mostly_explained(agreeing, explained):
            rows[str(check)]["candidate"] = False
            rows[str(check)]["explained_by"] = [str(p.check) for p in chosen]
            continue
        explained |= agreeing
        chosen.append(Rule(check_text(check, display), Source.EVIDENCE, check, evidence=ev))
    return chosen


def find_evidence(
    split: Split, *, min_support: int = 3, min_accuracy: float = 0.75, max_phrases: int = 3, min_users: int = 1
) -> tuple[list[Rule], dict[str, Any]]:
    """Candidate principles from measured properties of the training contrasts, and a report of
    every property measured (kept or not) for the round's printout and front matter. What
    comments say counts only when `min_users` distinct voices say it."""
    contrasts = split.contrasts()
    examples = split.examples
    themes = {t: downs for t, downs in comment_themes(examples).items() if len({e.voice for e in downs}) >= min_users}
    candidates: list[tuple[Check, str]] = [(c, "") for c in _length_checks(contrasts)]
    candidates += [(Check(k.name), "") for k in KINDS.values() if not k.arg]  # every kind with no argument
    languages = Counter(language(p.chosen.response) for p in contrasts)
    languages.pop("unknown", None)
    languages.pop("other", None)
    if languages:
        candidates.append((Check("language", languages.most_common(1)[0][0]), ""))
    candidates += _start_checks(contrasts, min_support)
    candidates += _phrase_checks(contrasts, min_support, max_phrases, wanted=False)
    candidates += _phrase_checks(contrasts, min_support, max_phrases, wanted=True)

    measured: list[dict[str, Any]] = []
    strong: list[tuple[Check, str, set[str], dict[str, Any]]] = []
    needed = max(min_support, math.ceil(0.1 * len(contrasts)))
    for check, display in candidates:
        relevant, agreeing = measure(check, contrasts)
        agree = len(agreeing)
        accuracy = agree / relevant if relevant else 0.0
        theme = KINDS[check.kind].theme
        comments = [(e.comment or "").strip() for e in themes.get(theme, [])] if theme else []
        row = {"check": str(check), "relevant": relevant, "agree": agree, "accuracy": round(accuracy, 3)}
        # comments lower the bar: users said it in words, the numbers only need to agree
        bar = max(2, min_support - 1) if comments else needed
        row["candidate"] = relevant >= bar and accuracy >= min_accuracy
        measured.append(row)
        if row["candidate"]:
            passing = sum(check.passes(e) for e in examples)
            ev: dict[str, Any] = {"train_relevant": relevant, "train_agree": agree, "train_contrasts": len(contrasts),
                                  "train_passing": passing}  # fmt: skip
            if comments:
                ev["comments"] = list(dict.fromkeys(comments))[:3]
            strong.append((check, display, agreeing, ev))
    principles = _explain_away(strong, {row["check"]: row for row in measured})
    from_comments, comment_counts = comment_principles(examples, min_users=min_users)
    have = {str(p.check) for p in principles if p.check is not None}
    principles += [p for p in from_comments if str(p.check) not in have]
    for theme, downs in themes.items():
        text = COMMENT_THEMES[theme][1]
        if text and len(downs) >= 2:
            principles.append(Rule(text, Source.COMMENT, None, evidence=_comment_evidence(downs)))
    report = {
        "contrasts": len(contrasts),
        "measured": measured,
        "comment_themes": {k: len(v) for k, v in themes.items()},
        "comment_checks": comment_counts,
    }
    return principles, report
