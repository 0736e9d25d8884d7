"""`speclearn doctor`: can the compiler run here? One tiny call to each configured endpoint.

The calls go through the compiler's own client (llm.py), so what the doctor finds is what a
round meets: a model the endpoint does not serve, a key it refuses, an endpoint that is down
(each blocks compiling), and what a round adapts to (max_tokens refused -> max_completion_tokens,
no logprobs -> sampled votes; embeddings that fail -> the local fallback), one line each.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from . import embed
from .errors import LLMError, LLMRefused
from .judge import YES_NO
from .llm import LLMClient
from .runner import Context
from .served_model import ModelChoice

OK, NOTE, WARNING, PROBLEM = "ok", "note", "warning", "problem"


@dataclass(frozen=True)
class Finding:
    role: str  # compiler | judge | embeddings
    level: str  # ok | note (adapted) | warning (a fallback) | problem (blocks compiling)
    text: str

    def line(self) -> str:
        return f"{self.level}: {self.role}: {self.text}"


def blocking(findings: list[Finding]) -> bool:
    return any(f.level == PROBLEM for f in findings)


PROBE = [{"role": "user", "content": "Answer with one word, Yes or No: is 2 + 2 = 4?"}]


async def check_chat(role: str, llm: LLMClient, graded: bool, route: str | None = None) -> list[Finding]:
    """One two-option question (the judge's kind of call) and what answering it took; `route`:
    the proxy route whose upstream `llm` calls, named in what to fix."""
    where = f"{llm.model} at {llm.base_url}"
    try:
        await llm.choose(PROBE, max_tokens=4, stage="doctor", options=YES_NO, graded=graded)
    except LLMRefused as exc:
        return [Finding(role, PROBLEM, _refused(exc, llm, route))]
    except LLMError as exc:
        return [Finding(role, PROBLEM, f"{where}: endpoint down or failing: {exc}")]
    q, out = llm.quirks, []
    if q.completion_tokens:
        out.append(Finding(role, NOTE, f"{llm.model} refuses max_tokens -> using max_completion_tokens "
                                       f"(+{llm.reasoning_tokens} reasoning tokens)"))  # fmt: skip
    if q.default_temperature:
        out.append(Finding(role, NOTE, f"{llm.model} refuses a set temperature -> using its default"))
    if q.logprobs is False:
        how = (f"calibrated judges vote by {llm.vote_samples} sampled answers" if graded and q.n is not False
               else "votes are read from the answer's text")  # fmt: skip
        out.append(Finding(role, NOTE, f"{llm.model} returns no logprobs -> {how}"))
    if f"{llm.model}:cut" in llm.budget.notes:
        out.append(Finding(role, WARNING, f"{llm.model} used up its completion tokens before answering: raise "
                                          "SPECLEARN_COMPILER_REASONING_TOKENS"))  # fmt: skip
    return [Finding(role, OK, f"{where} answers"), *out]


def _refused(exc: LLMRefused, llm: LLMClient, route: str | None) -> str:
    if exc.status == 404:
        fix = f"route {route}'s model in SPECLEARN_ROUTES, or " if route else ""
        return f"model `{llm.model}` is not served by {llm.base_url} ({exc.code or 404}): set {fix}SPECLEARN_COMPILER_MODEL"
    if exc.status in (401, 403):
        fix = (f"route {route}'s api_key_env or api_key_file in SPECLEARN_ROUTES" if route
               else "SPECLEARN_UPSTREAM_API_KEY")  # fmt: skip
        return f"{llm.base_url} refused the key ({exc.code or exc.status}): set {fix} or SPECLEARN_COMPILER_API_KEY"
    return str(exc)


async def check_embeddings(llm: LLMClient) -> list[Finding]:
    fallback = "the local MiniLM" if embed.model_dir() is not None else "lexical similarity"
    if llm.embedding is None:
        return [Finding("embeddings", NOTE, f"no SPECLEARN_COMPILER_EMBEDDING_MODEL: compress uses {fallback}")]
    where = f"{llm.embedding.model} at {llm.embedding.base_url}"
    if await llm.embeddings(["Keep answers short."]) is None:
        return [Finding("embeddings", WARNING, f"{where} failed ({llm.embeddings_error}): compress falls back "
                                               f"to {fallback}")]  # fmt: skip
    return [Finding("embeddings", OK, f"{where} answers")]


async def diagnose(ctx: Context, spec: str | None, say: Callable[[Finding], None] | None = None) -> list[Finding]:
    """Every finding, in order: the compiler's model and why, the compiler's endpoint, the
    judge's (when it has its own), the embeddings. `say` sees each finding as it is made."""
    findings: list[Finding] = []

    def add(found: list[Finding]) -> None:
        for f in found:
            findings.append(f)
            if say is not None:
                say(f)

    c = ctx.compiler
    choice: ModelChoice = await ctx.choose_model(spec)
    add([Finding("compiler", NOTE if c.model is None else OK, f"model {choice.model}: {choice.why}")])
    judged_by_compiler = not c.judge_base_url and not c.judge_model
    calibrated = any(k.endswith("+calibrated") for k in c.judges)
    llm = ctx.llm(spec or "doctor", choice)
    llm.retries = 0  # a doctor reports; it does not wait out a backoff
    try:
        add(await check_chat("compiler", llm, graded=judged_by_compiler and calibrated, route=choice.route))
        judge = ctx.judge_llm(spec or "doctor", llm.budget, choice)
        if judge is None:
            add([Finding("judge", OK, "the compiler's model judges")])
        else:
            judge.retries = 0
            try:
                add(await check_chat("judge", judge, graded=calibrated))
            finally:
                await judge.aclose()
        add(await check_embeddings(llm))
    finally:
        await llm.aclose()
    return findings
