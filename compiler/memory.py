"""What earlier rounds concluded about each rule, so a round builds on them instead of starting over.

Every round appends its conclusions to the ledger (`Ledger.add_conclusions`): a rule served
(`kept`), taken out because held-out feedback contradicted it (`dropped`), refused offline by
validation or the gate (`refused`), published to the canary share for live traffic to decide
(`exploring`), and the live test's verdict on it (`confirmed_live` after a promotion,
`refused_live` after a rollback). The latest conclusion about a rule is what the next round
remembers:

- a rule refused (offline or live) is not proposed again on the same evidence: it comes back
  only when `RECONSIDER_AFTER` feedback items that bear on it arrived after the refusal (for a
  rule with a check, contrasts where the check takes a side and comments on answers that break
  it; for a rule only a judge can read, any new contrast or comment), so a rolled-back canary is
  not re-tried on the votes that rolled it back;
- feedback on a version that served a rule is evidence about that rule: answers of a canary that
  carried it enter the window like any other, and the live test's numbers (lift, always-valid p)
  are kept with the verdict and shown in the round report.

Conclusions hold rule text, a check and counts, never a user or a feedback text, so forgetting a
user (`speclearn feedback forget`) has nothing to erase here.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .checks import Check
from .dataset import Example, Pair
from .text import normalize


class Verdict(enum.StrEnum):
    KEPT = "kept"
    DROPPED = "dropped"
    REFUSED = "refused"
    EXPLORING = "exploring"
    CONFIRMED_LIVE = "confirmed_live"
    REFUSED_LIVE = "refused_live"


REFUSALS = frozenset({Verdict.REFUSED, Verdict.REFUSED_LIVE})


def rule_key(text: str, check: Check | str | None) -> str:
    """One rule however it is worded: its check when it has one, else its normalized words."""
    return f"check:{check}" if check is not None else f"text:{normalize(text)}"


@dataclass(frozen=True)
class Conclusion:
    """One round's (or one live test's) verdict on one rule of one spec."""

    spec: str
    rule: str  # rule_key
    text: str
    verdict: Verdict
    at: float  # when it was concluded
    through: float  # the newest feedback the evidence included: newer feedback is new evidence
    reason: str = ""
    version: int | None = None  # the version that served it (kept, exploring, live verdicts)
    evidence: Mapping[str, Any] = field(default_factory=dict)  # counts and test numbers, no user

    def to_json(self) -> dict[str, Any]:
        return {"spec": self.spec, "rule": self.rule, "text": self.text, "verdict": str(self.verdict),
                "at": self.at, "through": self.through, "reason": self.reason, "version": self.version,
                "evidence": dict(self.evidence)}  # fmt: skip

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Conclusion:
        return cls(str(data["spec"]), str(data["rule"]), str(data["text"]), Verdict(data["verdict"]),
                   float(data["at"]), float(data["through"]), str(data.get("reason") or ""),
                   data.get("version"), dict(data.get("evidence") or {}))  # fmt: skip

    def describe(self) -> str:
        where = f" (v{self.version})" if self.version is not None else ""
        return f"{self.verdict.value}{where}: {self.reason}" if self.reason else f"{self.verdict.value}{where}"


@dataclass(frozen=True)
class Recalled:
    """A candidate rule the memory set aside, and why: shown in the round report."""

    text: str
    conclusion: Conclusion
    new_items: int

    def to_meta(self) -> dict[str, Any]:
        c = self.conclusion
        return {"text": self.text, "verdict": c.verdict.value, "at": c.at, "version": c.version,
                "reason": c.reason, "new_items": self.new_items}  # fmt: skip


# A refused rule is tried again once this many new feedback items bear on it: as many as the
# smallest gate half that could reach significance (pipeline.MIN_GATE_ITEMS), so a rule is not
# re-tried on a handful of votes that could not overturn the evidence that refused it.
RECONSIDER_AFTER = 10


def bearing(check: Check | None, pairs: Iterable[Pair], comments: Iterable[Example], since: float) -> int:
    """Feedback items newer than `since` that bear on a rule: contrasts where its check takes a
    side, and comments on answers that break it (any new contrast or comment for a rule with no
    check: only a judge could say which bear on it)."""
    n = 0
    for pair in pairs:
        if max(pair.chosen.at, pair.rejected.at) <= since:
            continue
        if check is None or check.passes(pair.chosen) != check.passes(pair.rejected):
            n += 1
    return n + sum(1 for e in comments if e.comment and e.at > since and (check is None or not check.passes(e)))


class Memory:
    """The conclusions about one spec, newest last; the latest per rule is what counts."""

    def __init__(self, conclusions: Sequence[Conclusion] = ()) -> None:
        self.conclusions = sorted(conclusions, key=lambda c: c.at)
        self.latest: dict[str, Conclusion] = {c.rule: c for c in self.conclusions}

    def __bool__(self) -> bool:
        return bool(self.conclusions)

    def refusal(self, key: str) -> Conclusion | None:
        c = self.latest.get(key)
        return c if c is not None and c.verdict in REFUSALS else None

    def verdict(self, key: str) -> Verdict | None:
        c = self.latest.get(key)
        return None if c is None else c.verdict

    def set_aside(
        self, key: str, text: str, check: Check | None, pairs: Sequence[Pair], comments: Sequence[Example], *,
        min_new: int = RECONSIDER_AFTER,
    ) -> Recalled | None:  # fmt: skip
        """The refusal this rule is still under (too little new evidence since), else None."""
        refused = self.refusal(key)
        if refused is None:
            return None
        new = bearing(check, pairs, comments, refused.through)
        return Recalled(text, refused, new) if new < min_new else None

    def summary(self) -> dict[str, int]:
        """How many rules stand at each verdict now."""
        out: dict[str, int] = {}
        for c in self.latest.values():
            out[c.verdict.value] = out.get(c.verdict.value, 0) + 1
        return out


def served_rules(meta: Mapping[str, Any]) -> dict[str, str]:
    """The rules a compiled version serves, by key, from its front matter (none for a person's)."""
    out: dict[str, str] = {}
    for p in meta.get("principles") or ():
        if isinstance(p, Mapping) and p.get("text"):
            out[rule_key(str(p["text"]), p.get("check") or None)] = str(p["text"])
    return out


def live_verdicts(
    spec: str, *, candidate: int, candidate_meta: Mapping[str, Any], production_meta: Mapping[str, Any],
    promoted: bool, reason: str, at: float, evidence: Mapping[str, Any],
) -> list[Conclusion]:  # fmt: skip
    """The live test's verdict on each rule the candidate served and production did not: the
    thumbs of users who got it are evidence about exactly those rules."""
    added = {k: t for k, t in served_rules(candidate_meta).items() if k not in served_rules(production_meta)}
    verdict = Verdict.CONFIRMED_LIVE if promoted else Verdict.REFUSED_LIVE
    return [Conclusion(spec, k, t, verdict, at, at, reason, candidate, evidence) for k, t in added.items()]
