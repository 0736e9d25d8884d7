"""Closed-loop quality benchmark: does compiling feedback make simulated users happier?

For each hidden preference (compiler/simulate.py TASTES), on fresh specs and a fresh ledger,
three arms are measured by the thumbs-up rate of the same simulated users on held-out questions:

- before:   the instruction only ("You are a helpful assistant.");
- compiled: after users ask training questions through the real proxy and send thumbs (every
            other user also writes a short comment on a down vote), one `speclearn compile`
            round publishes to production and the proxy hot-reloads it;
- oracle:   the hidden preference stated outright as the spec (the ceiling of this model).

Reported per preference: the three rates with Wilson 95% intervals, compiled/oracle, feedback
events used, comments, the compile's LLM calls, tokens and seconds, and the compiled spec text.

    python -m bench.learning.quality --out /tmp/quality5.json      # the embedded local model, five tastes
    python -m bench.learning.quality --base-url URL --taste short --rounds 2

Why a closed loop and not a fixed labelled set: what matters is whether the *served* model,
steered by the learned spec, earns more thumbs-up from the same users on unseen questions.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

from compiler.simulate import ASSISTANT, EVAL_LLAMA_CPP, PROMPTS, SEVEN, TASTES, closed_loop
from compiler.stats import wilson_lower

DEFAULT_TASTES = SEVEN
TARGET_RATIO, TARGET_EVENTS, TARGET_TASTES = 0.9, 40, 5  # >= 0.9 x oracle on 5 of 7, <= 40 events


def wilson(ups: int, n: int) -> tuple[float, float]:
    """Wilson score 95% interval of a thumbs-up rate."""
    if n == 0:
        return 0.0, 1.0
    return round(wilson_lower(ups, n), 3), round(1 - wilson_lower(n - ups, n), 3)


def eval_extra(a: argparse.Namespace) -> Mapping[str, object] | None:
    """The embedded llama.cpp answers held-out questions with its prompt cache off (see
    EVAL_LLAMA_CPP); another endpoint gets no field it may not know."""
    return None if a.base_url else EVAL_LLAMA_CPP


def on_served_model(a: argparse.Namespace, run: Callable[[str, str], None]) -> None:
    """`run(base_url, model)` on `--base-url` when given, else on the embedded models, started
    for the duration."""
    if a.base_url:
        run(a.base_url, "default")
        return
    from proxy.settings import Settings

    s = Settings()
    with embedded_models(a, s) as served_url:
        run(served_url, s.local_model)


@contextlib.contextmanager
def embedded_models(a: argparse.Namespace, settings: Any) -> Iterator[str]:
    """The embedded served model (its base URL is yielded) and, unless `--judge-model none` or
    `--judge-base-url` was given, the judge model, whose URL goes into `a.judge_base_url`."""
    from proxy.local_model import LocalModelSupervisor

    with contextlib.ExitStack() as stack:
        served = stack.enter_context(LocalModelSupervisor.from_settings(settings))
        if a.judge_model != "none" and not a.judge_base_url:
            judge = stack.enter_context(LocalModelSupervisor.from_settings(settings, model=a.judge_model, parallel=2))
            a.judge_base_url = judge.base_url
        yield served.base_url


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.learning.quality", description=__doc__.split("\n")[0])
    p.add_argument("--taste", action="append", choices=sorted(TASTES), help=f"repeatable; default: {', '.join(SEVEN)}")
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--train", type=int, default=20, help="training questions (x --samples answers each)")
    p.add_argument("--eval", type=int, default=12, help="held-out questions per arm (after the training ones)")
    p.add_argument("--samples", type=int, default=2)
    p.add_argument(
        "--max-tokens",
        type=int,
        help="answer length cap of the served model; default: the taste's "
        "(80; 200 for the closing line, which an answer cut short never reaches)",
    )
    p.add_argument("--complain-every", type=int, default=2, help="every N-th user comments on a down vote (0: none)")
    p.add_argument(
        "--concurrency",
        type=int,
        default=4,
        help="simulated users asking training questions at once (held-out ones are asked one at a time)",
    )
    p.add_argument("--no-oracle", action="store_true", help="skip the oracle arm")
    p.add_argument("--base-url", help="OpenAI-compatible upstream; default: the embedded local model")
    p.add_argument("--max-calls", type=int, default=160, help="LLM call budget per compile round")
    p.add_argument(
        "--judge-model",
        default="qwen2.5-coder-1.5b",
        help="the compiler's judge, an embedded model ('none': the compiler's own model judges)",
    )
    p.add_argument("--judge-base-url", help="the judge's endpoint instead of an embedded model")
    p.add_argument(
        "--format",
        dest="spec_format",
        choices=["sections", "persona"],
        help="how the learned rules are written (default: the compiler's, sections)",
    )
    p.add_argument("--out", type=Path, help="write the JSON report here")
    return p.parse_args(argv)


def arm(ups: int, n: int) -> dict[str, Any]:
    return {"rate": round(ups / n, 3) if n else 0.0, "ups": ups, "n": n, "wilson95": wilson(ups, n)}


def compiler_overrides(model: str, a: argparse.Namespace) -> dict[str, Any]:
    """The compile round's settings in these benchmarks: a small budget the 0.5B model runs in
    minutes, and the judge model when one is served."""
    return {"model": model, "proposal_passes": 2, "proposal_sample": 8, "propose_max_tokens": 96,
            "synth_max_tokens": 256, "validation_pairs": 4, "calibration_pairs": 4, "gate_pairs": 8,
            "max_llm_calls": a.max_calls, "judge_base_url": a.judge_base_url,
            "judge_model": a.judge_model if a.judge_base_url else None,
            **({"spec_format": a.spec_format} if getattr(a, "spec_format", None) else {})}  # fmt: skip


async def run_taste(base_url: str, model: str, name: str, a: argparse.Namespace) -> dict[str, Any]:
    taste = TASTES[name]
    overrides = compiler_overrides(model, a)

    def say(m: str) -> None:
        print(f"[{name}] {m}", file=sys.stderr, flush=True)

    train, held = PROMPTS[: a.train], PROMPTS[a.train : a.train + a.eval]
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix=f"speclearn-quality-{name}-") as tmp:
        rows = await closed_loop(
            base_url, Path(tmp), taste, rounds=a.rounds, train_prompts=train, eval_prompts=held,
            samples=a.samples, max_tokens=a.max_tokens, compiler_overrides=overrides, instruction=ASSISTANT,
            say=say, complain_every=a.complain_every, concurrency=a.concurrency, eval_extra=eval_extra(a),
        )  # fmt: skip
    loop_seconds = time.monotonic() - started
    oracle: dict[str, Any] | None = None
    if not a.no_oracle and taste.oracle:
        with tempfile.TemporaryDirectory(prefix=f"speclearn-quality-{name}-oracle-") as tmp:
            (o,) = await closed_loop(
                base_url, Path(tmp), taste, rounds=0, eval_prompts=held, max_tokens=a.max_tokens,
                instruction=taste.oracle, say=lambda m: say(f"oracle: {m}"), concurrency=a.concurrency,
                eval_extra=eval_extra(a),
            )  # fmt: skip
        oracle = {**arm(o.eval_ups, o.eval_n), "spec": taste.oracle, "answers": o.eval_answers}
    before, after = rows[0], rows[-1]
    compiled = arm(after.eval_ups, after.eval_n)
    ratio = None
    if oracle is not None and oracle["rate"] > 0:
        ratio = round(compiled["rate"] / oracle["rate"], 3)
    trained = rows[:-1]
    return {
        "taste": name,
        "description": taste.description,
        "before": arm(before.eval_ups, before.eval_n),
        "compiled": compiled,
        "oracle": oracle,
        "compiled_over_oracle": ratio,
        "feedback_events": sum(r.feedback_events for r in trained),
        "comments": sum(r.comments for r in trained),
        "llm_calls": sum(r.llm_calls for r in trained),
        "tokens": sum(r.tokens for r in trained),
        "compile_seconds": round(sum(r.compile_seconds for r in trained), 1),
        "compile_results": [f"{r.compile_result}" + (f" ({r.compile_reason})" if r.compile_reason else "") for r in trained],
        "compiled_spec": after.spec_text,
        "loop_seconds": round(loop_seconds, 1),
        "seconds": round(time.monotonic() - started, 1),
        "max_tokens": a.max_tokens or taste.max_tokens,
        "rounds": [asdict(r) for r in rows],
    }  # fmt: skip


def target(results: list[dict[str, Any]]) -> dict[str, Any]:
    met = [r["taste"] for r in results
           if r["compiled_over_oracle"] is not None and r["compiled_over_oracle"] >= TARGET_RATIO
           and r["feedback_events"] <= TARGET_EVENTS]  # fmt: skip
    return {"rule": f"compiled >= {TARGET_RATIO} x oracle from <= {TARGET_EVENTS} feedback events, "
                    f"on >= {TARGET_TASTES} of {len(DEFAULT_TASTES)} preferences",
            "met_on": met, "tastes_run": len(results), "met": len(met) >= TARGET_TASTES}  # fmt: skip


def fmt_arm(x: dict[str, Any] | None) -> str:
    if x is None:
        return "-"
    lo, hi = x["wilson95"]
    return f"{x['rate']:.2f} [{lo:.2f},{hi:.2f}]"


def table(results: list[dict[str, Any]]) -> str:
    head = ("| preference | before | compiled | oracle | compiled/oracle | events (comments) | LLM calls | tokens "
            "| seconds | compile |")  # fmt: skip
    lines = [head, "|" + "---|" * 10]
    for r in results:
        ratio = "n/a" if r["compiled_over_oracle"] is None else f"{r['compiled_over_oracle']:.2f}"
        lines.append(
            f"| {r['taste']} | {fmt_arm(r['before'])} | {fmt_arm(r['compiled'])} | {fmt_arm(r['oracle'])} | {ratio} "
            f"| {r['feedback_events']} ({r['comments']}) | {r['llm_calls']} | {r['tokens']} | {r['seconds']:.0f} "
            f"| {'; '.join(r['compile_results'])} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    tastes = a.taste or list(DEFAULT_TASTES)
    if a.train >= len(PROMPTS):
        raise SystemExit(f"--train must leave held-out questions (< {len(PROMPTS)})")
    results: list[dict[str, Any]] = []

    def write() -> None:
        report = {"results": results, "target": target(results),
                  "settings": {k: v for k, v in vars(a).items() if k != "out"}}  # fmt: skip
        if a.out:
            a.out.write_text(json.dumps(report, indent=2, default=str))

    def run_all(base_url: str, model: str) -> None:
        for t in tastes:
            results.append(asyncio.run(run_taste(base_url, model, t, a)))
            write()  # a partial report survives an interrupted run

    on_served_model(a, run_all)
    write()
    print(table(results))
    t = target(results)
    print(f"target ({t['rule']}): {'MET' if t['met'] else 'not met'}; met on {', '.join(t['met_on']) or 'none'}")
    for r in results:
        print(f"\n[{r['taste']}] compiled spec:\n{r['compiled_spec'].strip()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
