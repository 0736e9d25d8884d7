"""`speclearn feedback export --format dpo`: the preference pairs a compile round would build from
the feedback (the same window, per-user cap and held-out split), as TRL DPOTrainer rows
(compiler/dpo_export.py says which keys and why).

The options are the proxy's: proxy/commands/feedback.py configures every `feedback export` option,
so one `--help` lists them, and proxy/cli.py hands the parsed arguments here when the format is
dpo. That way the proxy never imports the compiler, and this module reads the ledger with the
proxy's own helpers.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time

import orjson

from proxy.commands.feedback import read_events, write_lines
from proxy.extras import MissingExtra
from proxy.ledger import FeedbackEvent

from ..dpo_export import SplitName, dpo_rows
from ..settings import CompilerSettings

DAY = 86400.0


def dpo_lines(events: list[FeedbackEvent], split: SplitName, cross: bool, c: CompilerSettings) -> list[bytes]:
    """The pairs with the per-user cap and held-out split a compile round under `c` would use."""
    rows = dpo_rows(events, split, holdout_fraction=c.holdout_fraction, max_per_user=c.max_per_user, cross=cross)
    return [orjson.dumps(r) + b"\n" for r in rows]


def run(args: argparse.Namespace) -> int:
    compiler, until = CompilerSettings(), time.time()
    # without --since, the window a compile round reads (compiler/runner.py ledger_dataset)
    since = args.since if args.since is not None else until - compiler.window_days * DAY
    try:
        events = asyncio.run(read_events(args.spec, since, until))
    except MissingExtra as exc:  # e.g. SPECLEARN_LEDGER_CONTENT=redacted without the `redact` extra
        print(f"error: {exc}", file=sys.stderr)
        return 2
    lines = dpo_lines(events, args.split, not args.no_cross, compiler)
    return write_lines(lines, args.output, f"{args.split} preference pairs")
