"""The LLM judge: which of two answers fits a criterion, asked in both presentation orders.

Asking twice with A and B swapped and averaging cancels the judge's position bias (small models
often just answer "A"). With log probabilities the vote is soft, so even a biased judge leaves
a measurable signal; a pair where the two orders disagree counts as "no opinion".
"""

from __future__ import annotations

from collections.abc import Callable

from . import prompts
from .dataset import Example, Pair
from .llm import LLMClient, Message

NO_OPINION = 0.1  # |P(preferred) - 0.5| below this: the judge takes no side


def verdict(p_chosen: float) -> int:
    """+1 the judge sides with the user's choice, -1 against it, 0 no opinion."""
    if p_chosen > 0.5 + NO_OPINION:
        return 1
    if p_chosen < 0.5 - NO_OPINION:
        return -1
    return 0


class Judge:
    def __init__(self, llm: LLMClient, max_tokens: int = 4) -> None:
        self.llm = llm
        self.max_tokens = max_tokens

    async def both_orders(self, make: Callable[[Example, Example], list[Message]], pair: Pair, stage: str) -> float:
        """P(the judge prefers `pair.chosen`), averaged over both orders."""
        first = await self.llm.choose(make(pair.chosen, pair.rejected), max_tokens=self.max_tokens, stage=stage)
        second = await self.llm.choose(make(pair.rejected, pair.chosen), max_tokens=self.max_tokens, stage=stage)
        return (first + (1.0 - second)) / 2

    async def by_rule(self, rule: str, pair: Pair, stage: str = "validate") -> float:
        return await self.both_orders(lambda a, b: prompts.judge_rule(rule, a, b), pair, stage)

    async def by_spec(self, spec: str, pair: Pair) -> float:
        return await self.both_orders(lambda a, b: prompts.judge_spec(spec, a, b), pair, "gate")


async def calibrate(judge: Judge, items: list[tuple[str, Pair]]) -> tuple[int, int]:
    """Does this judge see what a program can check? `items` are (rule, pair) where the rule's
    check passes the preferred answer only; returns (judge agreed, items). A judge that cannot
    tell these apart is not asked about rules nobody can check."""
    from .llm import run_all

    scores = await run_all(judge.by_rule(rule, pair, "calibrate") for rule, pair in items)
    return sum(verdict(s) > 0 for s in scores), len(items)
