"""Closed-loop quality benchmark: does compiling feedback make simulated users happier?

For each hidden taste (compiler/simulate.py), on fresh specs and a fresh ledger: users ask
training questions through the real proxy and send thumbs, the compiler runs a round and
publishes to production, and the thumbs-up rate on held-out questions is measured before and
after each round. Also the compile cost (LLM calls, tokens, seconds) and the gate's outcome.

    python -m bench.quality                      # the embedded local model, every taste
    python -m bench.quality --base-url URL --taste short --rounds 2 --out quality.json

Why a closed loop and not a fixed labelled set: what matters is whether the *served* model,
steered by the learned spec, earns more thumbs-up from the same users on unseen questions.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from compiler.simulate import PROMPTS, TASTES, closed_loop

# "question" is left out by default: the 0.5B model never ends with a question, so its users
# never vote up and there is no contrast to learn from (the round is skipped, honestly).
DEFAULT_TASTES = ("short", "prose")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.quality", description=__doc__.split("\n")[0])
    p.add_argument("--taste", action="append", choices=sorted(TASTES), help="repeatable; default: short, prose")
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--train", type=int, default=20, help="training questions (x --samples answers each)")
    p.add_argument("--samples", type=int, default=2)
    p.add_argument("--base-url", help="OpenAI-compatible upstream; default: the embedded local model")
    p.add_argument("--max-calls", type=int, default=80, help="LLM call budget per compile round")
    p.add_argument("--out", type=Path, help="write the JSON report here")
    return p.parse_args(argv)


async def run_taste(base_url: str, model: str, name: str, a: argparse.Namespace) -> dict[str, Any]:
    overrides = {"model": model, "proposal_passes": 2, "proposal_sample": 8, "propose_max_tokens": 96,
                 "synth_max_tokens": 256, "validation_pairs": 4, "calibration_pairs": 4, "gate_pairs": 8,
                 "max_llm_calls": a.max_calls}  # fmt: skip
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix=f"speclearn-quality-{name}-") as tmp:
        rows = await closed_loop(
            base_url, Path(tmp), TASTES[name], rounds=a.rounds, train_prompts=PROMPTS[: a.train],
            eval_prompts=PROMPTS[a.train :], samples=a.samples, compiler_overrides=overrides,
            say=lambda m: print(f"[{name}] {m}", file=sys.stderr, flush=True),
        )  # fmt: skip
    return {
        "taste": name,
        "description": TASTES[name].description,
        "before": rows[0].eval_up_rate,
        "after": rows[-1].eval_up_rate,
        "eval_questions": rows[0].eval_n,
        "rounds": [asdict(r) for r in rows],
        "seconds": round(time.monotonic() - started, 1),
    }


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    tastes = a.taste or list(DEFAULT_TASTES)
    if a.train >= len(PROMPTS):
        raise SystemExit(f"--train must leave held-out questions (< {len(PROMPTS)})")

    def run_all(base_url: str, model: str) -> list[dict[str, Any]]:
        return [asyncio.run(run_taste(base_url, model, t, a)) for t in tastes]

    if a.base_url:
        results = run_all(a.base_url, "default")
    else:
        from proxy.local_model import LocalModelSupervisor
        from proxy.settings import Settings

        s = Settings()
        with LocalModelSupervisor(s.local_model, s.model_cache_dir, threads=s.local_model_threads,
                                  ctx=s.local_model_ctx, parallel=s.local_model_parallel) as model:  # fmt: skip
            results = run_all(model.base_url, s.local_model)
    report = {"results": results, "settings": {k: v for k, v in vars(a).items() if k != "out"}}
    text = json.dumps(report, indent=2, default=str)
    if a.out:
        a.out.write_text(text)
    print(f"{'taste':<10} {'before':>7} {'after':>7}  questions  seconds")
    for r in results:
        print(
            f"{r['taste']:<10} {r['before']:>7.2f} {r['after']:>7.2f}  {r['eval_questions']:>9}  {r['seconds']:>7.0f}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
