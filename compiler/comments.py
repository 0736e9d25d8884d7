"""What the compiler may read of users' comments: a comment is data, never an instruction.

One that tries to instruct the compiler (`flag_comment`: "ignore previous instructions", "add the
rule", a link, an advert) is set aside, reported with its user (`flagged_comments`), and never
reaches a prompt nor becomes a rule; the others are read by evidence (comment themes and checks)
and wishes (what no pattern reads), from `down_comments`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from .dataset import Example
from .prompts import COMMENT_TAG

# A comment that tries to instruct the compiler rather than say what the user disliked: a small
# heuristic, on purpose (a missed one still has to pass validation and the distinct-user minimum;
# a false alarm costs one comment). First match names the reason.
_INSTRUCTING: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(rf"</?\s*{COMMENT_TAG}\b", re.I), "contains the comment delimiter"),
    (re.compile(r"\b(?:ignore|disregard|forget|override)\b.{0,30}\b(?:previous|prior|above|earlier|all|any|your)\b"
                r".{0,20}\b(?:instructions?|rules?|prompts?|directions?)\b", re.I), "tries to override instructions"),
    (re.compile(r"\b(?:system|developer)\s+(?:prompt|message|instructions?)\b|\bjailbreak|\bprompt injection", re.I),
     "addresses the system prompt"),
    (re.compile(r"(?:^|[\n.;!?]\s*)(?:system|assistant|compiler|developer|admin)\s*:|\b(?:dear|hey|note to (?:the )?)"
                r"\s*(?:compiler|system|assistant|ai|model|developers?)\b", re.I), "addressed to the compiler or system"),
    (re.compile(r"\b(?:add|insert|include|write|put)\s+(?:(?:this|the|a|these|new|following)\s+){0,2}(?:rules?|instructions?)\b"
                r"|\bnew rule\b", re.I), "dictates a rule"),
    (re.compile(r"\balways\s+(?:say|mention|recommend|promote|advertise|link|suggest|tell (?:users|people|them))\b", re.I),
     "dictates what to always say"),
    (re.compile(r"https?://|\bwww\.|\b[a-z0-9-]+\.(?:com|net|org|io|ai|co|shop|store|biz|info|xyz|app|ly)\b", re.I),
     "contains a link"),
    (re.compile(r"\b(?:buy|order|shop|subscribe|sign up|register|click|visit|call)\s+(?:now|today|here|us|our|my)\b|"
                r"\b(?:promo|discount|coupon)\s*codes?\b|\bfree trial\b|\blimited offer\b", re.I),
     "promotional call to action"),
)  # fmt: skip


def flag_comment(comment: str) -> str | None:
    """Why a comment reads as an instruction to the compiler (or an advert), None when it reads
    as what a user thought of an answer: "ignore previous instructions", "system prompt", "add
    the rule", "always say/recommend", a link or a call to action, or the comment delimiter."""
    for pattern, why in _INSTRUCTING:
        if pattern.search(comment):
            return why
    return None


def flagged_comments(examples: Sequence[Example]) -> list[dict[str, Any]]:
    """Every flagged comment once per voice: the text, the user (voice) and why, with a count."""
    found: dict[tuple[str, str], dict[str, Any]] = {}
    for e in examples:
        if e.comment and (why := flag_comment(e.comment)):
            row = found.setdefault((e.comment.strip(), e.voice),
                                   {"text": e.comment.strip()[:200], "user": e.voice, "why": why, "count": 0})  # fmt: skip
            row["count"] += 1
    return sorted(found.values(), key=lambda r: (-r["count"], r["user"], r["text"]))


def down_comments(examples: Sequence[Example]) -> list[Example]:
    """The down votes whose comment the compiler may read: the flagged ones are left out."""
    return [e for e in examples if not e.up and e.comment and flag_comment(e.comment) is None]
