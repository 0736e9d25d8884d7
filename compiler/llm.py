"""The compiler's LLM: an OpenAI-compatible chat client with a disk cache and a hard budget.

Every call is seeded and cached on disk by (request hash, model, seed), so re-running a round with
the same seed and cache makes no upstream calls and yields the same spec. The budget counts real
upstream calls and tokens; a call that would overrun it raises `BudgetExceeded` before it is sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import math
import os
import re
import tempfile
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
import orjson

from .errors import BudgetExceeded, LLMError

log = logging.getLogger("speclearn.compiler.llm")
T = TypeVar("T")
Message = dict[str, str]
Options = tuple[str, str]
AB: Options = ("A", "B")
THINK_RE = re.compile(r"<think>.*?</think>", re.S)


def estimate_tokens(text: str) -> int:
    """A cheap, deliberately pessimistic token count (about 4 characters per token)."""
    return len(text) // 4 + 1


@dataclass
class Budget:
    """Upper bounds for one round; `reserve` before a call, `settle` after it."""

    max_calls: int
    max_tokens: int
    calls: int = 0
    tokens: int = 0
    cached_calls: int = 0
    by_stage: dict[str, list[int]] = field(default_factory=dict)  # stage -> [calls, tokens]
    _reserved: int = 0

    def reserve(self, estimate: int) -> None:
        if self.calls + 1 > self.max_calls:
            raise BudgetExceeded(f"LLM call budget spent ({self.calls}/{self.max_calls} calls)")
        if self.tokens + self._reserved + estimate > self.max_tokens:
            raise BudgetExceeded(f"LLM token budget spent ({self.tokens} used + {estimate} needed > {self.max_tokens})")
        self.calls += 1
        self._reserved += estimate

    def settle(self, estimate: int, used: int, stage: str) -> None:
        self._reserved -= estimate
        self.tokens += used
        calls_tokens = self.by_stage.setdefault(stage, [0, 0])
        calls_tokens[0] += 1
        calls_tokens[1] += used

    def release(self, estimate: int) -> None:
        """A reserved call that never reached the upstream (it failed): give the tokens back."""
        self._reserved -= estimate

    def as_dict(self) -> dict[str, Any]:
        return {
            "llm_calls": self.calls,
            "tokens": self.tokens,
            "cached_calls": self.cached_calls,
            "by_stage": {k: {"calls": v[0], "tokens": v[1]} for k, v in sorted(self.by_stage.items())},
        }


class ResponseCache:
    """One JSON file per request under `root`, written atomically."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def _path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.json"

    def get(self, key: str) -> dict[str, Any] | None:
        try:
            return orjson.loads(self._path(key).read_bytes())
        except (FileNotFoundError, orjson.JSONDecodeError):
            return None

    def put(self, key: str, value: dict[str, Any]) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(orjson.dumps(value))
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise


def cache_key(model: str, seed: int, body: dict[str, Any]) -> str:
    """Hash of the prompt and every sampling parameter, then model and seed."""
    prompt_hash = hashlib.sha256(orjson.dumps(body, option=orjson.OPT_SORT_KEYS)).hexdigest()
    return hashlib.sha256(f"{prompt_hash}\0{model}\0{seed}".encode()).hexdigest()


