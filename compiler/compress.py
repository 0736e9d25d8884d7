"""Compress: merge near-duplicate principles, so validation pays for each idea once.

Similarity is stdlib-only: the larger of token Jaccard over content words (crudely stemmed) and
difflib's ratio. Within a cluster the representative is the most trustworthy member (one with a
check, then a current rule, then a comment theme, then the one proposed most often); a cluster of
LLM-only rules may be merged into one sentence by the LLM, if it answers with a usable rule.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Sequence

from . import prompts
from .evidence import ALL_STOPWORDS
from .llm import LLMClient, run_all
from .principle import Principle
from .propose import parse_rules

_WORD = re.compile(r"[a-z0-9']+")
PRIORITY = {"current": 1, "evidence": 0, "comment": 2, "llm": 3}


def _stem(word: str) -> str:
    for suffix in ("ing", "ed", "es", "s", "ly"):
        if len(word) > len(suffix) + 3 and word.endswith(suffix):
            return word[: -len(suffix)]
    return word


def content_words(text: str) -> set[str]:
    return {_stem(w) for w in _WORD.findall(text.lower()) if w not in ALL_STOPWORDS}


_QUOTED = re.compile(r'"([^"]+)"')


def similarity(a: str, b: str) -> float:
    """0..1; rules that quote different phrases ("never say X" vs "never say Y") are different
    rules however alike the rest of the sentence is."""
    qa, qb = {q.lower() for q in _QUOTED.findall(a)}, {q.lower() for q in _QUOTED.findall(b)}
    if qa and qb and not qa & qb:
        return 0.0
    wa, wb = content_words(a), content_words(b)
    jac = len(wa & wb) / len(wa | wb) if wa | wb else 1.0
    return max(jac, difflib.SequenceMatcher(None, a.lower(), b.lower()).ratio())


def _rank(p: Principle, size: int) -> tuple[int, int, int, int]:
    return (0 if p.check else 1, PRIORITY.get(p.source, 4), -size, len(p.text))


def cluster(principles: Sequence[Principle], threshold: float) -> list[list[Principle]]:
    """Single-link clustering; principles with different checks never merge (the check is what
    validation measures). Order of first appearance is kept, so results are deterministic."""
    clusters: list[list[Principle]] = []
    for p in principles:
        home = None
        for c in clusters:
            if any(q.check and p.check and q.check != p.check for q in c):
                continue
            if any(similarity(p.text, q.text) >= threshold for q in c):
                home = c
                break
        if home is None:
            clusters.append([p])
        else:
            home.append(p)
    return clusters


async def compress(
    principles: Sequence[Principle],
    *,
    threshold: float,
    llm: LLMClient | None = None,
    max_tokens: int = 64,
) -> list[Principle]:
    clusters = cluster(principles, threshold)

    async def one(c: list[Principle]) -> Principle:
        best = min(c, key=lambda p: _rank(p, len(c)))
        rep = Principle(best.text, best.source, best.check, dict(best.evidence), list(best.proposed_from))
        others = [q.text for q in c if q is not best and q.text != best.text]
        rep.merged = list(dict.fromkeys(others))
        for q in c:
            rep.proposed_from += [i for i in q.proposed_from if i not in rep.proposed_from]
        if len(c) > 1:
            rep.evidence.setdefault("proposed", len(c))
        if llm is not None and len(rep.merged) >= 1 and all(q.source == "llm" for q in c):
            text = await llm.chat(prompts.merge([q.text for q in c]), max_tokens=max_tokens, stage="compress")
            merged = parse_rules("- " + text.strip().splitlines()[0]) if text.strip() else []
            if merged:
                rep.text = merged[0]
        return rep

    return await run_all(one(c) for c in clusters)


def shortlist(principles: Sequence[Principle], limit: int) -> list[Principle]:
    """Every checkable principle (validating it costs nothing) plus the `limit` best of the
    others, ordered by source and by how many proposals said the same."""
    checked = [p for p in principles if p.check]
    judged = sorted(
        (p for p in principles if not p.check),
        key=lambda p: (PRIORITY.get(p.source, 4), -int(p.evidence.get("proposed", 1))),
    )
    return checked + judged[:limit]
