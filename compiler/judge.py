"""The LLM judges: does an answer follow a rule (or a spec) better than another?

Three ways to ask, measured against each other in `python -m bench.learning.judges`:

- pairwise: "which of A and B follows the rule?", asked in both presentation orders and
  averaged, which cancels a position bias (small models often just answer "A");
- pointwise: "does this answer follow the rule? Yes/No", asked of each answer alone; the
  difference of the two P(yes) says which follows it better, with no position to be biased by;
- calibrated: either of the above, its raw margin rescaled by what the judge does on items whose
  answer is known (a one-parameter logistic fit, `Calibrated`): a judge whose small margins are
  reliably right becomes decisive, one whose margins are noise takes no side.

Votes are soft (log probabilities); a score near one half is "no opinion".
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from scipy.optimize import minimize_scalar

from . import prompts
from .dataset import Example, Pair
from .llm import LLMClient, Message, run_all
from .stats import wilson_lower

NO_OPINION = 0.1  # |P(preferred) - 0.5| below this: the judge takes no side
YES_NO = ("Yes", "No")
MAX_SCALE = 60.0  # calibration slope bound: a margin of 0.05 becomes at most P = 0.95


def trusted(agree: int, n: int, min_agreement: float) -> bool:
    """A judge is trusted when it beats a coin on the known answers with 95% confidence (Wilson
    lower bound above one half) and reaches `min_agreement`."""
    return n > 0 and agree / n >= min_agreement and wilson_lower(agree, n) > 0.5


def verdict(p_chosen: float) -> int:
    """+1 the judge sides with the user's choice, -1 against it, 0 no opinion."""
    if p_chosen > 0.5 + NO_OPINION:
        return 1
    if p_chosen < 0.5 - NO_OPINION:
        return -1
    return 0


def forced_choice(p_chosen: float) -> int:
    """+1 the judge leans to `chosen`, -1 to the other, 0 an exact tie: the choice an annotator
    who must pick one makes. Benchmarks score by it; `verdict`'s band is the compiler's caution."""
    return (p_chosen > 0.5) - (p_chosen < 0.5)


class Judge:
    """P(`pair.chosen` follows the rule or spec better than `pair.rejected`)."""

    kind = ""
    # a graded vote is needed (calibration fits a scale to the margins): where the endpoint
    # returns no logprobs, each question is answered by sampled votes (LLMClient.choose)
    graded = False

    def __init__(self, llm: LLMClient, max_tokens: int = 4) -> None:
        self.llm = llm
        self.max_tokens = max_tokens

    @property
    def name(self) -> str:
        return f"{self.llm.model}/{self.kind}"

    async def by_rule(self, rule: str, pair: Pair, stage: str = "validate") -> float:
        raise NotImplementedError

    async def by_spec(self, spec: str, pair: Pair) -> float:
        raise NotImplementedError


class PairwiseJudge(Judge):
    kind = "pairwise"

    async def _both_orders(self, make: Callable[[Example, Example], list[Message]], pair: Pair, stage: str) -> float:
        ask = self.llm.choose
        first = await ask(make(pair.chosen, pair.rejected), max_tokens=self.max_tokens, stage=stage, graded=self.graded)
        second = await ask(
            make(pair.rejected, pair.chosen), max_tokens=self.max_tokens, stage=stage, graded=self.graded
        )
        return (first + (1.0 - second)) / 2

    async def by_rule(self, rule: str, pair: Pair, stage: str = "validate") -> float:
        return await self._both_orders(lambda a, b: prompts.judge_rule(rule, a, b), pair, stage)

    async def by_spec(self, spec: str, pair: Pair) -> float:
        return await self._both_orders(lambda a, b: prompts.judge_spec(spec, a, b), pair, "gate")


class PointwiseJudge(Judge):
    kind = "pointwise"

    async def _yes(self, messages: list[Message], stage: str) -> float:
        return await self.llm.choose(messages, max_tokens=self.max_tokens, stage=stage, options=YES_NO,
                                     graded=self.graded)  # fmt: skip

    async def _compare(self, make: Callable[[Example], list[Message]], pair: Pair, stage: str) -> float:
        chosen, rejected = await run_all(self._yes(make(e), stage) for e in (pair.chosen, pair.rejected))
        return 0.5 + (chosen - rejected) / 2

    async def by_rule(self, rule: str, pair: Pair, stage: str = "validate") -> float:
        return await self._compare(lambda e: prompts.follows_rule(rule, e), pair, stage)

    async def by_spec(self, spec: str, pair: Pair) -> float:
        return await self._compare(lambda e: prompts.follows_spec(spec, e), pair, "gate")


