"""Users change their minds: each served rule is tested again on the feedback since a round last
concluded about it, and where users turned against one, the round learns from the feedback after
the turn instead of from a window that still backs the rule.

Held-out feedback is the newest, so validation and the gate already read recent votes; but the
rules a round proposes and the evidence it measures come from the training pairs, the older part
of the window, which in a drifting world speak for the taste users had. So before a round, each
learned rule the served version states and can check is measured on the contrasts made of
feedback newer than its latest conclusion (memory.py). Once `MIN_ITEMS` bear on it, it has turned
when it sides against the users significantly (a one-sided binomial test, Bonferroni over the
rules tested, at the gate's alpha), else it held, which is recorded (`kept`) so the next test
reads only what came after. A turn restarts the round's window where the earliest turned rule was
last concluded; a round that then publishes records the rule `dropped` like any other, one that
does not leaves the turn to be found again by the next. A rule only a judge can read is not
tested here: that would spend LLM calls before the round's budget is planned.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

from scipy.stats import binomtest

from proxy.ledger import FeedbackEvent

from .dataset import Pair, build_dataset
from .memory import RECONSIDER_AFTER, Conclusion, Memory, Verdict, rule_key
from .principle import Rule

MIN_ITEMS = RECONSIDER_AFTER  # as many new items as bring a refused rule back: the same bar both ways


@dataclass(frozen=True)
class Standing:
    """One served rule on the feedback since it was last concluded about."""

    text: str
    key: str
    since: float  # the feedback after this moment is what it was tested on
    support: int  # contrasts where it sided with the users
    relevant: int  # contrasts where its check takes a side
    through: float  # the newest feedback read: the next test reads only what comes after
    p_against: float  # corrected p-value of "it sides with the users at least as often as a coin"

    def to_meta(self) -> dict[str, Any]:
        return {"text": self.text, "since": self.since, "support": self.support, "relevant": self.relevant,
                "p_against": round(self.p_against, 6)}  # fmt: skip


@dataclass(frozen=True)
class Drift:
    held: tuple[Standing, ...] = ()  # tested on enough new items and not turned against
    turned: tuple[Standing, ...] = ()  # users sided against it significantly since

    @property
    def since(self) -> float | None:
        """Where the round's window restarts: None when no rule turned."""
        return min(s.since for s in self.turned) if self.turned else None

    def conclusions(self, spec: str, now: float) -> list[Conclusion]:
        """The rules that held, recorded so the next test reads only newer feedback."""
        return [Conclusion(spec, s.key, s.text, Verdict.KEPT, now, s.through,
                           f"held on the {s.relevant} contrast(s) since the last conclusion ({s.support} sided with users)",
                           None, {"support": s.support, "relevant": s.relevant})
                for s in self.held]  # fmt: skip

    def among(self, keys: Collection[str]) -> tuple[Standing, ...]:
        """The turned rules among `keys` (say, the rules a running candidate adds)."""
        return tuple(s for s in self.turned if s.key in keys)

    def describe(self) -> str:
        return "; ".join(f"users turned against {s.text!r} ({s.support}/{s.relevant} contrasts since, "
                         f"p = {s.p_against:.4f})" for s in self.turned)  # fmt: skip


def contrasts_since(events: Sequence[FeedbackEvent], since: float, max_per_user: int) -> list[Pair]:
    """Every contrast the feedback after `since` makes (pairs, thumbs on one question, cross pairs)."""
    recent = [ev for ev in events if ev.feedback.created_at > since]
    return build_dataset(recent, holdout_fraction=0.0, max_per_user=max_per_user).train.contrasts()


def retest(
    served: Sequence[tuple[Rule, float | None]], memory: Memory, events: Sequence[FeedbackEvent], *, alpha: float,
    max_per_user: int,
) -> Drift:  # fmt: skip
    """Each checkable rule, given with the end of the feedback window of the version that serves
    it, on the feedback since its latest conclusion (else since that window ended; with neither,
    it is not tested)."""
    starts: dict[str, tuple[Rule, float]] = {}
    for rule, served_since in served:
        if rule.check is None:
            continue
        key = rule_key(rule.text, rule.check)
        latest = memory.latest.get(key)
        since = latest.through if latest is not None else served_since
        if since is not None and key not in starts:
            starts[key] = rule, since
    if not starts:
        return Drift()
    pairs = contrasts_since(events, min(since for _, since in starts.values()), max_per_user)
    through = max((ev.feedback.created_at for ev in events), default=0.0)
    counts: list[tuple[str, Rule, float, int, int]] = []
    for key, (rule, since) in starts.items():
        assert rule.check is not None
        check, support, relevant = rule.check, 0, 0
        for pair in pairs:
            if min(pair.chosen.at, pair.rejected.at) <= since:
                continue
            chosen, rejected = check.passes(pair.chosen), check.passes(pair.rejected)
            if chosen != rejected:
                relevant, support = relevant + 1, support + chosen
        if relevant >= MIN_ITEMS:
            counts.append((key, rule, since, support, relevant))
    held: list[Standing] = []
    turned: list[Standing] = []
    for key, rule, since, support, relevant in counts:
        p = min(1.0, float(binomtest(support, relevant, 0.5, alternative="less").pvalue) * len(counts))
        standing = Standing(rule.text, key, since, support, relevant, through, p)
        (turned if p < alpha else held).append(standing)
    return Drift(tuple(held), tuple(turned))
