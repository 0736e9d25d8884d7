from __future__ import annotations

from pathlib import Path
from typing import Any

from compiler.simulate import TASTES, closed_loop
from tests.fake_llm import FakeLLM

FR = "La capitale de la France est Paris, et je pense que vous allez aimer cette ville pour les musées."
EN = "The capital of France is Paris, and you will love the city for its museums and its food."


def french_when_told(body: dict[str, Any]) -> str:
    system = " ".join(m["content"] for m in body["messages"] if m["role"] == "system")
    return FR if "in French" in system else EN


async def test_comments_alone_teach_a_wish_never_met(tmp_path: Path) -> None:
    fake = FakeLLM(answer=french_when_told)
    with fake.serve() as base_url:
        rows = await closed_loop(base_url, tmp_path, TASTES["french"], rounds=1, samples=2,
                                 compiler_overrides={"seed": 1, "unary_comments": True}, say=print,
                                 complain_every=2)  # fmt: skip
    before, after = rows
    assert before.eval_up_rate == 0.0 and before.compile_result == "published", before.compile_reason
    assert after.eval_up_rate == 1.0 and "French" in after.spec_text


async def test_with_the_setting_off_a_round_with_no_pairs_is_skipped(tmp_path: Path) -> None:
    fake = FakeLLM(answer=french_when_told)
    with fake.serve() as base_url:
        rows = await closed_loop(base_url, tmp_path, TASTES["french"], rounds=1, samples=2,
                                 compiler_overrides={"seed": 1, "unary_comments": False}, say=print,
                                 complain_every=2)  # fmt: skip
    assert rows[0].compile_result == "skipped" and "need training pairs" in rows[0].compile_reason


def test_a_looping_paragraph_is_detected() -> None:
    from compiler.synthesize import looping

    assert looping("Voici une personne système prompt. " * 5)
    assert not looping("You answer in French. You keep answers short and you end with a friendly line.")
