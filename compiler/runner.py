"""Run one round for one spec the way both the CLI and the sidecar do: take the spec's lock,
collect the feedback window from the ledger (or take a pairs file), run the pipeline, then
record the outcome (state file, metrics)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from proxy.ledger import FeedbackEvent, Ledger
from proxy.registry import PRODUCTION, Registry
from proxy.settings import Settings
from proxy.upstreams import route_table

from . import metrics, served_model
from .checkin import check_in
from .dataset import Dataset, build_dataset
from .drift import Drift
from .errors import CompilerError, no_llm
from .explore import CANDIDATE, Canary
from .llm import Budget, EmbeddingEndpoint, LLMClient
from .memory import Conclusion, Memory
from .outcomes import Outcome
from .pipeline import Round, RoundResult, run_round
from .quirks import Quirks
from .served_model import ModelChoice
from .settings import CompilerSettings
from .state import CompilerState, round_lock

DAY = 86400.0


@dataclass
class Context:
    """Everything a round needs from outside, built once per process."""

    settings: Settings
    compiler: CompilerSettings
    registry: Registry
    ledger: Ledger | None = None
    transport: httpx.AsyncBaseTransport | None = None  # tests: a fake LLM
    use_cache: bool = True
    # what hosted endpoints refused (max_tokens, logprobs, ...), learnt once for the process
    quirks: Quirks = field(default_factory=Quirks)

    def __post_init__(self) -> None:
        # Approval mode is the registry's policy for what this process publishes as the compiler.
        if self.compiler.require_approval:
            self.registry.hold_compiled = True

    @property
    def state(self) -> CompilerState:
        return CompilerState(self.compiler.state_dir(self.settings))

    async def choose_model(self, spec: str | None, now: float | None = None) -> ModelChoice:
        """The compiler's model for `spec`: the configured one, else the one the spec's traffic
        used most in the window (reached through its route when no compiler endpoint is
        configured), else the endpoint's only model (served_model.py)."""
        c = self.compiler
        if c.model:
            chosen = ModelChoice(c.model, "configured (SPECLEARN_COMPILER_MODEL, --model, or the embedded model)")
            # a route's name (a client's model alias) is reached as the proxy reaches it
            routed = not c.base_url and c.model in route_table(self.settings)
            return served_model.through_routes(chosen, self.settings, spec) if routed else chosen
        now = time.time() if now is None else now
        if self.ledger is not None:
            found = await served_model.from_traffic(self.ledger, spec, now - c.window_days * DAY, c.window_days)
            if found is not None:
                return found if c.base_url else served_model.through_routes(found, self.settings, spec)
        base_url = c.resolved_base_url(self.settings)
        if base_url:
            async with self._http(base_url, c.resolved_api_key(self.settings)) as http:
                found = await served_model.from_endpoint(http)
            if found is not None:
                return found
        return served_model.fallback()

    def _http(self, base_url: str, api_key: str | None) -> httpx.AsyncClient:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        return httpx.AsyncClient(base_url=base_url.rstrip("/") + "/", headers=headers, transport=self.transport,
                                 timeout=httpx.Timeout(self.compiler.timeout, connect=10.0))  # fmt: skip

    def endpoint(self, choice: ModelChoice | None = None) -> tuple[str | None, str | None]:
        """The compiler's base URL and key: the route's upstream `choice` follows, else the
        configured endpoint (`SPECLEARN_COMPILER_BASE_URL`, else the default upstream)."""
        if choice is not None and choice.base_url is not None:
            return choice.base_url, choice.api_key
        return self.compiler.resolved_base_url(self.settings), self.compiler.resolved_api_key(self.settings)

    def embeddings(self, choice: ModelChoice | None = None) -> EmbeddingEndpoint | None:
        """The embedding model's endpoint, when one is configured (never the chat model); with no
        endpoint of its own, the compiler's (`choice`'s route's upstream and key)."""
        c = self.compiler
        if c.embedding_base_url or c.embedding_api_key:
            base_url, key = c.resolved_embedding_base_url(self.settings), c.resolved_embedding_api_key(self.settings)
        else:
            base_url, key = self.endpoint(choice)
        if not c.embedding_model or not base_url:
            return None
        return EmbeddingEndpoint(base_url, c.embedding_model, key)

    def judge_llm(self, spec: str, budget: Budget, model: str | ModelChoice | None = None) -> LLMClient | None:
        """The judge's own client when a judge endpoint or model is configured (one budget with
        the compiler's LLM); None: the compiler's LLM judges too. `model`: the compiler's; with
        no judge endpoint, the judge model is asked at the compiler's (its route's upstream)."""
        c = self.compiler
        if not c.judge_base_url and not c.judge_model:
            return None
        name, choice = _chosen(model)
        base_url, key = self.endpoint(choice)
        if c.judge_base_url or c.judge_api_key:
            key = c.resolved_judge_api_key(self.settings)
        base_url = (c.judge_base_url or base_url or "").rstrip("/")
        if not base_url:
            return None
        return self._client(spec, base_url, c.judge_model or name or c.model or served_model.FALLBACK, key, budget,
                            choice)  # fmt: skip

    def llm(self, spec: str, model: str | ModelChoice | None = None) -> LLMClient:
        """The compiler's client for a round on `spec`; `model` from `choose_model` (a choice
        that follows a route calls that route's first upstream with its key)."""
        name, choice = _chosen(model)
        base_url, key = self.endpoint(choice)
        if not base_url:
            raise CompilerError(no_llm())
        c = self.compiler
        return self._client(spec, base_url, name or c.model or served_model.FALLBACK, key,
                            Budget(c.max_llm_calls, c.max_tokens), choice)  # fmt: skip

    def _client(self, spec: str, base_url: str, model: str, api_key: str | None, budget: Budget,
                choice: ModelChoice | None) -> LLMClient:  # fmt: skip
        c = self.compiler
        return LLMClient(
            base_url, model, api_key=api_key, seed=c.seed, temperature=c.temperature, budget=budget,
            cache_dir=c.resolved_cache_dir(self.settings) if self.use_cache else None,
            timeout=c.timeout, concurrency=c.concurrency, retries=c.retries,
            transport=self.transport, on_call=metrics.on_call(spec), quirks=self.quirks,
            reasoning_tokens=c.reasoning_tokens, embeddings=self.embeddings(choice), vote_samples=c.judge_samples,
        )  # fmt: skip


