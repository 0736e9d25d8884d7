"""Collect: feedback joined to inferences -> rated examples, preference pairs, a held-out split.

Production feedback is mostly unary (a thumb, often with a comment), so pairs are built three ways:
explicit pairwise feedback; an up and a down on the same or a near-identical prompt; and, for the
ups and downs left over, "cross" pairs of an up against a down on different prompts, which still
carry general properties (length, format, language, tone). The ledger stores client messages
without the injected spec, so the compiler never learns from its own text.

What the compiler's LLM may read is what `SPECLEARN_LEDGER_CONTENT` lets the ledger keep: the
ledger applies it to the events it returns, and `governed` to a pairs file's dataset.
"""

from __future__ import annotations

import dataclasses
import hashlib
import random
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from proxy.ledger import PAIR, SCORE, FeedbackEvent, InferenceRecord
from proxy.ledger.content import NONE, ContentPolicy

from .text import jaccard, normalize, tokens

if TYPE_CHECKING:
    from proxy.settings import Settings

NEAR_IDENTICAL = 0.85  # token Jaccard above which two prompts count as the same question
ANONYMOUS = "anonymous"  # the voice of all feedback with no user and no session: one voice, together


@dataclass(frozen=True, slots=True)
class Example:
    """One rated answer: the user's prompt, the answer, +1 (up) or -1 (down)."""

    id: str
    prompt: str
    response: str
    value: float
    at: float = 0.0
    comment: str | None = None
    user: str | None = None  # the end user, else "session:ID"; None: anonymous
    group: str = ""  # conversation: never split across train and held-out

    @property
    def up(self) -> bool:
        return self.value > 0

    @property
    def voice(self) -> str:
        """Who gave this judgment: a user, a session where no user is known, else the one
        anonymous voice that all unattributed feedback shares."""
        return self.user or ANONYMOUS


@dataclass(frozen=True, slots=True)
class Pair:
    """`chosen` was preferred over `rejected`. source: explicit | thumbs | cross | file."""

    id: str
    chosen: Example
    rejected: Example
    source: str

    @property
    def voices(self) -> set[str]:
        """The voices behind the two votes (an explicit pair is one person's comparison)."""
        return {self.chosen.voice} if self.source == "explicit" else {self.chosen.voice, self.rejected.voice}


@dataclass
class Split:
    """One side of the split: explicit/thumb pairs plus the ups and downs no pair used."""

    pairs: list[Pair] = field(default_factory=list)
    ups: list[Example] = field(default_factory=list)
    downs: list[Example] = field(default_factory=list)

    def contrasts(self) -> list[Pair]:
        """Every pair plus cross pairs of leftover ups and downs (each single used at least once)."""
        cross: list[Pair] = []
        if self.ups and self.downs:
            for i in range(max(len(self.ups), len(self.downs))):
                up, down = self.ups[i % len(self.ups)], self.downs[i % len(self.downs)]
                cross.append(Pair(f"x:{up.id}:{down.id}", up, down, "cross"))
        return self.pairs + cross

    @property
    def examples(self) -> list[Example]:
        seen: dict[str, Example] = {}
        for p in self.pairs:
            seen.setdefault(p.chosen.id, p.chosen)
            seen.setdefault(p.rejected.id, p.rejected)
        for e in self.ups + self.downs:
            seen.setdefault(e.id, e)
        return list(seen.values())


@dataclass
class Dataset:
    train: Split
    heldout: Split
    window: dict[str, Any]

    def summary(self) -> dict[str, int]:
        return {
            "train_pairs": len(self.train.pairs),
            "train_contrasts": len(self.train.contrasts()),
            "heldout_pairs": len(self.heldout.pairs),
            "heldout_contrasts": len(self.heldout.contrasts()),
            "ups": len(self.train.ups) + len(self.heldout.ups),
            "downs": len(self.train.downs) + len(self.heldout.downs),
        }


