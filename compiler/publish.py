"""Publish: store the candidate as a new immutable version with its evidence, then move a label.

The registry writes the version file whole (temp file + link) before it moves the label, so a
crash in between leaves a complete, unlabelled version and the old label in place. The next
round notices that orphan (same body, by the compiler, no label) and labels it instead of
writing a duplicate. In approval mode (`SPECLEARN_COMPILER_REQUIRE_APPROVAL`) the registry holds
the new version instead of labelling it, until `speclearn specs approve NAME VERSION`.
"""

from __future__ import annotations

import datetime as dt
import difflib
import hashlib
import re
from collections.abc import Sequence
from typing import Any

from proxy.registry import Registry, SpecVersion
from proxy.registry.specfile import body_sha256

from .principle import Principle
from .text import split_sentences


def _iso(ts: float | None) -> str | None:
    return None if ts is None else dt.datetime.fromtimestamp(ts, dt.UTC).isoformat(timespec="seconds")


def build_meta(
    *,
    principles: Sequence[Principle],
    dropped: Sequence[Principle],
    window: dict[str, Any],
    dataset: dict[str, int | str],
    gate: dict[str, Any],
    cost: dict[str, Any],
    seed: int,
    model: str,
    synthesis: dict[str, Any],
    evidence: dict[str, Any],
    forced: bool = False,
    flagged_comments: Sequence[dict[str, Any]] = (),
    spec_tokens: int | None = None,
    human: str | None = None,
    learned_tokens: int | None = None,
    proposals: Sequence[dict[str, Any]] = (),
) -> dict[str, Any]:
    feedback_window = dict(window)
    for key in ("since", "until"):
        if isinstance(feedback_window.get(key), (int, float)):
            feedback_window[f"{key}_iso"] = _iso(feedback_window[key])
    meta: dict[str, Any] = {
        # what the spec adds to every request it is injected into (estimated, ~4 characters a token)
        **({"spec_tokens": spec_tokens} if spec_tokens is not None else {}),
        "compiler": {"model": model, "seed": seed, "synthesis": synthesis},
        "feedback_window": feedback_window,
        "dataset": dataset,
        "principles": [p.to_meta() for p in principles],
        "dropped_principles": [p.to_meta() for p in dropped],
        "evidence": evidence,
        "gate": gate,
        "cost": cost,
    }
    if human is not None:  # the person's text this version keeps byte for byte, and what was added
        meta["sections"] = {"human_sha256": hashlib.sha256(human.encode()).hexdigest(), "human_chars": len(human),
                            "learned_tokens": learned_tokens}  # fmt: skip
    if proposals:  # rules that would change the person's text: held as versions of their own
        meta["proposals"] = list(proposals)
    if flagged_comments:  # set aside as instructions to the compiler: the text, the user and why
        meta["flagged_comments"] = list(flagged_comments)
    if forced:
        meta["forced"] = True
    return meta


def orphan(versions: dict[int, SpecVersion], labels: dict[str, int], text: str) -> SpecVersion | None:
    """The latest version if it is an unlabelled compiler version with this exact body."""
    if not versions:
        return None
    latest = versions[max(versions)]
    body = text if text.endswith("\n") else text + "\n"
    if latest.version in labels.values() or latest.meta.get("author") != "compiler":
        return None
    return latest if latest.sha256 == body_sha256(body) else None


async def publish(
    registry: Registry,
    name: str,
    text: str,
    meta: dict[str, Any],
    *,
    parent: int | None,
    label: str,
) -> SpecVersion:
    await registry.refresh()
    state = registry.snapshot.specs.get(name)
    if state is not None and (found := orphan(state.versions, state.labels, text)) is not None:
        if state.blocked(found.version):
            return found  # the same text already awaits approval, or was rejected: not again
        await registry.set_label(name, label, found.version)
        return found
    return await registry.publish(name, text, meta=meta, author="compiler", parent=parent, labels=[label])


_MARKUP_RE = re.compile(r"^\s*(?:[-*+]\s|\d+[.)]\s|#{1,6}\s|\|)")


def diff_units(text: str) -> list[str]:
    """What a diff compares: a Markdown line (a list item, a heading, a table row) whole, with its
    marker; prose one sentence at a time, since a paragraph is one line and a line diff of it
    would show one change."""
    units: list[str] = []
    for line in text.splitlines():
        if not line.strip():
            continue
        units += [line.rstrip()] if _MARKUP_RE.match(line) else split_sentences(line)
    return units


def diff(old: str, new: str, old_name: str = "current", new_name: str = "candidate") -> str:
    a = [u + "\n" for u in diff_units(old)]
    b = [u + "\n" for u in diff_units(new)]
    return "".join(difflib.unified_diff(a, b, old_name, new_name, n=1))
