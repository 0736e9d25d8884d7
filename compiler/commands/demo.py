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
from collections.abc import Callable
from pathlib import Path
from typing import Any

from proxy.settings import Settings

from ..settings import CompilerSettings
from ..simulate import EVAL_LLAMA_CPP, TASTES, LoopRound, Taste, closed_loop
from .common import run_cleanly
from .endpoints import resolve_llms


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
    return run_cleanly(lambda: _report(taste, workdir, _loop(args, workdir, taste, overrides, say)))


def _report(taste: Taste, workdir: Path, rows: list[LoopRound]) -> int:
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


def _loop(args: argparse.Namespace, workdir: Path, taste: Taste, overrides: dict[str, Any],
          say: Callable[[str], None]) -> list[LoopRound]:  # fmt: skip
    """The closed loop on --base-url, else on the embedded model (reused if the proxy on this
    host runs it, see endpoints.py), with the judge resolved as for `speclearn compile`."""
    settings = Settings()
    if not args.base_url:
        say("the embedded model: reused if a proxy on this host runs it, else started ...")
    compiler = CompilerSettings(base_url=args.base_url) if args.base_url else CompilerSettings()
    with resolve_llms(settings, compiler, force_local=not args.base_url, say=say) as compiler:
        assert compiler.base_url is not None
        judge = {k: getattr(compiler, k) for k in ("judge_base_url", "judge_model") if getattr(compiler, k)}
        model = {} if args.base_url else {"model": compiler.model}
        return asyncio.run(closed_loop(compiler.base_url, workdir, taste, rounds=args.rounds, samples=args.samples,
                                       compiler_overrides={**overrides, **model, **judge}, say=say,
                                       eval_extra=None if args.base_url else EVAL_LLAMA_CPP))  # fmt: skip
