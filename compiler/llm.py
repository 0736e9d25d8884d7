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
from .quirks import ModelQuirks, Quirks, adapt, learn, refusal

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
    # how the endpoints made this round ask differently (max_completion_tokens, sampled votes,
    # embeddings that failed), each said once: the round's report and front matter show them
    notes: dict[str, str] = field(default_factory=dict)
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

    def note(self, key: str, text: str) -> None:
        self.notes.setdefault(key, text)

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "llm_calls": self.calls,
            "tokens": self.tokens,
            "cached_calls": self.cached_calls,
            "by_stage": {k: {"calls": v[0], "tokens": v[1]} for k, v in sorted(self.by_stage.items())},
        }
        if self.notes:
            out["notes"] = list(self.notes.values())
        return out


class ResponseCache:
    """One JSON file per request under `root`, written atomically."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def _path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.json"

    def get(self, key: str) -> dict[str, Any] | None:
        try:
            entry: dict[str, Any] = orjson.loads(self._path(key).read_bytes())
            return entry
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


@dataclass(frozen=True)
class EmbeddingEndpoint:
    """Where sentence embeddings are asked: an embedding model's name, never the chat model's."""

    base_url: str
    model: str
    api_key: str | None = None


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
        quirks: Quirks | None = None,
        reasoning_tokens: int = 1024,
        embeddings: EmbeddingEndpoint | None = None,
        vote_samples: int = 5,
    ) -> None:
        """`extra_body`: fields this endpoint understands beyond the OpenAI API, sent with every
        chat call (a benchmark's judge on llama.cpp: `{"cache_prompt": False}`, so a verdict does
        not depend on the requests before it). `quirks`: what endpoints refused so far, shared
        by the process's clients. `embeddings`: where /embeddings are asked (never of `model`)."""
        self.base_url = base_url.rstrip("/")
        self.model, self.seed, self.temperature = model, seed, temperature
        self.extra_body = dict(extra_body or {})
        self.budget = budget or Budget(10**9, 10**12)
        self.cache = ResponseCache(cache_dir) if cache_dir else None
        self.retries = retries
        self.quirks: ModelQuirks = (quirks or Quirks()).of(self.base_url, model)
        self.reasoning_tokens = reasoning_tokens
        self.vote_samples = vote_samples
        self.embedding = embeddings
        self.embeddings_error: str | None = None  # why the embedding model answered nothing (once)
        self._embeddings_ok: bool | None = None  # did the embedding model answer? (asked once)
        self.on_call = on_call
        self._sem = asyncio.Semaphore(max(1, concurrency))
        self._timeout = httpx.Timeout(timeout, connect=10.0)
        self._transport = transport
        self._http = self._client(self.base_url, api_key)
        self._embed_http: httpx.AsyncClient | None = None
        if embeddings is not None:
            same = embeddings.base_url.rstrip("/") == self.base_url and embeddings.api_key == api_key
            self._embed_http = self._http if same else self._client(embeddings.base_url, embeddings.api_key)

    def _client(self, base_url: str, api_key: str | None) -> httpx.AsyncClient:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        return httpx.AsyncClient(base_url=base_url.rstrip("/") + "/", headers=headers, timeout=self._timeout,
                                 transport=self._transport)  # fmt: skip

    async def aclose(self) -> None:
        await self._http.aclose()
        if self._embed_http is not None and self._embed_http is not self._http:
            await self._embed_http.aclose()

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
        self,
        messages: list[Message],
        *,
        max_tokens: int = 4,
        stage: str = "judge",
        options: Options = AB,
        graded: bool = False,
    ) -> float:
        """P(the answer is the first option) for a two-option question ("A"/"B", "Yes"/"No"),
        from the first option token's log probabilities when the endpoint returns them (a soft
        vote, useful even from a judge that always says "A"), else 1, 0 or 0.5 from the text.
        `graded`: a vote of 0 or 1 will not do (a calibrated judge fits a scale to the margins),
        so where the model returns no logprobs the question is asked for `vote_samples` sampled
        answers (`n`, temperature 1) and the first option's share is the vote."""
        samples = self.vote_samples if graded else 1
        result = await self._complete(messages, max_tokens, None, None, stage, choice=options, samples=samples)
        if samples > 1 and result.get("logprobs") is False and not result.get("sampled"):
            result = await self._complete(messages, max_tokens, None, None, stage, choice=options, samples=samples)
        return float(result["p_a"])

    async def embeddings(self, texts: Sequence[str]) -> list[list[float]] | None:
        """The embedding model's vectors of `texts`, or None: none configured, or it failed (the
        reason kept in `embeddings_error`, and not asked again by this client). Not charged to
        the budget (no generation) and not cached."""
        if self.embedding is None or self._embed_http is None or self._embeddings_ok is False:
            return None
        try:
            resp = await self._embed_http.post("embeddings", json={"model": self.embedding.model, "input": list(texts)})
            if resp.status_code != 200:
                e = self.embedding
                raise LLMError(str(refusal(resp, e.model, e.base_url, "SPECLEARN_COMPILER_EMBEDDING_MODEL")))
            vectors = [item["embedding"] for item in sorted(resp.json()["data"], key=lambda d: d.get("index", 0))]
            if len(vectors) != len(texts) or not all(isinstance(v, list) and v for v in vectors):
                raise ValueError("not one vector per input")
        except (httpx.HTTPError, LLMError, ValueError, KeyError, TypeError, AttributeError) as exc:
            self.embeddings_error = str(exc) or type(exc).__name__
            log.warning("embeddings from %s failed: %s", self.embedding.model, self.embeddings_error)
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
        samples: int = 1,
    ) -> dict[str, Any]:
        seed = self.seed if seed is None else seed
        q = self.quirks
        body: dict[str, Any] = {
            "model": self.model,
            "messages": messages,
            "max_tokens": max_tokens,
            "temperature": self.temperature if temperature is None else temperature,
            "seed": seed,
            **self.extra_body,
        }
        sampled = choice is not None and samples > 1 and q.logprobs is False and q.n is not False
        if sampled:
            body["n"], body["temperature"] = samples, 1.0
        elif choice:
            body["logprobs"], body["top_logprobs"] = True, 10
        key = cache_key(self.model, seed, body)
        if self.cache is not None and (hit := self.cache.get(key)) is not None:
            self.budget.cached_calls += 1
            return self._noted(hit)
        per_answer = max_tokens + (self.reasoning_tokens if q.completion_tokens else 0)
        estimate = sum(estimate_tokens(m["content"]) for m in messages) + per_answer * (samples if sampled else 1)
        self.budget.reserve(estimate)
        try:
            async with self._sem:
                data = await self._post(body)
        except BaseException:
            self.budget.release(estimate)
            raise
        texts, used = _parse(data, body)
        text = texts[0]
        self.budget.settle(estimate, used, stage)
        if self.on_call is not None:
            self.on_call(used)
        result: dict[str, Any] = {"text": text, "tokens": used, "model": self.model, "seed": seed}
        if not text and _finish_reason(data) == "length":
            result["cut"] = True
        if choice and sampled:
            result["p_a"] = sum(choice_from_text(t, choice) for t in texts) / len(texts)
            result["sampled"] = len(texts)
        elif choice:
            result["p_a"] = choice_probability(data, text, choice)
            result["logprobs"] = has_logprobs(data)
        if self.cache is not None:
            self.cache.put(key, result)
        return self._noted(result)

    def _noted(self, result: dict[str, Any]) -> dict[str, Any]:
        """Learn from a result (fresh or cached) what the model lacks, and say it once per round."""
        m = self.model
        if result.get("logprobs") is False and self.quirks.logprobs is not True:
            # never seen any from this model: it has none (one answer without them, after some
            # with them, is that answer's, not the model's)
            self.quirks.logprobs = False
            self.budget.note(f"{m}:logprobs", f"{m} returns no logprobs: votes read from the answers' text")
        elif result.get("logprobs") and self.quirks.logprobs is None:
            self.quirks.logprobs = True
        if result.get("sampled"):
            self.budget.note(f"{m}:sampled", f"{m}: a calibrated judge's vote is the share of "
                                             f"{result['sampled']} sampled answers (no logprobs)")  # fmt: skip
        if result.get("cut"):
            self.budget.note(f"{m}:cut", f"{m} used up its completion tokens before answering: raise "
                                         "SPECLEARN_COMPILER_REASONING_TOKENS")  # fmt: skip
        return result

    async def _post(self, body: dict[str, Any]) -> dict[str, Any]:
        """POST the request as the model takes it: a 400/403 that refuses a parameter is learnt
        (quirks.learn) and the request re-sent without it; 5xx, 429 and transport errors are
        retried with backoff; any other 4xx raises LLMRefused at once."""
        delay, error, attempt, adapted = 0.5, "", 0, 0
        while True:
            sent = adapt(body, self.quirks, self.reasoning_tokens)
            for key, text in self.quirks.notes(self.reasoning_tokens).items():
                self.budget.note(key, text)
            try:
                resp = await self._http.post("chat/completions", json=sent)
            except httpx.TransportError as exc:
                error = f"{self.base_url} unreachable: {type(exc).__name__}: {exc}"
            else:
                if resp.status_code == 200:
                    try:
                        data = resp.json()
                    except ValueError:
                        data = None
                    if isinstance(data, dict):
                        return data
                    error = f"not JSON: {resp.text[:300]}"
                elif adapted < 4 and learn(self.quirks, resp, sent):
                    adapted += 1  # not an attempt: the same request, as this model takes it
                    log.info("compiler LLM %s refused a parameter; adapting (%s)", self.model, resp.text[:200])
                    continue
                else:
                    error = f"HTTP {resp.status_code}: {resp.text[:300]}"
                    if resp.status_code < 500 and resp.status_code != 429:
                        raise refusal(resp, self.model, self.base_url)
            if attempt >= self.retries:
                raise LLMError(f"compiler LLM failed after {self.retries + 1} attempts: {error}")
            attempt += 1
            log.warning("compiler LLM call failed (%s); retrying in %.1fs", error, delay)
            await asyncio.sleep(delay)
            delay *= 2


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