def fit_scale(margins: Sequence[float]) -> float:
    """The slope a of P(right) = sigmoid(a * margin) that best explains known-answer items
    (maximum likelihood, bounded): large when the margins are reliably on the right side,
    near zero when they are noise. `margins` are raw P(chosen) - 0.5."""
    if not margins:
        return 0.0

    def loss(a: float) -> float:
        return sum(math.log1p(math.exp(-a * m)) for m in margins)

    return float(minimize_scalar(loss, bounds=(0.0, MAX_SCALE), method="bounded").x)


def rescale(raw: float, scale: float) -> float:
    return 1.0 / (1.0 + math.exp(-scale * (raw - 0.5)))


class Calibrated(Judge):
    """A judge whose raw margins are rescaled by `fit_scale` on items with a known answer. Its
    base judge asks for graded votes: a 0/1 vote makes every margin ±0.5 and the fit degenerate."""

    graded = True

    def __init__(self, base: Judge, scale: float = 1.0) -> None:
        super().__init__(base.llm, base.max_tokens)
        self.base, self.scale = base, scale
        self.kind = f"{base.kind}+calibrated"
        base.graded = True

    async def by_rule(self, rule: str, pair: Pair, stage: str = "validate") -> float:
        return rescale(await self.base.by_rule(rule, pair, stage), self.scale)

    async def by_spec(self, spec: str, pair: Pair) -> float:
        return rescale(await self.base.by_spec(spec, pair), self.scale)


KINDS: dict[str, type[Judge]] = {"pairwise": PairwiseJudge, "pointwise": PointwiseJudge}


def make_judge(kind: str, llm: LLMClient, max_tokens: int = 4) -> Judge:
    """`pairwise`, `pointwise`, or either with `+calibrated` (the scale is fitted by `calibrate`)."""
    base, _, cal = kind.partition("+")
    if base not in KINDS or cal not in ("", "calibrated"):
        raise ValueError(f"unknown judge {kind!r}: pairwise, pointwise, pairwise+calibrated, pointwise+calibrated")
    judge = KINDS[base](llm, max_tokens)
    return Calibrated(judge) if cal else judge


@dataclass(frozen=True)
class CalibrationItem:
    """A rule and a pair whose preferred answer follows it and whose rejected one does not.
    kind: `menu` (a built-in check decides it) or `open` (no check could: known by construction)."""

    rule: str
    pair: Pair
    kind: str
    source: str = ""


@dataclass
class Calibration:
    judge: str
    agree: int
    n: int
    by_kind: dict[str, tuple[int, int]]
    trusted: bool
    scale: float | None = None

    @property
    def accuracy(self) -> float:
        return self.agree / self.n if self.n else 0.0

    def to_meta(self) -> dict[str, object]:
        out: dict[str, object] = {"judge": self.judge, "agree": self.agree, "items": self.n, "trusted": self.trusted,
                                  "by_kind": {k: {"agree": a, "items": n} for k, (a, n) in self.by_kind.items()}}  # fmt: skip
        if self.scale is not None:
            out["scale"] = round(self.scale, 3)
        return out

    def describe(self) -> str:
        kinds = ", ".join(f"{k} {a}/{n}" for k, (a, n) in sorted(self.by_kind.items()))
        return f"{self.judge}: {self.agree}/{self.n} known answers right ({kinds})"


async def calibrate(
    judge: Judge, items: Sequence[CalibrationItem], *, passes: Callable[[int, int], bool]
) -> Calibration:
    """Does this judge see what the items' known answers say? A calibrated judge is scored by
    leave-one-out (each item judged with the scale fitted on the others), then keeps the scale
    fitted on all of them. `passes(agree, n)` decides trust."""
    base = judge.base if isinstance(judge, Calibrated) else judge
    raw = await run_all(base.by_rule(i.rule, i.pair, "calibrate") for i in items)
    margins = [r - 0.5 for r in raw]
    scale: float | None = None
    if isinstance(judge, Calibrated):
        right = [verdict(rescale(r, fit_scale(margins[:k] + margins[k + 1 :]))) > 0 for k, r in enumerate(raw)]
        scale = judge.scale = fit_scale(margins)
    else:
        right = [verdict(r) > 0 for r in raw]
    by_kind: dict[str, tuple[int, int]] = {}
    for item, ok in zip(items, right, strict=True):
        a, n = by_kind.get(item.kind, (0, 0))
        by_kind[item.kind] = (a + ok, n + 1)
    agree = sum(right)
    return Calibration(judge.name, agree, len(items), by_kind, passes(agree, len(items)), scale)
