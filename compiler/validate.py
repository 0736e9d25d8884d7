"""Validate: measure every rule on held-out pairs; keep the top K.

A checkable principle is measured by its predicate on every held-out pair; the others by the
judge in both orders on a fixed sample. Either way: relevant = pairs where the rule takes a side,
support = those where it sides with the user; ranked by prevalence x accuracy. No one user
writes the spec: a new rule must also be backed by `min_users` distinct voices (users, sessions
where no user is known, all anonymous feedback as one).

Values in, values out: `validate` turns each `Rule` into a `Principle` with its `Measurement`,
`select` returns each with its verdict (`Status`); nothing the proposer made is written to.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from .checks import PHRASE_KINDS
from .checks import family as check_family
from .dataset import Example, Pair
from .judge import Judge, verdict
from .llm import run_all
from .outcomes import Mode
from .principle import Measurement, Method, Principle, Rule, Source, Status, mostly_explained


def spread(pairs: Sequence[Pair], k: int) -> list[Pair]:
    """k pairs spread evenly over the list (deterministic, covers early and late feedback)."""
    if len(pairs) <= k:
        return list(pairs)
    step = len(pairs) / k
    return [pairs[int(i * step)] for i in range(k)]


Side = tuple[Example | Pair, int]  # a held-out item and the rule on it: +1 sides with the user, -1 against, 0 none


def backers(sides: Iterable[Side]) -> int:
    """Distinct voices a rule sides with: a voice counts when the rule sides with it on more of
    its held-out items than it goes against it (all anonymous feedback is one voice; a pair's
    voices are its two voters', an explicit pair's its chooser's)."""
    net: Counter[str] = Counter()
    for item, side in sides:
        for voice in item.voices if isinstance(item, Pair) else {item.voice}:
            net[voice] += side
    return sum(n > 0 for n in net.values())


def tally(method: Method, n: int, sides: Sequence[Side], judge: str = "") -> Measurement:
    """The measurement of a rule from the side it takes on each of `n` held-out items."""
    return Measurement(
        method, n, relevant=sum(side != 0 for _, side in sides), support=sum(side > 0 for _, side in sides),
        users=backers(sides), seen=frozenset(item.id for item, _ in sides),
        agrees=frozenset(item.id for item, side in sides if side > 0), judge=judge,
    )  # fmt: skip


async def validate(
    rules: Sequence[Rule],
    heldout: Sequence[Pair],
    judge: Judge | None,
    *,
    max_pairs: int,
    judge_ok: bool = True,
    judge_name: str = "",
    on_done: Callable[[Principle], None] | None = None,
    singles: Sequence[Example] = (),
) -> list[Principle]:
    """Each rule with its measurement (method/n/relevant/support/users), in order. With
    `judge_ok` false (the judge failed calibration) rules without a check stay unvalidated
    rather than judged by noise; `judge_name` says which judge measured the judged ones."""
    sample = spread(heldout, max_pairs)

    async def one(rule: Rule) -> Principle:
        if (check := rule.check) is not None:
            sides = [(pair, check.passes(pair.chosen) - check.passes(pair.rejected)) for pair in heldout]
            m = tally(Method.CHECK, len(heldout), sides)
            if not m.relevant and rule.source == Source.COMMENT and singles:
                # no held-out pair to decide on (a wish the answers never met): the check must
                # explain the held-out votes one by one, each up passing it and each down failing
                m = tally(
                    Method.CHECK_UNARY, len(singles), [(e, 1 if check.passes(e) == e.up else -1) for e in singles]
                )
        elif judge is None or not sample:
            m = Measurement(Method.NONE)
        elif not judge_ok:
            m = Measurement(Method.UNCALIBRATED)
        else:
            votes = [verdict(s) for s in await run_all(judge.by_rule(rule.text, pair) for pair in sample)]
            sides = [(pair, (v > 0) - (v < 0)) for pair, v in zip(sample, votes, strict=True)]
            m = tally(Method.JUDGE, len(sample), sides, judge_name)
        p = Principle(rule, m)
        if on_done:
            on_done(p)
        return p

    return list(await run_all(one(r) for r in rules))


@dataclass(frozen=True)
class Selection:
    kept: list[Principle]  # best first
    dropped: list[Principle]  # current rules contradicted by held-out feedback
    rejected: list[Principle]  # new candidates that did not validate
    candidates: list[Principle]  # every one measured, with its verdict, in the order given


# on a tie in held-out numbers: what users asked for in words, then what a person or an earlier
# round wrote, then what was measured, then what the LLM proposed ("under 25 words" said by users
# beats the 15-word limit the length quantiles suggest when held-out votes cannot tell them apart)
TRUST = {Source.COMMENT: 0, Source.CURRENT: 1, Source.EVIDENCE: 2, Source.LLM: 3}


def family(p: Rule | Principle) -> str:
    """Rules of a family compete for one place: "at most 25 words" and "at most 50 words"
    (numeric variants the proposer and the evidence both found), "use a list" and "never a
    list", "numbered steps" (checks.family). Forbidden and required phrases are each their own
    family; rules without a check are too."""
    return f"text:{p.text}" if p.check is None else check_family(p.check)


def general(p: Principle) -> bool:
    """A rule on length, format or language: it changes every answer, where a phrase rule is
    bound to the topics that use the phrase."""
    return p.check is not None and p.check.kind not in PHRASE_KINDS


def explainers(p: Principle, kept: Sequence[Principle]) -> list[Principle]:
    """The kept rules that may explain `p` away: any of them for a phrase rule, only the general
    ones for a general rule (a phrase that happens to mark the same held-out items says nothing
    of the next answer's length)."""
    return [k for k in kept if general(k) or not general(p)]


def redundant(p: Principle, explained: set[str]) -> bool:
    """A new rule adds words, not evidence, when the better-ranked kept rules in `explained`
    already side with the users on 90%+ of the items it sides with them on, and on more of the
    items it was measured on than it does itself: "say 'why'" beside "say 'because'" when the
    liked answers are simply the ones that give a reason, or "never a list" beside "at most 25
    words" when they are simply the short ones (a rule that rides along changes what the model
    writes: in one bench.quality run, 9 of 12 answers under 25 words with both rules, 12 of 12
    with the length rule alone). Incremental validity, as in evidence.py's forward selection.
    Two rules the items cannot tell apart both stay."""
    if p.check is None:
        return False
    m = p.measured
    return mostly_explained(m.agrees, explained) and len(m.seen & explained) > len(m.agrees)


def select(
    principles: Sequence[Principle],
    *,
    top_k: int,
    min_accuracy: float,
    min_prevalence: float,
    min_users: int = 0,
    mode: Mode = Mode.PAIRS,
) -> Selection:
    """Top K by prevalence x accuracy among the principles that validate, one per check family.
    A new rule must also be backed by `min_users` distinct voices (else `rejected`, with
    `evidence["too_few_users"]`). A current rule is kept unless the feedback contradicts it (it
    takes a side at least twice, mostly the wrong one) or a better-validated rule of its family
    replaces it: no evidence either way is no reason to drop what a person or an earlier round wrote.
    A new rule the kept ones already explain is left out (`redundant`). In `Mode.COMMENTS` (no
    held-out contrast, where nothing could tell a measured rule from luck) a new rule must be one
    users asked for in their comments (`unrequested` otherwise). Each principle comes back with
    its verdict (`status`, and the notes that explain it)."""

    def accurate(p: Principle) -> bool:
        acc = p.measured.accuracy
        return acc is not None and acc >= min_accuracy and p.measured.prevalence >= min_prevalence

    def too_few_users(p: Principle) -> bool:
        return p.source != Source.CURRENT and p.measured.users < min_users

    def unrequested(p: Principle) -> bool:
        return mode == Mode.COMMENTS and p.source not in (Source.CURRENT, Source.COMMENT)

    def validated(p: Principle) -> bool:
        return accurate(p) and not too_few_users(p) and not unrequested(p)

    def contradicted(p: Principle) -> bool:
        acc = p.measured.accuracy
        return acc is not None and p.measured.relevant >= 2 and acc < 0.5

    ranked = sorted(
        (p for p in principles if validated(p)),
        key=lambda p: (-p.measured.score, -(p.measured.accuracy or 0), TRUST.get(p.source, len(TRUST)), p.text),
    )
    current = [p for p in principles if p.source == Source.CURRENT and not validated(p) and not contradicted(p)]
    eligible = [*ranked, *current]
    kept: list[Principle] = []
    taken: dict[str, Principle] = {}  # family -> the rule that holds its place
    notes: dict[int, dict[str, Any]] = {}  # id(principle) -> what the verdict adds to its evidence
    for p in eligible:
        explaining = explainers(p, kept)
        # held-out items those kept rules already side with the user on
        explained: set[str] = set().union(*(k.measured.agrees for k in explaining))
        if p.source != Source.CURRENT and redundant(p, explained):
            notes[id(p)] = {"explained_by": [k.text for k in explaining]}
            continue
        if len(kept) < top_k and family(p) not in taken:
            kept.append(p)
            taken[family(p)] = p
    kept_ids, eligible_ids = {id(p) for p in kept}, {id(p) for p in eligible}

    def verdict(p: Principle) -> Principle:
        note = notes.get(id(p), {})
        if id(p) in kept_ids:
            status = Status.KEPT if p.source == Source.CURRENT else Status.ADDED
        elif "explained_by" in {**p.evidence, **note} and id(p) in eligible_ids:
            status = Status.REDUNDANT
        elif family(p) in taken and id(p) in eligible_ids:
            status = Status.SUPERSEDED
            note = {**note, "superseded_by": taken[family(p)].text}
        elif p.source == Source.CURRENT:
            status = Status.DROPPED
        elif accurate(p) and unrequested(p):
            status = Status.UNREQUESTED
        elif accurate(p) and too_few_users(p):
            status = Status.REJECTED
            note = {**note, "too_few_users": f"backed by {p.measured.users} distinct user(s) on held-out feedback, "
                                             f"{min_users} needed"}  # fmt: skip
        else:
            measured = p.measured.relevant or p.measured.method == Method.CHECK
            status = Status.REJECTED if measured else Status.UNVALIDATED
        return replace(p, status=status, notes={**p.notes, **note})

    verdicts = {id(p): verdict(p) for p in principles}
    left = [verdicts[id(p)] for p in principles if id(p) not in kept_ids]
    return Selection(
        kept=[verdicts[id(p)] for p in kept],
        dropped=[p for p in left if p.source == Source.CURRENT],
        rejected=[p for p in left if p.source != Source.CURRENT],
        candidates=[verdicts[id(p)] for p in principles],
    )
