"""`speclearn doctor [NAME]`: one tiny call to each endpoint the compiler would use, one line each.

Lines start with `ok:`, `note:` (a round adapts: max_completion_tokens, sampled votes),
`warning:` (a round falls back: embeddings) or `problem:` (a round cannot run: model not
served, key refused, endpoint down). Exit 1 when any problem blocks compiling, else 0.
"""

from __future__ import annotations

import argparse
import asyncio

from ..doctor import Finding, blocking, diagnose
from .common import add_llm_options, build_settings, context, run_cleanly, setup_logging
from .endpoints import resolve_llms


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", nargs="?", help="spec whose traffic picks the compiler's model (default: all specs)")
    add_llm_options(parser)


def run(args: argparse.Namespace) -> int:
    setup_logging(args.verbose)
    return run_cleanly(lambda: asyncio.run(_run(args)))


async def _run(args: argparse.Namespace) -> int:
    settings, compiler = build_settings(args)

    def say(f: Finding) -> None:
        print(f.line(), flush=True)

    with resolve_llms(settings, compiler, force_local=args.local_model) as compiler:
        async with context(settings, compiler, with_ledger=True, use_cache=False) as ctx:
            findings = await diagnose(ctx, args.name, say)
    if blocking(findings):
        print(f"{sum(f.level == 'problem' for f in findings)} problem(s): the compiler cannot run as configured")
        return 1
    return 0