# -- turning a logged request into the prompt the user asked ---------------------------------
def content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for part in content:
            if isinstance(part, dict) and isinstance(part.get("text"), str):
                parts.append(part["text"])
            elif isinstance(part, str):
                parts.append(part)
        return "\n".join(parts)
    return ""


def request_turns(request: dict[str, Any]) -> list[tuple[str, str]]:
    """(role, text) of each non-empty turn a logged request sent.

    Chat bodies have `messages`; Responses bodies have `input` (a string or items) and
    `instructions` (the client's own system text; the spec is never stored there).
    """
    turns: list[tuple[str, str]] = []
    if isinstance(request.get("messages"), list):
        for m in request["messages"]:
            if isinstance(m, dict):
                turns.append((str(m.get("role", "user")), content_text(m.get("content"))))
    else:
        if isinstance(request.get("instructions"), str):
            turns.append(("system", request["instructions"]))
        inp = request.get("input")
        if isinstance(inp, str):
            turns.append(("user", inp))
        elif isinstance(inp, list):
            for item in inp:
                if isinstance(item, dict):
                    turns.append((str(item.get("role", "user")), content_text(item.get("content"))))
    return [(r, t.strip()) for r, t in turns if t and t.strip()]


def prompt_text(request: dict[str, Any]) -> str:
    """The conversation a response answered, rendered as text; the last user turn last."""
    turns = request_turns(request)
    if len(turns) == 1 and turns[0][0] == "user":
        return turns[0][1]
    return "\n".join(f"{role}: {text}" for role, text in turns)


# -- from ledger events to examples ------------------------------------------------------------
def _is_up(kind: str, value: float) -> bool | None:
    """Thumbs are signed; a score in [0, 1] splits at 0.5, any other score at 0."""
    if kind == SCORE and 0.0 <= value <= 1.0:
        return value >= 0.5
    if value == 0:
        return None
    return value > 0


def _example(inf: InferenceRecord, value: float, at: float, comment: str | None) -> Example | None:
    if not inf.response_text or inf.status != "ok":
        return None
    prompt = prompt_text(inf.request)
    if not prompt:
        return None
    meta = inf.metadata or {}
    # the proxy records the OpenAI `user` field or X-User-Id as "user", X-Session-Id as "session"
    user = str(meta["user"]) if meta.get("user") else f"session:{meta['session']}" if meta.get("session") else None
    group = str(meta.get("session") or f"p:{hashlib.sha1(normalize(prompt).encode()).hexdigest()[:12]}")
    return Example(inf.id, prompt, inf.response_text, value, at, comment, user, group)


def examples_from_events(events: Iterable[FeedbackEvent]) -> tuple[list[Example], list[Pair]]:
    """Rated examples and explicit pairs, deduplicated: a later vote on an inference replaces an
    earlier one, and the same answer to the same prompt counts once per voice (one user's later
    vote never overwrites another user's on an identical answer)."""
    latest_vote: dict[str, FeedbackEvent] = {}
    latest_pair: dict[tuple[str, str], FeedbackEvent] = {}
    for ev in events:
        fb = ev.feedback
        if fb.kind == PAIR:
            if ev.rejected is not None:
                latest_pair[(fb.inference_id, fb.rejected_id or "")] = ev
        else:
            prev = latest_vote.get(fb.inference_id)
            if prev is None or (fb.created_at, fb.id) >= (prev.feedback.created_at, prev.feedback.id):
                latest_vote[fb.inference_id] = ev
    by_answer: dict[tuple[str, str, str], Example] = {}
    for ev in latest_vote.values():
        up = _is_up(ev.feedback.kind, ev.feedback.value)
        if up is None:
            continue
        ex = _example(ev.inference, 1.0 if up else -1.0, ev.feedback.created_at, ev.feedback.comment)
        if ex is None:
            continue
        key = (ex.voice, normalize(ex.prompt), hashlib.sha1(ex.response.strip().encode()).hexdigest())
        if key not in by_answer or ex.at >= by_answer[key].at:
            by_answer[key] = ex
    pairs: list[Pair] = []
    for ev in latest_pair.values():
        assert ev.rejected is not None
        at, comment = ev.feedback.created_at, ev.feedback.comment
        chosen = _example(ev.inference, 1.0, at, comment)
        rejected = _example(ev.rejected, -1.0, at, None)
        if chosen and rejected and chosen.response.strip() != rejected.response.strip():
            pairs.append(Pair(f"p:{ev.feedback.id}", chosen, rejected, "explicit"))
    examples = sorted(by_answer.values(), key=lambda e: (e.at, e.id))
    return examples, sorted(pairs, key=lambda p: (p.chosen.at, p.id))


