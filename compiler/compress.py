"""Compress: merge near-duplicate principles, so validation pays for each idea once.

Similarity is semantic when embeddings are at hand (the cosine of sentence embeddings, from the
compiler endpoint or the packaged MiniLM, compiler/embed.py; `EMBED_SIMILARITY` in compiler/tuning.py),
else lexical and stdlib-only: the larger of token Jaccard over content words (crudely stemmed)
and difflib's ratio. Either way, rules that differ in what would make them checkable (another
quoted phrase, another number, one negating the other) are never alike, and similarities are
compared at two decimals, so a last-digit difference between BLAS builds or endpoints cannot
flip a merge. Measured on tests/data/rule_pairs.jsonl (tests/test_compress_semantic.py).
Within a cluster the representative is the most trustworthy member (one with a
check, then a current rule, then a comment theme, then the one proposed most often); a cluster of
LLM-only rules may be merged into one sentence by the LLM, if it answers with a usable rule.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Sequence
from dataclasses import replace

from . import prompts
from .embed import Vector, cosine, embed
from .llm import LLMClient, run_all
from .principle import Rule
from .text import content_words, jaccard, parse_rules

PRIORITY = {"current": 1, "evidence": 0, "comment": 2, "llm": 3}
_QUOTED = re.compile(r'"([^"]+)"')
_NUMBER = re.compile(r"\b(\d+|one|two|three|four|five|six|seven|eight|nine|ten|twenty|fifty|hundred)\b")
_NEGATION = re.compile(r"\b(not|never|no|avoid)\b|n't\b")
Similarity = Callable[[int, int], float]


def distinct(a: str, b: str) -> bool:
    """Rules alike in wording but not in what they ask: they quote different phrases ("never say
    X" vs "never say Y"), name different numbers ("at most 20 words" vs "at most 50"), or one
    negates what the other asks ("use bullet points" vs "do not use bullet points")."""
    la, lb = a.lower(), b.lower()
    qa, qb = set(_QUOTED.findall(la)), set(_QUOTED.findall(lb))
    if qa and qb and not qa & qb:
        return True
    na, nb = set(_NUMBER.findall(_QUOTED.sub("", la))), set(_NUMBER.findall(_QUOTED.sub("", lb)))
    if na and nb and na != nb:
        return True
    return bool(_NEGATION.search(_QUOTED.sub("", la))) != bool(_NEGATION.search(_QUOTED.sub("", lb)))


def similarity(a: str, b: str) -> float:
    """Lexical, 0..1: token Jaccard over content words or difflib's ratio, whichever is larger."""
    if distinct(a, b):
        return 0.0
    jac = jaccard(content_words(a), content_words(b))
    return max(jac, difflib.SequenceMatcher(None, a.lower(), b.lower()).ratio())


def semantic_similarity(a: str, b: str, va: Vector, vb: Vector) -> float:
    """The cosine of the two rules' embeddings, 0 for rules that ask different things."""
    return 0.0 if distinct(a, b) else cosine(va, vb)


def similar(a: float, threshold: float) -> bool:
    return round(a, 2) >= threshold


def _rank(p: Rule, size: int) -> tuple[int, int, int, int]:
    return (0 if p.check else 1, PRIORITY.get(p.source, 4), -size, len(p.text))


def cluster(principles: Sequence[Rule], threshold: float, sim: Similarity | None = None) -> list[list[Rule]]:
    """Single-link clustering; principles with different checks never merge (the check is what
    validation measures). `sim(i, j)` compares principles by index (default: lexical). Order of
    first appearance is kept, so results are deterministic."""
    sim = sim or (lambda i, j: similarity(principles[i].text, principles[j].text))
    clusters: list[list[int]] = []
    for i, p in enumerate(principles):
        home = None
        for c in clusters:
            if any(principles[j].check and p.check and principles[j].check != p.check for j in c):
                continue
            if any(similar(sim(i, j), threshold) for j in c):
                home = c
                break
        if home is None:
            clusters.append([i])
        else:
            home.append(i)
    return [[principles[i] for i in c] for c in clusters]


async def similarity_of(
    principles: Sequence[Rule], llm: LLMClient | None, threshold: float, embed_threshold: float | None
) -> tuple[Similarity | None, float]:
    """The similarity compress uses and its threshold: semantic when embeddings can be had,
    else lexical (None)."""
    if embed_threshold is not None and len(principles) > 1:
        texts = [p.text for p in principles]
        vectors = await embed(texts, llm)
        if vectors is not None:
            return (lambda i, j: semantic_similarity(texts[i], texts[j], vectors[i], vectors[j])), embed_threshold
    return None, threshold


async def compress(
    principles: Sequence[Rule],
    *,
    threshold: float,
    llm: LLMClient | None = None,
    max_tokens: int = 64,
    embed_threshold: float | None = None,
) -> list[Rule]:
    """Merge near-duplicates: by embeddings at `embed_threshold` when given and available, else
    lexically at `threshold`."""
    sim, at = await similarity_of(principles, llm, threshold, embed_threshold)
    clusters = cluster(principles, at, sim)

    async def one(c: list[Rule]) -> Rule:
        best = min(c, key=lambda p: _rank(p, len(c)))
        others = tuple(dict.fromkeys(q.text for q in c if q is not best and q.text != best.text))
        evidence = dict(best.evidence)
        if len(c) > 1:
            evidence.setdefault("proposed", len(c))
        text = best.text
        if llm is not None and others and all(q.source == "llm" for q in c):
            reply = await llm.chat(prompts.merge([q.text for q in c]), max_tokens=max_tokens, stage="compress")
            merged = parse_rules("- " + reply.strip().splitlines()[0]) if reply.strip() else []
            text = merged[0] if merged else text
        proposed_from = tuple(dict.fromkeys(i for q in [best, *c] for i in q.proposed_from))
        return replace(best, text=text, evidence=evidence, proposed_from=proposed_from, merged=others)

    return await run_all(one(c) for c in clusters)


def shortlist(principles: Sequence[Rule], limit: int) -> list[Rule]:
    """Every checkable principle (validating it costs nothing) plus the `limit` best of the
    others, ordered by source and by how many proposals said the same."""
    checked = [p for p in principles if p.check]
    judged = sorted(
        (p for p in principles if not p.check),
        key=lambda p: (PRIORITY.get(p.source, 4), -int(p.evidence.get("proposed", 1))),
    )
    return checked + judged[:limit]
