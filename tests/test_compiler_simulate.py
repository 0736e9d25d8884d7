"""The closed loop through the real proxy: simulated users, thumbs, a compile, a hot reload.

The upstream is the fake LLM acting as a model that follows a word limit when its system
message states one and otherwise rambles on every other seed, so the loop has something to learn.
"""

from __future__ import annotations

import re
import threading
import time
from pathlib import Path
from typing import Any

from compiler.simulate import EVAL_LLAMA_CPP
from tests.fake_llm import one_round, system_message

LONG = ("Well, this is a big topic and there is a lot to say about it, so let me walk you through the "
        "background, the history and a few practical considerations before we get to the answer.")  # fmt: skip


def obedient_model(body: dict[str, Any]) -> str:
    if re.search(r"at most \d+ words", system_message(body)):
        return "Here is the short answer you need."
    return "Here is the short answer you need." if body.get("seed", 0) % 2 else LONG


async def test_the_loop_learns_what_users_like(tmp_path: Path) -> None:
    before, after = await one_round(tmp_path, obedient_model, "short")
    assert before.version == "demo@1" and after.version == "demo@2"
    assert before.compile_result == "published" and before.published == "demo@2"
    assert after.eval_up_rate == 1.0 > before.eval_up_rate
    assert before.llm_calls > 0 and "words" in before.diff
    # the compile's decisions travel with the row (bench.quality keeps them)
    assert before.report["gate"]["passed"] is True
    assert any(c["status"] == "added" and c["check"].startswith("max_words") for c in before.report["candidates"])


async def test_held_out_questions_are_asked_one_at_a_time(tmp_path: Path) -> None:
    """A server batching concurrent requests is not deterministic at temperature 0, so the
    held-out arms must not overlap; training questions still may (users ask at once)."""
    in_flight = {"eval": 0, "train": 0}
    most = {"eval": 0, "train": 0}
    lock = threading.Lock()

    def slow_model(body: dict[str, Any]) -> str:
        kind = "eval" if body.get("temperature") == 0.0 else "train"
        with lock:
            in_flight[kind] += 1
            most[kind] = max(most[kind], in_flight[kind])
        time.sleep(0.05)  # long enough for concurrent requests to overlap
        with lock:
            in_flight[kind] -= 1
        return obedient_model(body)

    await one_round(tmp_path, slow_model, "short", concurrency=4)
    assert most["train"] > 1  # the detector sees overlap where there is some
    assert most["eval"] == 1


async def test_held_out_questions_carry_the_eval_fields_through_the_proxy(tmp_path: Path) -> None:
    """llama.cpp's prompt cache makes an answer depend on the request before it: the held-out
    questions reach the upstream with it off, the users' questions as they sent them."""
    seen: dict[str, list[Any]] = {"eval": [], "train": []}

    def recording_model(body: dict[str, Any]) -> str:
        seen["eval" if body.get("temperature") == 0.0 else "train"].append((body.get("cache_prompt"), body.get("seed")))
        return obedient_model(body)

    await one_round(tmp_path, recording_model, "short", eval_extra=EVAL_LLAMA_CPP)
    assert seen["eval"] and all(cache is False for cache, _ in seen["eval"])
    assert seen["train"] and all(cache is None for cache, _ in seen["train"])
    # both rounds ask each held-out question with the same seed: only the spec differs
    half = len(seen["eval"]) // 2
    assert [s for _, s in seen["eval"][:half]] == [s for _, s in seen["eval"][half:]]
