"""Validate: measure every principle on held-out pairs; keep the top K.

A checkable principle is measured by its predicate on every held-out pair; the others by the
judge in both orders on a fixed sample. Either way: relevant = pairs where the rule takes a side,
support = those where it sides with the user; ranked by prevalence x accuracy. No one user
writes the spec: a new rule must also be backed by `min_users` distinct voices (users, sessions
where no user is known, all anonymous feedback as one).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from .checks import PHRASE_KINDS
from .checks import family as check_family
from .dataset import Example, Pair
from .evidence import mostly_explained
from .judge import Judge, verdict
from .llm import run_all
from .principle import Principle


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


def _tally(p: Principle, method: str, n: int, sides: Sequence[Side]) -> None:
    p.method, p.n = method, n
    p.relevant, p.support = sum(side != 0 for _, side in sides), sum(side > 0 for _, side in sides)
    p.users = backers(sides)
    p.seen, p.agrees = {item.id for item, _ in sides}, {item.id for item, side in sides if side > 0}


async def validate(
    principles: Sequence[Principle],
    heldout: Sequence[Pair],
    judge: Judge | None,
    *,
    max_pairs: int,
    judge_ok: bool = True,
    on_done: Callable[[Principle], None] | None = None,
    singles: Sequence[Example] = (),
) -> None:
    """Fill in method/n/relevant/support/users of each principle. With `judge_ok` false (the
    judge failed calibration) rules without a check stay unvalidated rather than judged by noise."""
    sample = spread(heldout, max_pairs)

    async def one(p: Principle) -> None:
        if (check := p.check) is not None:
            sides = [(pair, check.passes(pair.chosen) - check.passes(pair.rejected)) for pair in heldout]
            _tally(p, "check", len(heldout), sides)
            if not p.relevant and p.source == "comment" and singles:
                # no held-out pair to decide on (a wish the answers never met): the check must
                # explain the held-out votes one by one, each up passing it and each down failing
                _tally(p, "check-unary", len(singles), [(e, 1 if check.passes(e) == e.up else -1) for e in singles])
        elif judge is None or not sample:
            p.method, p.n = "none", 0
        elif not judge_ok:
            p.method, p.n = "uncalibrated", 0
        else:
            votes = [verdict(s) for s in await run_all(judge.by_rule(p.text, pair) for pair in sample)]
            _tally(p, "judge", len(sample), [(pair, (v > 0) - (v < 0)) for pair, v in zip(sample, votes, strict=True)])
        if on_done:
            on_done(p)

    await run_all(one(p) for p in principles)


@dataclass
class Selection:
    kept: list[Principle]
    dropped: list[Principle]  # current rules contradicted by held-out feedback
    rejected: list[Principle]  # new candidates that did not validate


# on a tie in held-out numbers: what users asked for in words, then what a person or an earlier
# round wrote, then what was measured, then what the LLM proposed ("under 25 words" said by users
# beats the 15-word limit the length quantiles suggest when held-out votes cannot tell them apart)
TRUST = {"comment": 0, "current": 1, "evidence": 2, "llm": 3}


def family(p: Principle) -> str:
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
    return mostly_explained(p.agrees, explained) and len(p.seen & explained) > len(p.agrees)


def select(
    principles: Sequence[Principle],
    *,
    top_k: int,
    min_accuracy: float,
    min_prevalence: float,
    min_users: int = 0,
    requested_only: bool = False,
) -> Selection:
    """Top K by prevalence x accuracy among the principles that validate, one per check family.
    A new rule must also be backed by `min_users` distinct voices (else `rejected`, with
    `evidence["too_few_users"]`). A current rule is kept unless the feedback contradicts it (it
    takes a side at least twice, mostly the wrong one) or a better-validated rule of its family
    replaces it: no evidence either way is no reason to drop what a person or an earlier round wrote.
    A new rule the kept ones already explain is left out (`redundant`). With `requested_only`
    (a round with no held-out contrast, where nothing could tell a measured rule from luck) a
    new rule must be one users asked for in their comments (`unrequested` otherwise)."""

    def accurate(p: Principle) -> bool:
        acc = p.accuracy
        return acc is not None and acc >= min_accuracy and p.prevalence >= min_prevalence

    def too_few_users(p: Principle) -> bool:
        return p.source != "current" and p.users < min_users

    def unrequested(p: Principle) -> bool:
        return requested_only and p.source not in ("current", "comment")

    def validated(p: Principle) -> bool:
        return accurate(p) and not too_few_users(p) and not unrequested(p)

    def contradicted(p: Principle) -> bool:
        acc = p.accuracy
        return acc is not None and p.relevant >= 2 and acc < 0.5

    ranked = sorted(
        (p for p in principles if validated(p)),
        key=lambda p: (-p.score, -(p.accuracy or 0), TRUST.get(p.source, len(TRUST)), p.text),
    )
    current = [p for p in principles if p.source == "current" and not validated(p) and not contradicted(p)]
    eligible = [*ranked, *current]
    kept: list[Principle] = []
    taken: dict[str, Principle] = {}  # family -> the rule that holds its place
    for p in eligible:
        explaining = explainers(p, kept)
        # held-out items those kept rules already side with the user on
        explained: set[str] = set().union(*(k.agrees for k in explaining))
        if p.source != "current" and redundant(p, explained):
            p.evidence["explained_by"] = [k.text for k in explaining]
            continue
        if len(kept) < top_k and family(p) not in taken:
            kept.append(p)
            taken[family(p)] = p
    kept_ids, eligible_ids = {id(p) for p in kept}, {id(p) for p in eligible}
    dropped, rejected = [], []
    for p in principles:
        if id(p) in kept_ids:
            p.status = "kept" if p.source == "current" else "added"
            continue
        if p.source == "current":
            dropped.append(p)
        else:
            rejected.append(p)
        if "explained_by" in p.evidence and id(p) in eligible_ids:
            p.status = "redundant"
        elif family(p) in taken and id(p) in eligible_ids:
            p.status = "superseded"
            p.evidence["superseded_by"] = taken[family(p)].text
        elif p.source == "current":
            p.status = "dropped"
        elif accurate(p) and unrequested(p):
            p.status = "unrequested"
        elif accurate(p) and too_few_users(p):
            p.status = "rejected"
            p.evidence["too_few_users"] = (
                f"backed by {p.users} distinct user(s) on held-out feedback, {min_users} needed"
            )
        else:
            p.status = "rejected" if p.relevant or p.method == "check" else "unvalidated"
    return Selection(kept, dropped, rejected)
