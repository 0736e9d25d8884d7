"""`speclearn demo`: the whole learning loop on the local model, before and after.

Simulated users with a hidden taste ask questions through the real proxy and send thumbs; the
compiler learns a spec from their feedback and publishes it to production; the proxy hot-reloads
it; the thumbs-up rate on questions the compiler never saw is shown before and after.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from pathlib import Path

from ..simulate import TASTES, closed_loop


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--taste", choices=sorted(TASTES), default="short", help="what the simulated users like")
    parser.add_argument("--rounds", type=int, default=1, help="compile rounds (default 1)")
    parser.add_argument("--base-url", help="use this OpenAI-compatible upstream instead of the local model")
    parser.add_argument("--workdir", type=Path, help="keep specs/ and data/ here (default: a temp dir)")
    parser.add_argument("--samples", type=int, default=2, help="answers per training question")


def run(args: argparse.Namespace) -> int:
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="speclearn-demo-"))
    taste = TASTES[args.taste]
    print(f"speclearn demo: users like {taste.description}; working in {workdir}", file=sys.stderr)

    def say(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    overrides = {"proposal_passes": 2, "proposal_sample": 8, "propose_max_tokens": 96, "synth_max_tokens": 256,
                 "validation_pairs": 4, "calibration_pairs": 4, "gate_pairs": 8, "max_llm_calls": 80}  # fmt: skip
    if args.base_url:
        rows = asyncio.run(closed_loop(args.base_url, workdir, taste, rounds=args.rounds, samples=args.samples,
                                       compiler_overrides=overrides, say=say))  # fmt: skip
    else:
        from proxy.local_model import LocalModelSupervisor
        from proxy.settings import Settings

        s = Settings()
        say("starting the local model ...")
        with LocalModelSupervisor.from_settings(s) as model:
            rows = asyncio.run(closed_loop(model.base_url, workdir, taste, rounds=args.rounds, samples=args.samples,
                                           compiler_overrides={**overrides, "model": s.local_model}, say=say))  # fmt: skip
    print(f"\nusers like {taste.description}\n")
    print(f"{'round':>5}  {'spec':<12} {'up-rate':>8}  compile")
    for row in rows:
        compiled = (
            f"{row.compile_result} ({row.llm_calls} calls, {row.tokens} tokens, {row.compile_seconds:.0f}s)"
            if row.compile_result
            else ""
        )
        print(f"{row.round:>5}  {row.version:<12} {row.eval_up_rate:>8.2f}  {compiled}")
    for row in rows:
        if row.published and row.diff:
            print(f"\n{row.published}:\n{row.diff}")
    print(f"\nspecs and ledger kept in {workdir}")
    return 0