def cap_per_user(examples: Sequence[Example], pairs: Sequence[Pair], cap: int) -> tuple[list[Example], list[Pair]]:
    """Keep each voice's most recent `cap` judgments (a user's, a session's, and all anonymous
    feedback's together), so no one loud voice can define the spec for everyone."""
    items: list[tuple[float, str, Example | Pair]] = [(e.at, e.id, e) for e in examples]
    items += [(p.chosen.at, p.id, p) for p in pairs]
    count: dict[str, int] = defaultdict(int)
    keep: set[str] = set()
    for _, id_, item in sorted(items, key=lambda t: (t[0], t[1]), reverse=True):
        voice = item.voice if isinstance(item, Example) else item.chosen.voice
        count[voice] += 1
        if count[voice] <= cap:
            keep.add(id_)
    return [e for e in examples if e.id in keep], [p for p in pairs if p.id in keep]


def _group_of(item: Example | Pair) -> str:
    return item.group if isinstance(item, Example) else item.chosen.group


def split_by_time(
    examples: Sequence[Example], pairs: Sequence[Pair], fraction: float
) -> tuple[tuple[list[Example], list[Pair]], tuple[list[Example], list[Pair]]]:
    """Held-out = the most recent conversations, whole, until `fraction` of the items: the
    compiler is judged on feedback that came after what it learned from."""
    groups: dict[str, list[Example | Pair]] = defaultdict(list)
    items: list[Example | Pair] = [*examples, *pairs]
    for item in items:
        groups[_group_of(item)].append(item)

    def last_at(items: list[Example | Pair]) -> float:
        return max(i.at if isinstance(i, Example) else i.chosen.at for i in items)

    order = sorted(groups, key=lambda g: (last_at(groups[g]), g), reverse=True)
    total = len(examples) + len(pairs)
    heldout_groups: set[str] = set()
    taken = 0
    for g in order:
        if taken >= fraction * total or len(heldout_groups) == len(groups) - 1:
            break
        heldout_groups.add(g)
        taken += len(groups[g])

    def side(held: bool) -> tuple[list[Example], list[Pair]]:
        return (
            [e for e in examples if (e.group in heldout_groups) == held],
            [p for p in pairs if (p.chosen.group in heldout_groups) == held],
        )

    return side(False), side(True)


def pair_thumbs(examples: Sequence[Example], explicit: Sequence[Pair]) -> Split:
    """Pair an up with a down on the same or a near-identical prompt (closest in time first);
    what stays unpaired is kept as ups and downs."""
    ups = [e for e in examples if e.up]
    downs = [e for e in examples if not e.up]
    down_tokens = {d.id: tokens(d.prompt) for d in downs}
    used: set[str] = set()
    pairs = list(explicit)
    for up in ups:
        up_tok = tokens(up.prompt)
        best: tuple[float, float, Example] | None = None
        for d in downs:
            if d.id in used or d.response.strip() == up.response.strip():
                continue  # an up and a down on one answer contrast nothing
            sim = jaccard(up_tok, down_tokens[d.id])
            if sim < NEAR_IDENTICAL:
                continue
            cand = (-sim, abs(d.at - up.at), d)
            if best is None or cand[:2] < best[:2]:
                best = cand
        if best is not None:
            used.add(best[2].id)
            used.add(up.id)
            pairs.append(Pair(f"t:{up.id}:{best[2].id}", up, best[2], "thumbs"))
    return Split(
        pairs=pairs,
        ups=[e for e in ups if e.id not in used],
        downs=[e for e in downs if e.id not in used],
    )