def has_logprobs(data: dict[str, Any]) -> bool:
    """Did the answer carry token log probabilities at all?"""
    try:
        return bool(data["choices"][0]["logprobs"]["content"])
    except (KeyError, IndexError, TypeError):
        return False


def _finish_reason(data: dict[str, Any]) -> str | None:
    try:
        reason: str | None = data["choices"][0].get("finish_reason")
        return reason
    except (KeyError, IndexError, TypeError, AttributeError):
        return None


def _parse(data: dict[str, Any], body: dict[str, Any]) -> tuple[list[str], int]:
    """Every choice's text (one unless `n` was asked) and the tokens the call used."""
    try:
        texts = [THINK_RE.sub("", c["message"].get("content") or "").strip() for c in data["choices"]]
        if not texts:
            raise IndexError("no choices")
    except (KeyError, IndexError, TypeError, AttributeError) as exc:
        raise LLMError(f"compiler LLM answered without a chat completion: {str(data)[:300]}") from exc
    usage = data.get("usage") or {}
    used = usage.get("total_tokens") or (usage.get("prompt_tokens", 0) + usage.get("completion_tokens", 0))
    if not used:
        used = sum(estimate_tokens(m["content"]) for m in body["messages"]) + sum(estimate_tokens(t) for t in texts)
    return texts, int(used)


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