def _chosen(model: str | ModelChoice | None) -> tuple[str | None, ModelChoice | None]:
    """A model name, and the choice it came with when it is one (its route's upstream)."""
    if isinstance(model, ModelChoice):
        return model.model, model
    return model, None


async def ledger_events(ctx: Context, name: str, now: float | None = None) -> tuple[list[FeedbackEvent], float]:
    """The spec's feedback in the window (`window_days` up to `now`), and where the window starts."""
    assert ctx.ledger is not None
    now = time.time() if now is None else now
    since = now - ctx.compiler.window_days * DAY
    return await ctx.ledger.feedback_events(spec=name, since=since, until=now), since


def dataset_of(ctx: Context, events: list[FeedbackEvent], since: float) -> Dataset:
    ds = build_dataset(events, holdout_fraction=ctx.compiler.holdout_fraction, max_per_user=ctx.compiler.max_per_user)
    ds.window["window_start"] = since
    return ds


async def ledger_dataset(ctx: Context, name: str, now: float | None = None) -> Dataset:
    return dataset_of(ctx, *await ledger_events(ctx, name, now))


async def compile_spec(
    ctx: Context,
    name: str,
    *,
    dataset: Dataset | None = None,
    dry_run: bool = False,
    force: bool = False,
    publish_result: bool = True,
    label: str | None = None,
    instruction: str | None = None,
    progress: Callable[[str], None] | None = None,
    on_prepared: Callable[[RoundResult], None] | None = None,
    record_state: bool = True,
) -> RoundResult:
    """One locked round. Raises RoundBusy if another holds the spec's lock."""
    started = time.monotonic()
    async with round_lock(ctx.compiler.state_dir(ctx.settings), name, ctx.settings.database_url):
        # what earlier rounds concluded, for a round on the spec's own feedback (not a pairs file)
        remembers = dataset is None and ctx.ledger is not None
        memory = await recall(ctx, name) if remembers else None
        live = await canary(ctx, name)
        # one live test at a time: a new candidate would restart the one deciding
        waiting = "" if force else live.waits(label or ctx.compiler.publish_label)
        drift = Drift()
        if dataset is not None:
            ds = dataset
        else:
            events, since = await ledger_events(ctx, name)
            drift, waiting = await check_in(ctx, name, events, memory, live, waiting,
                                            act=publish_result and not dry_run)  # fmt: skip
            if drift.since is not None and not waiting:  # users turned against a served rule: learn from after
                events, since = [ev for ev in events if ev.feedback.created_at > drift.since], drift.since
            ds = dataset_of(ctx, events, since)
            if drift.turned:
                ds.window["turned"] = [s.to_meta() for s in drift.turned]
                if progress is not None:
                    progress(drift.describe() + ("" if waiting else ": the window restarts after the turn"))
        if waiting:
            result = RoundResult(name, Outcome.SKIPPED, waiting, window=ds.window)
        else:
            result = await run_one(ctx, name, ds, memory, dry_run=dry_run, force=force, publish_result=publish_result,
                                   label=label, instruction=instruction, progress=progress, on_prepared=on_prepared)  # fmt: skip
        result.conclusions += drift.conclusions(name, time.time())
        if remembers and publish_result and not dry_run and result.conclusions:
            assert ctx.ledger is not None
            await ctx.ledger.add_conclusions(name, [c.to_json() for c in result.conclusions])
    if not dry_run:
        metrics.record_round(name, result.result, time.monotonic() - started, time.time())
        if result.version is not None:
            published_as = CANDIDATE if result.result == Outcome.EXPLORED else label or ctx.compiler.publish_label
            metrics.PUBLISHES.labels(name, published_as).inc()
        if record_state:
            _record(ctx, name, result)
    return result


