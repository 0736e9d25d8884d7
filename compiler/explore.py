"""Explore on the canary: a candidate the held-out slice cannot decide is tried on live traffic.

A taste the served model meets a few times in forty answers leaves the held-out slice with no
contrast, although the candidate, once served, would produce the contrast a test needs. When the
operator enabled canaries (`SPECLEARN_CANARY_FRACTION` > 0), such a candidate is published as
`candidate`, served to that sticky share of users, and the always-valid test of the sidecar
(promote.py) promotes or rolls it back on live thumbs; a rollback is remembered (memory.py).

It is explored only when the offline evidence points its way and nothing contradicts it: every
rule it adds was asked for in comments by enough distinct users, or sided with the users on the
items it was validated on significantly (a one-sided binomial test, Bonferroni-corrected for the
rules tried, at the gate's alpha, so noise rarely earns a canary: bench.learning.noise); the
held-out slice, however thin, does not favour the current spec; no other canary is running; and
the round is not held for a person.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from scipy.stats import binomtest

CANDIDATE = "candidate"  # the label the canary share is served (proxy/routing.py)


@dataclass(frozen=True)
class Canary:
    """The operator's canary, as a round finds it."""

    share: float  # SPECLEARN_CANARY_FRACTION: 0 means canaries are off
    running: int | None = None  # the version labelled `candidate` (and not production), if any

    def waits(self, label: str) -> str:
        """Why a round that would publish as `label` waits for the live test ("" when it need not):
        a new candidate restarts the test, so rounds that each replaced the undecided one kept it
        from ever deciding (bench.live_loop, drift over six days). One live test runs at a time:
        the round is a check-in meanwhile (checkin.py), and promote.py ends a test that
        stays undecided."""
        if label != CANDIDATE or self.share <= 0 or self.running is None:
            return ""
        return (f"the live test of v{self.running} on the canary share is still deciding: the round waits "
                "for its verdict (a new candidate would restart it)")  # fmt: skip


@dataclass(frozen=True)
class AddedRule:
    """A rule the candidate adds, with the evidence it was selected on."""

    text: str
    support: int  # items it sided with the user on
    relevant: int  # items it took a side on
    requested_by: int  # distinct users who asked for it in words (0: nobody did)


@dataclass(frozen=True)
class Exploration:
    explore: bool
    reason: str


def sided_with_users(rule: AddedRule, tried: int) -> float:
    """The corrected p-value of "this rule sides with the users no more often than a coin"."""
    if rule.relevant == 0:
        return 1.0
    p = binomtest(rule.support, rule.relevant, 0.5, alternative="greater").pvalue
    return min(1.0, float(p) * max(tried, 1))


def decide(
    added: Sequence[AddedRule],
    canary: Canary,
    *,
    held_for_person: str,
    heldout_favours_current: bool,
    min_requesting: int,
    alpha: float,
    tried: int,
) -> Exploration:
    """Whether to publish the undecided candidate to the canary share, and why (or why not)."""
    if canary.share <= 0:
        return Exploration(False, "canaries are off (SPECLEARN_CANARY_FRACTION = 0)")
    if held_for_person:
        return Exploration(False, "held for a person")
    if canary.running is not None:
        return Exploration(False, f"a canary experiment on v{canary.running} is still deciding")
    if not added:
        return Exploration(False, "the candidate adds no rule")
    if heldout_favours_current:
        return Exploration(False, "the held-out feedback favours the current spec")
    reasons = []
    for rule in added:
        if rule.requested_by >= min_requesting:
            reasons.append(f"{rule.text!r}: asked for by {rule.requested_by} users")
            continue
        p = sided_with_users(rule, tried)
        if p >= alpha:
            return Exploration(False, f"{rule.text!r}: neither asked for by {min_requesting} users nor "
                                      f"significant on its {rule.relevant} item(s) (p = {p:.3f})")  # fmt: skip
        reasons.append(f"{rule.text!r}: sided with users on {rule.support}/{rule.relevant} (p = {p:.3f})")
    return Exploration(True, "; ".join(reasons))