def build_dataset(
    events: Sequence[FeedbackEvent],
    *,
    holdout_fraction: float = 0.3,
    max_per_user: int = 50,
    since: float | None = None,
    until: float | None = None,
) -> Dataset:
    examples, explicit = examples_from_events(events)
    examples, explicit = cap_per_user(examples, explicit, max_per_user)
    (tr_ex, tr_pairs), (ho_ex, ho_pairs) = split_by_time(examples, explicit, holdout_fraction)
    times = [ev.feedback.created_at for ev in events]
    window: dict[str, Any] = {
        "since": since if since is not None else (min(times) if times else None),
        "until": until if until is not None else (max(times) if times else None),
        "events": len(events),
    }
    textless = sum(1 for ev in events if (ev.inference.metadata or {}).get("content") == NONE)
    if textless and not examples and not explicit:
        window["nothing_to_learn"] = (
            f"nothing to learn from: {textless} of {len(events)} judgments are on inferences kept without "
            "their text (SPECLEARN_LEDGER_CONTENT=none)"
        )
    return Dataset(pair_thumbs(tr_ex, tr_pairs), pair_thumbs(ho_ex, ho_pairs), window)


def governed(ds: Dataset, settings: Settings) -> Dataset:
    """A dataset from outside the ledger (a pairs file) as the content mode lets the compiler's
    LLM read it: redacted like the ledger's rows, or in `none` nothing at all."""
    policy = ContentPolicy.from_settings(settings)
    if not policy.changes_rows:
        return ds
    if policy.mode == NONE:
        note = "nothing to learn from: SPECLEARN_LEDGER_CONTENT=none sends no text to the compiler's LLM"
        return Dataset(Split(), Split(), {**ds.window, "nothing_to_learn": note})

    def example(e: Example) -> Example:
        return dataclasses.replace(e, prompt=policy.text(e.prompt) or "", response=policy.text(e.response) or "",
                                   comment=policy.text(e.comment))  # fmt: skip

    def side(split: Split) -> Split:
        pairs = [dataclasses.replace(p, chosen=example(p.chosen), rejected=example(p.rejected)) for p in split.pairs]
        return Split(pairs, [example(e) for e in split.ups], [example(e) for e in split.downs])

    return Dataset(side(ds.train), side(ds.heldout), {**ds.window, "content": policy.mode})


def split_pairs(pairs: Sequence[Pair], fraction: float, seed: int) -> tuple[list[Pair], list[Pair]]:
    """For pairs without timestamps (a pairs file): a seeded random `fraction` held out. A prompt
    with several pairs is stratified (that share of its pairs held out, so held-out covers the
    same questions as training); prompts with one pair each, most of a real file, are drawn at
    random as a whole, that share of them held out."""
    rng = random.Random(seed)
    groups: dict[str, list[Pair]] = defaultdict(list)
    for p in pairs:
        groups[normalize(p.chosen.prompt)].append(p)
    held: set[str] = set()
    singles: list[Pair] = []
    for key in sorted(groups):
        items = list(groups[key])
        if len(items) == 1:
            singles += items
            continue
        rng.shuffle(items)
        held |= {p.id for p in items[: round(len(items) * fraction)]}
    rng.shuffle(singles)
    held |= {p.id for p in singles[: round(len(singles) * fraction)]}
    return [p for p in pairs if p.id not in held], [p for p in pairs if p.id in held]
