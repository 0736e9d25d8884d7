"""`speclearn feedback export`: feedback joined to its inferences as JSONL, for any other tool."""
from __future__ import annotations

import argparse
import asyncio
import sys

import orjson

from ..ledger import open_ledger
from ..settings import Settings


def configure(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True)
    export = sub.add_parser("export", help="write JSONL: one feedback event with its inference per line")
    export.add_argument("--spec", help="only feedback on inferences served with this spec")
    export.add_argument("--since", type=float, help="Unix time; only feedback at or after it")
    export.add_argument("-o", "--output", help="file to write (default: standard output)")


def run(args: argparse.Namespace) -> int:
    async def export() -> list[bytes]:
        ledger = open_ledger(Settings())
        await ledger.start()
        try:
            events = await ledger.feedback_events(spec=args.spec, since=args.since)
        finally:
            await ledger.close()
        return [orjson.dumps(e.to_dict()) + b"\n" for e in events]

    lines = asyncio.run(export())
    if args.output:
        with open(args.output, "wb") as fh:
            fh.writelines(lines)
        print(f"wrote {len(lines)} feedback events to {args.output}", file=sys.stderr)
    else:
        sys.stdout.buffer.writelines(lines)
    return 0
