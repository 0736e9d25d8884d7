"""Comment-only learning: wishes the answers never meet, taught by what users wrote on down votes."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from tests.fake_llm import one_round, system_message

FR = "La capitale de la France est Paris, et je pense que vous allez aimer cette ville pour les musées."
EN = "The capital of France is Paris, and you will love the city for its museums and its food."


def french_when_told(body: dict[str, Any]) -> str:
    return FR if "in French" in system_message(body) else EN


def model_that_closes_only_when_told(body: dict[str, Any]) -> str:
    answer = "Tea: boil water, steep the leaves for three minutes, then pour."
    told = re.search(r'end every answer with the line "hope', system_message(body), re.I)
    return f"{answer}\nHope this helps!" if told else answer


async def test_comments_alone_teach_a_wish_never_met(tmp_path: Path) -> None:
    before, after = await one_round(tmp_path, french_when_told, "french", complain_every=2, unary_comments=True)
    assert before.eval_up_rate == 0.0 and before.compile_result == "published", before.compile_reason
    assert after.eval_up_rate == 1.0 and "French" in after.spec_text


async def test_comments_alone_teach_a_closing_line(tmp_path: Path) -> None:
    """No answer ever earns an up vote, so there is no pair to learn from: only what some users
    wrote on their down votes. The round must still learn the closing line, through the proxy."""
    before, after = await one_round(tmp_path, model_that_closes_only_when_told, "closing")
    assert before.train_up_rate == 0.0 and before.comments > 0
    assert (before.compile_result, before.published) == ("published", "demo@2")
    assert before.eval_up_rate == 0.0 and after.eval_up_rate == 1.0
    assert 'End every answer with the line "Hope this helps!".' in after.spec_text


async def test_with_the_setting_off_a_round_with_no_pairs_is_skipped(tmp_path: Path) -> None:
    rows = await one_round(tmp_path, french_when_told, "french", complain_every=2, unary_comments=False)
    assert rows[0].compile_result == "skipped" and "need training pairs" in rows[0].compile_reason


def test_a_looping_paragraph_is_detected() -> None:
    from compiler.synthesize import looping

    assert looping("Voici une personne système prompt. " * 5)
    assert not looping("You answer in French. You keep answers short and you end with a friendly line.")
