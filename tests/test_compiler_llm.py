"""The compiler's LLM client: cache, budget, retries, soft A/B votes."""

from __future__ import annotations

import math
from pathlib import Path

import httpx
import pytest

from compiler.errors import BudgetExceeded, LLMError
from compiler.llm import Budget, LLMClient, choice_probability, run_all
from tests.fake_llm import FakeLLM

MSG = [{"role": "user", "content": "TASK: something else\nhello"}]


def client(fake: FakeLLM, tmp_path: Path | None = None, **kw: object) -> LLMClient:
    return LLMClient(
        "http://fake/v1", "m", transport=fake.transport, cache_dir=tmp_path, retries=kw.pop("retries", 2), **kw
    )  # type: ignore[arg-type]


async def test_cache_keyed_by_prompt_model_and_seed(tmp_path: Path) -> None:
    fake = FakeLLM()
    async with client(fake, tmp_path, seed=1) as llm:
        a = await llm.chat(MSG, max_tokens=8)
        b = await llm.chat(MSG, max_tokens=8)
        assert a == b and len(fake.calls) == 1 and llm.budget.cached_calls == 1 and llm.budget.calls == 1
        await llm.chat(MSG, max_tokens=8, seed=2)  # another seed: another entry
        assert len(fake.calls) == 2
    async with LLMClient("http://fake/v1", "other-model", transport=fake.transport, cache_dir=tmp_path, seed=1) as llm2:
        await llm2.chat(MSG, max_tokens=8)
    assert len(fake.calls) == 3
    async with client(fake, tmp_path, seed=1) as llm3:  # a new process, same cache dir
        assert await llm3.chat(MSG, max_tokens=8) == a and len(fake.calls) == 3


async def test_budget_stops_before_the_call() -> None:
    fake = FakeLLM()
    async with client(fake, budget=Budget(max_calls=2, max_tokens=10**6)) as llm:
        await llm.chat(MSG, max_tokens=8)
        await llm.chat(MSG, max_tokens=8, seed=5)
        with pytest.raises(BudgetExceeded, match="call budget"):
            await llm.chat(MSG, max_tokens=8, seed=6)
    assert len(fake.calls) == 2
    async with client(FakeLLM(), budget=Budget(max_calls=100, max_tokens=30)) as llm:
        with pytest.raises(BudgetExceeded, match="token budget"):
            await llm.chat(MSG, max_tokens=64)


async def test_budget_counts_real_tokens_and_stages() -> None:
    fake = FakeLLM()
    async with client(fake) as llm:
        await llm.chat(MSG, max_tokens=8, stage="propose")
        await llm.choose(MSG, stage="judge")
    d = llm.budget.as_dict()
    assert d["llm_calls"] == 2 and d["tokens"] > 0
    assert set(d["by_stage"]) == {"propose", "judge"}


async def test_retries_then_gives_up() -> None:
    fake = FakeLLM(fail_first=2)
    async with client(fake, retries=2) as llm:
        assert await llm.chat(MSG, max_tokens=8)
    assert len(fake.calls) == 3
    async with client(FakeLLM(status=503), retries=1) as llm:
        with pytest.raises(LLMError, match="after 2 attempts"):
            await llm.chat(MSG, max_tokens=8)
    async with client(FakeLLM(status=401), retries=3) as llm:
        with pytest.raises(LLMError, match="refused"):
            await llm.chat(MSG, max_tokens=8)


async def test_failed_call_gives_its_tokens_back() -> None:
    async with client(FakeLLM(status=503), retries=0, budget=Budget(10, 1000)) as llm:
        with pytest.raises(LLMError):
            await llm.chat(MSG, max_tokens=8)
        assert llm.budget._reserved == 0


def test_choice_probability_from_logprobs_and_text() -> None:
    data = {"choices": [{"logprobs": {"content": [
        {"token": " ", "top_logprobs": []},
        {"token": "A", "top_logprobs": [{"token": "A", "logprob": math.log(0.6)}, {"token": " B", "logprob": math.log(0.2)}]},
    ]}}]}  # fmt: skip
    assert choice_probability(data, "A") == pytest.approx(0.75)
    assert choice_probability({}, "B") == 0.0
    assert choice_probability({}, "Answer A is better") == 1.0
    assert choice_probability({}, "neither") == 0.5


async def test_logprobs_refused_falls_back_to_text() -> None:
    seen: list[dict] = []

    def handler(request: httpx.Request) -> httpx.Response:
        import json

        body = json.loads(request.content)
        seen.append(body)
        if "logprobs" in body:
            return httpx.Response(400, json={"error": {"message": "logprobs not supported"}})
        return httpx.Response(200, json={"choices": [{"message": {"content": "B"}}], "usage": {"total_tokens": 5}})

    async with LLMClient("http://x/v1", "m", transport=httpx.MockTransport(handler)) as llm:
        assert await llm.choose(MSG) == 0.0
        assert await llm.choose(MSG + MSG) == 0.0
    assert ["logprobs" in b for b in seen] == [True, False, False]


async def test_extra_body_fields_go_with_every_chat_call() -> None:
    """An endpoint-specific field (llama.cpp's cache_prompt) is sent on plain and choice calls alike."""
    seen: list[dict] = []

    def handler(request: httpx.Request) -> httpx.Response:
        import json

        seen.append(json.loads(request.content))
        return httpx.Response(200, json={"choices": [{"message": {"content": "A"}}], "usage": {"total_tokens": 5}})

    async with LLMClient("http://x/v1", "m", transport=httpx.MockTransport(handler),
                         extra_body={"cache_prompt": False}) as llm:  # fmt: skip
        await llm.choose(MSG)
        await llm.chat(MSG + MSG, max_tokens=8)
    async with LLMClient("http://x/v1", "m", transport=httpx.MockTransport(handler)) as llm:
        await llm.chat(MSG, max_tokens=8)
    assert [b.get("cache_prompt") for b in seen] == [False, False, None]


async def test_run_all_cancels_the_rest_on_failure() -> None:
    import asyncio

    finished: list[int] = []

    async def ok(i: int) -> int:
        await asyncio.sleep(0.05)
        finished.append(i)
        return i

    async def boom() -> int:
        raise BudgetExceeded("spent")

    with pytest.raises(BudgetExceeded):
        await run_all([ok(1), boom(), ok(2)])
    await asyncio.sleep(0.1)
    assert finished == []
