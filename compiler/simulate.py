"""Simulated users for the closed learning loop (`speclearn demo`, bench/learning/quality.py).

Users with a hidden taste — checkable, e.g. "at most 25 words" — ask questions through the real
proxy, rate each answer up or down by that taste (a down vote sometimes carries the complaint in
words), and the compiler learns a new spec from their feedback. The measure of success is the
thumbs-up rate on questions the compiler never saw, before and after.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from proxy.config import write_tuning
from proxy.local_model.supervisor import terminate

from .checks import Check

PROMPTS = [
    "Name a primary color.", "What is the capital of Italy?", "Explain how a bicycle works.",
    "Give me tips for sleeping better.", "What is 7 times 8?", "Why do cats purr?",
    "How do I make a cup of tea?", "What is the boiling point of water?", "Describe a rainbow.",
    "How can I learn to cook?", "What is a noun?", "Suggest a weekend activity.",
    "Why is exercise important?", "What is the largest ocean?", "How do airplanes fly?",
    "Name a fruit that is yellow.", "How do I stay focused while studying?", "What is a planet?",
    "Explain what a computer does.", "How should I prepare for a job interview?",
    "What is the opposite of hot?", "Why do we have seasons?", "How do I write a good email?",
    "What does a librarian do?", "How can I save money?", "What animal says moo?",
    "Explain photosynthesis to a child.", "How do I plant a tree?", "What is a good habit?",
    "Why is the ocean salty?", "What is the speed of light?", "How do I make friends in a new city?",
]  # fmt: skip


@dataclass(frozen=True)
class Taste:
    """What every simulated user likes; `complaint` is what some of them write on a down vote;
    `oracle` states the taste outright as a spec (the ceiling of what the model can do)."""

    name: str
    description: str
    checks: tuple[Check, ...]
    complaint: str
    oracle: str = ""
    max_tokens: int = 80  # the app's answer cap: a closing line needs room to finish the answer

    def likes(self, text: str) -> bool:
        return all(c.test(text) for c in self.checks)


ASSISTANT = "You are a helpful assistant."
# a phrase the 0.5B model uses often on PROMPTS under the bare instruction (measured, see bench/README.md)
FORBIDDEN = "Here are"

TASTES = {
    # the five hidden, checkable preferences of bench/learning/quality.py
    "french": Taste("french", "answers in French", (Check("in_language", "fr"),), "please answer in French",
                    f"{ASSISTANT} Always answer in French."),
    "short": Taste("short", "answers of at most 25 words", (Check("max_words", "25"),),
                   "too long, keep it under 25 words", f"{ASSISTANT} Answer in one short sentence of at most 25 words."),
    "bullets": Taste("bullets", "answers as a bulleted list", (Check("list"),), "please use bullet points",
                     f"{ASSISTANT} Format answers as a bulleted list."),
    "closing": Taste("closing", 'answers that end with "Hope this helps!"', (Check("ends_with", "hope this helps"),),
                     "please end with 'Hope this helps!'",
                     f'{ASSISTANT} End every answer with the line "Hope this helps!".', max_tokens=200),
    "no_phrase": Taste("no_phrase", f'answers that never say "{FORBIDDEN}"', (Check("forbid", FORBIDDEN.lower()),),
                       f"don't say '{FORBIDDEN}'", f'{ASSISTANT} Never use the phrase "{FORBIDDEN}".'),
    # two tastes no check of the built-in menu (length, list, language, question, phrase to
    # avoid, opening or closing line) expresses; users say them vaguely, quoting no phrase, so
    # the compiler must find them in the answers users liked (or a judge must see them)
    "example": Taste("example", 'answers that give an example ("for example" or "for instance")',
                     (Check("contains_any", "for example|for instance"),), "give me an example",
                     f'{ASSISTANT} Always include a concrete example, introduced by "For example".'),
    "reason": Taste("reason", 'answers that explain why, with "because"', (Check("contains", "because"),),
                    "tell me why", f'{ASSISTANT} Always explain the reason, using the word "because".'),
    # kept for experiments
    "prose": Taste("prose", "plain prose without bullet or numbered lists", (Check("no_list"),), "no lists please",
                   f"{ASSISTANT} Write every answer as one short paragraph, never as a list."),
    "question": Taste("question", "answers that end with a question back to the user", (Check("question"),),
                      "end by asking me something",
                      f"{ASSISTANT} End your answer with a question that invites the user to continue."),
}  # fmt: skip
FIVE = ("french", "short", "bullets", "closing", "no_phrase")
SEVEN = (*FIVE, "example", "reason")


@dataclass
class Rated:
    n: int = 0
    ups: int = 0
    comments: int = 0
    versions: dict[str, int] = field(default_factory=dict)
    answers: list[str] = field(default_factory=list)

    @property
    def up_rate(self) -> float:
        return self.ups / self.n if self.n else 0.0


# llama.cpp reuses a cached prompt prefix by default, and its logits are "not guaranteed to be
# bit-for-bit identical for different batch sizes" (server README, `cache_prompt`): the same spec
# and question after another request history gave another greedy answer on 2 of 8 and 2 of 12
# held-out questions of the embedded model (bench/README.md); with the cache off, none.
EVAL_LLAMA_CPP: Mapping[str, object] = {"cache_prompt": False}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def proxy_process(upstream_url: str, specs_dir: Path, data_dir: Path, timeout: float = 60) -> Iterator[str]:
    """`speclearn serve` in a child process against `upstream_url`; yields the proxy's base URL."""
    port = free_port()
    data_dir.mkdir(parents=True, exist_ok=True)
    # a reload within 0.2 s, well inside the 1 s the loop waits after publishing
    tuning = write_tuning(data_dir / "tuning.toml", proxy={"registry_poll_interval": 0.2})
    env = {**os.environ, "SPECLEARN_UPSTREAM_URL": upstream_url, "SPECLEARN_SPECS_DIR": str(specs_dir),
           "SPECLEARN_DATA_DIR": str(data_dir), **tuning}  # fmt: skip
    proc = subprocess.Popen(
        [sys.executable, "-m", "proxy.cli", "serve", "--port", str(port), "--log-level", "warning"],
        env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    root = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"proxy exited: {proc.stderr.read().decode()[-2000:] if proc.stderr else ''}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(root + "/readyz", timeout=1).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError("proxy not ready in time")
            time.sleep(0.2)
        yield root
    finally:
        terminate(proc, 10)


async def ask_and_rate(
    client: httpx.AsyncClient,
    proxy: str,
    spec: str,
    prompts: Sequence[str],
    taste: Taste,
    *,
    samples: int = 1,
    seed: int = 0,
    max_tokens: int = 80,
    temperature: float = 0.8,
    complain_every: int = 3,
    concurrency: int = 1,
    extra: Mapping[str, object] | None = None,
) -> Rated:
    """Each prompt `samples` times through the proxy (path form: /specs/NAME/v1), each answer
    rated by the taste and the rating posted to /v1/feedback, as a production app would.
    Users are `sim-0`..`sim-5` (by prompt); every `complain_every`-th of them writes the taste's
    complaint on a down vote (0: nobody comments). `extra`: more request fields for the upstream."""
    rated = Rated()
    gate = asyncio.Semaphore(max(1, concurrency))

    async def one(i: int, prompt: str, s: int) -> None:
        async with gate:
            resp = await client.post(
                f"{proxy}/specs/{spec}/v1/chat/completions",
                json={"model": "local", "messages": [{"role": "user", "content": prompt}], "max_tokens": max_tokens,
                      "temperature": temperature, "seed": seed + 1000 * s + i, "user": f"sim-{i % 6}", **(extra or {})},
            )  # fmt: skip
            resp.raise_for_status()
            text = resp.json()["choices"][0]["message"]["content"] or ""
            inference_id = resp.headers["x-inference-id"]
            version = resp.headers.get("x-spec-version", "none")
            up = taste.likes(text)
            body: dict[str, object] = {"inference_id": inference_id, "value": "up" if up else "down"}
            if not up and complain_every and (i % 6) % complain_every == 0:
                body["comment"] = taste.complaint
            (await client.post(f"{proxy}/v1/feedback", json=body)).raise_for_status()
            rated.n += 1
            rated.ups += up
            rated.comments += "comment" in body
            rated.versions[version] = rated.versions.get(version, 0) + 1
            rated.answers.append(text)

    await asyncio.gather(*(one(i, p, s) for i, p in enumerate(prompts) for s in range(samples)))
    return rated


@dataclass
class LoopRound:
    round: int
    version: str
    eval_up_rate: float
    eval_n: int
    eval_ups: int = 0
    eval_answers: list[str] = field(default_factory=list)
    train_up_rate: float | None = None
    feedback_events: int = 0
    comments: int = 0
    compile_result: str | None = None
    compile_reason: str = ""
    published: str | None = None
    llm_calls: int = 0
    tokens: int = 0
    compile_seconds: float = 0.0
    diff: str = ""
    spec_text: str = ""
    report: dict[str, Any] = field(default_factory=dict)  # the compile's decisions (report.record)


async def closed_loop(
    base_url: str,
    workdir: Path,
    taste: Taste,
    *,
    rounds: int = 1,
    train_prompts: Sequence[str] = PROMPTS[:20],
    eval_prompts: Sequence[str] = PROMPTS[20:],
    samples: int = 2,
    max_tokens: int | None = None,
    compiler_overrides: Mapping[str, object] | None = None,
    instruction: str = "You are a helpful assistant.",
    say: Callable[[str], None] = print,
    complain_every: int = 3,
    concurrency: int = 1,
    eval_extra: Mapping[str, object] | None = None,
) -> list[LoopRound]:
    """Serve -> rate -> compile (publishing to production) -> serve again, `rounds` times; the
    thumbs-up rate on `eval_prompts` (never compiled from before it is measured) tells whether
    the learned spec serves these users better. `max_tokens`: the app's answer cap (default: the
    taste's). `eval_extra`: more request fields for the held-out questions, such as llama.cpp's
    `{"cache_prompt": False}` (EVAL_LLAMA_CPP), so an answer does not depend on what came before."""
    from proxy.registry import FileRegistry
    from proxy.settings import Settings

    from .report import record
    from .runner import Context, compile_spec
    from .settings import CompilerSettings

    max_tokens = max_tokens or taste.max_tokens
    specs, data = workdir / "specs", workdir / "data"
    registry = FileRegistry(specs, poll_interval=0)
    await registry.set_instruction("demo", instruction + "\n")
    await registry.publish("demo", instruction, labels=["production"])
    settings = Settings(specs_dir=specs, data_dir=data, upstream_url=base_url)
    overrides = {"base_url": base_url, "publish_label": "production", "min_feedback": 1, **(compiler_overrides or {})}
    compiler = CompilerSettings(**overrides)  # type: ignore[arg-type]
    out: list[LoopRound] = []
    with proxy_process(base_url, specs, data) as proxy:
        async with httpx.AsyncClient(timeout=180) as client:
            for r in range(rounds + 1):
                # one at a time, one seed, `eval_extra`: the arms must differ by spec only, and a
                # server batching concurrent requests is not deterministic at temperature 0 (two
                # identical 12-answer runs on the embedded model, 4 at once, agreed on 6 answers)
                ev = await ask_and_rate(client, proxy, "demo", eval_prompts, taste, samples=1, temperature=0.0,
                                        max_tokens=max_tokens, complain_every=0, seed=0, concurrency=1,
                                        extra=eval_extra)  # fmt: skip
                version = ",".join(sorted(ev.versions))
                say(f"round {r}: {version} thumbs-up rate on held-out questions {ev.up_rate:.2f} ({ev.ups}/{ev.n})")
                await registry.refresh()
                state = registry.snapshot.specs.get("demo")
                current = state.resolve(None) if state is not None else None
                row = LoopRound(r, version, ev.up_rate, ev.n, eval_ups=ev.ups, eval_answers=ev.answers[:3],
                                spec_text=current.text if current is not None else "")  # fmt: skip
                out.append(row)
                if r == rounds:
                    break
                tr = await ask_and_rate(client, proxy, "demo", train_prompts, taste, samples=samples,
                                        max_tokens=max_tokens, seed=100 * r, complain_every=complain_every,
                                        concurrency=concurrency)  # fmt: skip
                row.train_up_rate, row.feedback_events, row.comments = tr.up_rate, tr.n, tr.comments
                say(f"round {r}: users rated {tr.n} answers, {tr.ups} up")
                await asyncio.sleep(0.5)  # the proxy's ledger writes are batched
                from proxy.ledger import open_ledger

                ledger = open_ledger(settings)
                await ledger.start()
                try:
                    ctx = Context(settings, compiler, registry, ledger)
                    started = time.monotonic()
                    result = await compile_spec(ctx, "demo", progress=lambda m: say(f"  compile: {m}"))
                finally:
                    await ledger.close()
                row.compile_result, row.compile_reason = result.result, result.reason
                row.llm_calls, row.tokens = int(result.cost.get("llm_calls", 0)), int(result.cost.get("tokens", 0))
                row.compile_seconds = time.monotonic() - started
                row.diff, row.report = result.diff, record(result)
                if result.version is not None:
                    row.published = result.version.ref
                    await asyncio.sleep(1.0)  # the proxy hot-reloads the registry
                say(
                    f"round {r}: compile {result.result}"
                    + (f" -> {row.published}" if row.published else f" ({result.reason})")
                )
    return out