async def run_one(
    ctx: Context, name: str, ds: Dataset, memory: Memory | None, *, dry_run: bool, force: bool, publish_result: bool,
    label: str | None, instruction: str | None, progress: Callable[[str], None] | None,
    on_prepared: Callable[[RoundResult], None] | None,
) -> RoundResult:  # fmt: skip
    """The round itself, with the compiler's LLM (and judge) for `name`, closed after."""
    if dry_run:
        llm, judge = _offline_llm(ctx), None
    else:
        choice = await ctx.choose_model(name)
        if progress is not None:
            progress(choice.describe())
        llm = ctx.llm(name, choice)
        llm.budget.note("model", choice.describe())
        judge = ctx.judge_llm(name, llm.budget, choice)
    try:
        round_ = Round(name, ds, registry=ctx.registry, llm=llm, settings=ctx.compiler, label=label,
                       instruction=instruction, force=force, progress=progress, judge_llm=judge,
                       memory=memory, canary=await canary(ctx, name))  # fmt: skip
        return await run_round(round_, dry_run=dry_run, publish_result=publish_result, on_prepared=on_prepared)
    finally:
        await llm.aclose()
        if judge is not None:
            await judge.aclose()


async def recall(ctx: Context, name: str) -> Memory:
    """What earlier rounds and live tests concluded about `name`'s rules (memory.py)."""
    assert ctx.ledger is not None
    return Memory([Conclusion.from_json(c) for c in await ctx.ledger.conclusions(name)])


async def canary(ctx: Context, name: str) -> Canary:
    """The canary share users are split into, and the candidate a live test is deciding now."""
    await ctx.registry.refresh()
    state = ctx.registry.snapshot.specs.get(name)
    labels = state.labels if state is not None else {}
    running = labels.get(CANDIDATE)
    return Canary(
        ctx.settings.canary_fraction, running if running is not None and running != labels.get(PRODUCTION) else None
    )


def _offline_llm(ctx: Context) -> LLMClient:
    """A dry run only projects: the real budget (so the plan is fitted as for real), and a
    transport that refuses every call, so nothing can be spent by mistake."""

    def refuse(request: httpx.Request) -> httpx.Response:
        raise AssertionError("a dry run must not call the LLM")

    c = ctx.compiler
    budget = Budget(c.max_llm_calls, c.max_tokens)
    model = c.model or served_model.FALLBACK
    return LLMClient("http://dry-run/v1", model, budget=budget, transport=httpx.MockTransport(refuse))


def _record(ctx: Context, name: str, result: RoundResult) -> dict[str, Any]:
    prev = ctx.state.get(name)
    fields: dict[str, Any] = {
        "last_round_at": time.time(),
        "last_result": result.result,
        "last_reason": result.reason[:500],
    }
    until = result.window.get("until")
    if result.result == "error":
        failures = int(prev.get("failures", 0)) + 1
        backoff = min(ctx.compiler.interval * 2 ** (failures - 1), ctx.compiler.max_backoff)
        fields.update(failures=failures, next_attempt=time.time() + backoff)
    else:
        fields.update(failures=0, next_attempt=0)
        if isinstance(until, (int, float)):
            fields["last_until"] = until
    if result.gate is not None:
        fields["last_gate"] = result.gate.to_meta()  # a failed gate publishes nothing: keep its numbers here
    if result.version is not None:
        fields["last_published"] = result.version.version
    return ctx.state.update(name, **fields)