class LLMClient:
    """Chat completions against any OpenAI-compatible base URL (…/v1)."""

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key: str | None = None,
        seed: int = 0,
        temperature: float = 0.0,
        budget: Budget | None = None,
        cache_dir: Path | None = None,
        timeout: float = 120.0,
        concurrency: int = 4,
        retries: int = 3,
        transport: httpx.AsyncBaseTransport | None = None,
        on_call: Callable[[int], None] | None = None,
        extra_body: Mapping[str, object] | None = None,
    ) -> None:
        """`extra_body`: fields this endpoint understands beyond the OpenAI API, sent with every
        chat call (a benchmark's judge on llama.cpp: `{"cache_prompt": False}`, so a verdict does
        not depend on the requests before it)."""
        self.model, self.seed, self.temperature = model, seed, temperature
        self.extra_body = dict(extra_body or {})
        self.budget = budget or Budget(10**9, 10**12)
        self.cache = ResponseCache(cache_dir) if cache_dir else None
        self.retries = retries
        self._logprobs_ok = True
        self._embeddings_ok: bool | None = None  # does the endpoint serve /embeddings? (probed once)
        self.on_call = on_call
        self._sem = asyncio.Semaphore(max(1, concurrency))
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx.AsyncClient(
            base_url=base_url.rstrip("/") + "/",
            headers=headers,
            timeout=httpx.Timeout(timeout, connect=10.0),
            transport=transport,
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> LLMClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def chat(
        self,
        messages: list[Message],
        *,
        max_tokens: int,
        temperature: float | None = None,
        seed: int | None = None,
        stage: str = "other",
    ) -> str:
        """The assistant's text for `messages`; cached; charged to the budget when not cached."""
        result = await self._complete(messages, max_tokens, temperature, seed, stage, choice=None)
        return str(result["text"])

    async def choose(
        self, messages: list[Message], *, max_tokens: int = 4, stage: str = "judge", options: Options = AB
    ) -> float:
        """P(the answer is the first option) for a two-option question ("A"/"B", "Yes"/"No"),
        from the first option token's log probabilities when the endpoint returns them (a soft
        vote, useful even from a judge that always says "A"), else 1, 0 or 0.5 from the text."""
        result = await self._complete(messages, max_tokens, None, None, stage, choice=options)
        return float(result["p_a"])

    async def embeddings(self, texts: Sequence[str]) -> list[list[float]] | None:
        """The endpoint's embeddings of `texts`, or None when it does not serve them. The first
        call probes; a refusal is remembered for this client, so it is asked once. Not charged
        to the budget (no generation) and not cached."""
        if self._embeddings_ok is False:
            return None
        try:
            resp = await self._http.post("embeddings", json={"model": self.model, "input": list(texts)})
            if resp.status_code != 200:
                raise ValueError(f"HTTP {resp.status_code}")
            vectors = [item["embedding"] for item in sorted(resp.json()["data"], key=lambda d: d.get("index", 0))]
            if len(vectors) != len(texts) or not all(isinstance(v, list) and v for v in vectors):
                raise ValueError("not one vector per input")
        except (httpx.HTTPError, ValueError, KeyError, TypeError, AttributeError) as exc:
            if self._embeddings_ok is None:
                log.info("compiler endpoint serves no embeddings (%s)", exc)
            self._embeddings_ok = False
            return None
        self._embeddings_ok = True
        return [[float(x) for x in v] for v in vectors]

    async def _complete(
        self,
        messages: list[Message],
        max_tokens: int,
        temperature: float | None,
        seed: int | None,
        stage: str,
        *,
        choice: Options | None,
    ) -> dict[str, Any]:
        seed = self.seed if seed is None else seed
        body: dict[str, Any] = {
            "model": self.model,
            "messages": messages,
            "max_tokens": max_tokens,
            "temperature": self.temperature if temperature is None else temperature,
            "seed": seed,
            **self.extra_body,
        }
        if choice:
            body["logprobs"], body["top_logprobs"] = True, 10
        key = cache_key(self.model, seed, body)
        if self.cache is not None and (hit := self.cache.get(key)) is not None:
            self.budget.cached_calls += 1
            return hit
        estimate = sum(estimate_tokens(m["content"]) for m in messages) + max_tokens
        self.budget.reserve(estimate)
        try:
            async with self._sem:
                data = await self._post(body)
        except BaseException:
            self.budget.release(estimate)
            raise
        text, used = _parse(data, body)
        self.budget.settle(estimate, used, stage)
        if self.on_call is not None:
            self.on_call(used)
        result: dict[str, Any] = {"text": text, "tokens": used, "model": self.model, "seed": seed}
        if choice:
            result["p_a"] = choice_probability(data, text, choice)
        if self.cache is not None:
            self.cache.put(key, result)
        return result

    async def _post(self, body: dict[str, Any]) -> dict[str, Any]:
        delay = 0.5
        error = ""
        for attempt in range(self.retries + 1):
            if "logprobs" in body and not self._logprobs_ok:
                body = {k: v for k, v in body.items() if k not in ("logprobs", "top_logprobs")}
            try:
                resp = await self._http.post("chat/completions", json=body)
            except httpx.TransportError as exc:
                error = f"{type(exc).__name__}: {exc}"
            else:
                if resp.status_code == 200:
                    try:
                        data = resp.json()
                    except ValueError:
                        data = None
                    if isinstance(data, dict):
                        return data
                    error = f"not JSON: {resp.text[:300]}"
                else:
                    error = f"HTTP {resp.status_code}: {resp.text[:300]}"
                    if resp.status_code == 400 and "logprobs" in body and self._logprobs_ok:
                        self._logprobs_ok = False  # this endpoint refuses logprobs: vote by text
                        continue
                    if resp.status_code < 500 and resp.status_code != 429:
                        raise LLMError(f"compiler LLM refused the request: {error}")
            if attempt < self.retries:
                log.warning("compiler LLM call failed (%s); retrying in %.1fs", error, delay)
                await asyncio.sleep(delay)
                delay *= 2
        raise LLMError(f"compiler LLM failed after {self.retries + 1} attempts: {error}")


def choice_from_text(text: str, options: Options = AB) -> float:
    """1 or 0 for the first option word in the text, 0.5 if none. Single letters match only as
    capitals ("a" is an article, "A" a vote); words match in any case."""
    words = "|".join(re.escape(o) for o in options)
    flags = 0 if all(len(o) == 1 for o in options) else re.I
    m = re.search(rf"\b({words})\b", text, flags)
    if not m:
        return 0.5
    return 1.0 if m.group(1).lower() == options[0].lower() else 0.0


def choice_probability(data: dict[str, Any], text: str, options: Options = AB) -> float:
    """P(first) / (P(first) + P(second)) at the first generated token that is one of the
    options (case and spaces ignored: " yes", "Yes" and "YES" are one vote)."""
    keys = tuple(o.lower() for o in options)
    try:
        positions = data["choices"][0]["logprobs"]["content"] or []
    except (KeyError, IndexError, TypeError):
        positions = []
    for pos in positions:
        if not isinstance(pos, dict):
            continue
        token = str(pos.get("token", "")).strip().lower()
        if token not in keys:
            continue
        mass = dict.fromkeys(keys, 0.0)
        for alt in pos.get("top_logprobs") or []:
            t = str(alt.get("token", "")).strip().lower()
            if t in mass and isinstance(alt.get("logprob"), (int, float)):
                mass[t] += math.exp(alt["logprob"])
        total = sum(mass.values())
        if total > 0:
            return mass[keys[0]] / total
        return 1.0 if token == keys[0] else 0.0
    return choice_from_text(text, options)


def _parse(data: dict[str, Any], body: dict[str, Any]) -> tuple[str, int]:
    try:
        text = data["choices"][0]["message"].get("content") or ""
    except (KeyError, IndexError, TypeError, AttributeError) as exc:
        raise LLMError(f"compiler LLM answered without a chat completion: {str(data)[:300]}") from exc
    text = THINK_RE.sub("", text).strip()
    usage = data.get("usage") or {}
    used = usage.get("total_tokens") or (usage.get("prompt_tokens", 0) + usage.get("completion_tokens", 0))
    if not used:
        used = sum(estimate_tokens(m["content"]) for m in body["messages"]) + estimate_tokens(text)
    return text, int(used)


async def run_all(jobs: Iterable[Awaitable[T]]) -> list[T]:
    """Await every job concurrently (the client's semaphore bounds them); on the first failure
    cancel the rest and raise that failure itself, not an ExceptionGroup."""
    tasks = [asyncio.ensure_future(j) for j in jobs]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
