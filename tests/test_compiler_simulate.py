"""The closed loop through the real proxy: simulated users, thumbs, a compile, a hot reload.

The upstream is the fake LLM acting as a model that follows a word limit when its system
message states one and otherwise rambles on every other seed, so the loop has something to learn.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from compiler.simulate import TASTES, LoopRound, closed_loop
from tests.fake_llm import FakeLLM

LONG = ("Well, this is a big topic and there is a lot to say about it, so let me walk you through the "
        "background, the history and a few practical considerations before we get to the answer.")  # fmt: skip


def obedient_model(body: dict[str, Any]) -> str:
    system = " ".join(m["content"] for m in body["messages"] if m["role"] == "system")
    if re.search(r"at most \d+ words", system):
        return "Here is the short answer you need."
    return "Here is the short answer you need." if body.get("seed", 0) % 2 else LONG


async def one_round(tmp_path: Path, model: Callable[[dict[str, Any]], str], taste: str) -> list[LoopRound]:
    """Rate, compile once, rate again, with the fake LLM as both the served model and the compiler's."""
    with FakeLLM(answer=model).serve() as base_url:
        return await closed_loop(base_url, tmp_path, TASTES[taste], rounds=1, samples=2,
                                 compiler_overrides={"seed": 1}, say=lambda m: None)  # fmt: skip


async def test_the_loop_learns_what_users_like(tmp_path: Path) -> None:
    before, after = await one_round(tmp_path, obedient_model, "short")
    assert before.version == "demo@1" and after.version == "demo@2"
    assert before.compile_result == "published" and before.published == "demo@2"
    assert after.eval_up_rate == 1.0 > before.eval_up_rate
    assert before.llm_calls > 0 and "words" in before.diff


def model_that_closes_only_when_told(body: dict[str, Any]) -> str:
    system = " ".join(m["content"] for m in body["messages"] if m["role"] == "system")
    answer = "Tea: boil water, steep the leaves for three minutes, then pour."
    return f"{answer}\nHope this helps!" if re.search(r'end every answer with the line "hope', system, re.I) else answer


async def test_comments_alone_teach_a_wish_the_answers_never_met(tmp_path: Path) -> None:
    """No answer ever earns an up vote, so there is no pair to learn from: only what some users
    wrote on their down votes. The round must still learn the closing line, through the proxy."""
    before, after = await one_round(tmp_path, model_that_closes_only_when_told, "closing")
    assert before.train_up_rate == 0.0 and before.comments > 0
    assert (before.compile_result, before.published) == ("published", "demo@2")
    assert before.eval_up_rate == 0.0 and after.eval_up_rate == 1.0
    assert 'End every answer with the line "Hope this helps!".' in after.spec_text
