"""`speclearn compile NAME`: one compile round, printed as it goes.

Prints the projected LLM calls and tokens first (`--dry-run` stops there), progress on stderr,
then the principles with their evidence, the gate's numbers and the diff; publishes unless the
gate fails (`--force` publishes anyway and says so in the front matter).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from typing import Any

import orjson

from proxy.registry import Registry

from .. import report
from ..dataset import governed
from ..outcomes import Outcome
from ..pairs_file import dataset_from_pairs
from ..pipeline import RoundResult
from ..runner import compile_spec
from .common import add_llm_options, build_settings, context, run_cleanly, setup_logging
from .endpoints import resolve_llms

EXIT = {Outcome.PUBLISHED: 0, Outcome.HELD: 0, Outcome.EXPLORED: 0, Outcome.SKIPPED: 0, Outcome.GATE_FAILED: 3,
        Outcome.ERROR: 1}  # fmt: skip


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", help="spec name (a folder under specs/)")
    parser.add_argument(
        "--pairs",
        help="bootstrap from a pairs file: CSV/JSONL with prompt,chosen,rejected (text or chat message "
        "lists) or text_a,text_b,preferred_text; a split column (train/heldout/test) is honoured",
    )
    parser.add_argument(
        "--instruction",
        help="the person's instruction, stored if the spec has none yet; a spec with "
        "no version also gets it as version 1, labelled production (not with --dry-run, --no-publish)",
    )
    parser.add_argument("--dry-run", action="store_true", help="print the projected cost and stop")
    parser.add_argument("--force", action="store_true", help="publish even if the gate fails")
    parser.add_argument("--no-publish", action="store_true", help="run the round, publish nothing")
    parser.add_argument("--json", action="store_true", help="print the result as JSON on stdout")
    add_llm_options(parser)


def run(args: argparse.Namespace) -> int:
    setup_logging(args.verbose)
    return run_cleanly(lambda: asyncio.run(_run(args)))


async def _run(args: argparse.Namespace) -> int:
    settings, compiler = build_settings(args)
    # a dry run only projects the cost: it needs no LLM, so it starts or looks up none
    llms = resolve_llms(settings, compiler, force_local=args.local_model)
    with contextlib.nullcontext(compiler) if args.dry_run else llms as compiler:
        async with context(settings, compiler, with_ledger=not args.pairs, use_cache=not args.no_cache) as ctx:
            if args.instruction:
                state = ctx.registry.snapshot.specs.get(args.name)
                if state is None or not state.instruction:
                    await ctx.registry.set_instruction(args.name, args.instruction.strip() + "\n")
                if not (args.dry_run or args.no_publish):
                    await publish_instruction(ctx.registry, args.name)
            dataset = None
            if args.pairs:  # what the compiler's LLM may read of it: SPECLEARN_LEDGER_CONTENT
                dataset = governed(dataset_from_pairs(args.pairs, compiler.holdout_fraction, compiler.seed), settings)

            def prepared(r: RoundResult) -> None:
                out = sys.stderr if args.json else sys.stdout  # --json: stdout holds the JSON only
                print(f"spec {args.name}: {r.dataset}", file=out, flush=True)
                print(
                    report.projection(r.projection, compiler.max_llm_calls, compiler.max_tokens), file=out, flush=True
                )

            result = await compile_spec(
                ctx, args.name, dataset=dataset, dry_run=args.dry_run, force=args.force,
                publish_result=not args.no_publish, progress=lambda m: print(m, file=sys.stderr, flush=True),
                on_prepared=prepared, record_state=not args.pairs,
            )  # fmt: skip
    if args.json:
        print(orjson.dumps(to_json(result), option=orjson.OPT_INDENT_2).decode())
    else:
        print(report.summary(result))
    return EXIT.get(result.result, 1)


async def publish_instruction(registry: Registry, name: str) -> None:
    """A spec with no version yet gets its instruction as version 1, a person's first version:
    `production` (as `specs publish` and the admin API do), so users are served the person's words
    and the compiled version waits beside it as `candidate` instead of being the only one."""
    state = registry.snapshot.specs.get(name)
    if state is None or state.versions or not state.instruction:
        return
    spec = await registry.publish(name, state.instruction, labels=None)
    labels = sorted(k for k, v in registry.snapshot.get(name).labels.items() if v == spec.version)
    print(f"published the instruction as {spec.ref} ({', '.join(labels) or 'no label'})", file=sys.stderr, flush=True)


def to_json(r: RoundResult) -> dict[str, Any]:
    return {
        "spec": r.spec,
        "result": r.result,
        "reason": r.reason,
        "version": r.version.version if r.version else None,
        "parent": r.current.version if r.current else None,
        "projection": {"calls": r.projection.calls, "tokens": r.projection.tokens} if r.projection else None,
        "principles": [p.to_meta() for p in r.candidates],
        "gate": r.gate.to_meta() if r.gate else None,
        "cost": r.cost,
        "dataset": r.dataset,
        "text": r.candidate_text,
        "spec_tokens": r.synthesis.tokens if r.synthesis else None,
        "diff": r.diff,
    }
