"""`speclearn feedback export`: feedback joined to its inferences as JSONL, for any other tool.
`speclearn feedback forget USER`: erase one end user's inferences and feedback (docs/data.md).
`speclearn feedback purge`: apply SPECLEARN_LEDGER_RETENTION_DAYS now (the proxy does it hourly).

`--format events` (the default): one feedback event with its inference per line.
`--format dpo`: the preference pairs a compile round would build from that feedback (the same
per-user cap, time window and held-out split), in the conversational shape TRL's DPOTrainer
reads (compiler/dpo_export.py says which keys and why).
"""
from __future__ import annotations

import argparse
import asyncio
import sys
import time
from typing import TYPE_CHECKING, Any

import orjson

from ..extras import MissingExtra
from ..ledger import open_ledger
from ..settings import Settings

if TYPE_CHECKING:  # the compiler is imported only for --format dpo
    from compiler.settings import CompilerSettings

FORMATS = ("events", "dpo")
DAY = 86400.0


def configure(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True)
    export = sub.add_parser("export", help="write JSONL: feedback events, or the compiler's preference pairs")
    export.add_argument("--format", choices=FORMATS, default="events",
                        help="events: one feedback event with its inference per line (default); "
                        "dpo: the compiler's preference pairs as TRL DPOTrainer rows (prompt, chosen, rejected)")  # fmt: skip
    export.add_argument("--spec", help="only feedback on inferences served with this spec")
    export.add_argument("--since", type=float, help="Unix time; only feedback at or after it "
                        "(dpo default: the compiler's window, SPECLEARN_COMPILER_WINDOW_DAYS)")  # fmt: skip
    export.add_argument("--split", choices=("train", "heldout", "all"), default="train",
                        help="dpo: the compiler's training pairs (default), its held-out pairs, or both")  # fmt: skip
    export.add_argument("--no-cross", action="store_true",
                        help="dpo: leave out cross pairs (an up and a down on different questions)")  # fmt: skip
    export.add_argument("-o", "--output", help="file to write (default: standard output)")
    forget = sub.add_parser("forget", help="erase an end user's inferences and feedback, and say how many rows")
    forget.add_argument("user", help="the user id as the app sends it (user, safety_identifier, X-User-Id) "
                        "or as stored (addr:..., pii:...)")  # fmt: skip
    purge = sub.add_parser("purge", help="delete rows older than the retention now, and say how many")
    purge.add_argument("--days", type=float, help="override SPECLEARN_LEDGER_RETENTION_DAYS for this run")


def _dpo_lines(events: list[Any], split: str, cross: bool, c: CompilerSettings) -> list[bytes]:
    """The pairs with the per-user cap and held-out split a compile round under `c` would use."""
    from compiler.dpo_export import dpo_rows

    rows = dpo_rows(events, split, holdout_fraction=c.holdout_fraction, max_per_user=c.max_per_user, cross=cross)  # type: ignore[arg-type]
    return [orjson.dumps(r) + b"\n" for r in rows]


def run(args: argparse.Namespace) -> int:
    try:
        if args.action == "forget":
            return forget(args.user)
        if args.action == "purge":
            return purge(args.days)
        return export(args)
    except MissingExtra as exc:  # e.g. SPECLEARN_LEDGER_CONTENT=redacted without the `redact` extra
        print(f"error: {exc}", file=sys.stderr)
        return 2


def forget(user: str) -> int:
    """Erase `user` on the configured ledger; one line with the counts."""
    if not user.strip():
        print("speclearn feedback forget: the user id is empty", file=sys.stderr)
        return 2

    async def erase() -> tuple[int, int]:
        ledger = open_ledger(Settings())
        await ledger.start()
        try:
            return await ledger.forget_user(user)
        finally:
            await ledger.close()

    inferences, feedback = asyncio.run(erase())
    print(f"erased {inferences} inference rows and {feedback} feedback rows of user {user!r}")
    return 0


def purge(days: float | None) -> int:
    """One retention pass now, with the configured (or given) number of days."""
    settings = Settings()
    days = days if days is not None else settings.ledger_retention_days
    if days is None or days <= 0:
        print("speclearn feedback purge: no retention: set SPECLEARN_LEDGER_RETENTION_DAYS or pass --days N",
              file=sys.stderr)  # fmt: skip
        return 2
    from ..retention import Retention

    retention = Retention(days, batch=settings.ledger_purge_batch, pause=settings.ledger_purge_pause)

    async def run_once() -> Any:
        ledger = open_ledger(settings.model_copy(update={"ledger_retention_days": None}))  # no background pass
        await ledger.start()
        try:
            return await retention.purge(ledger)
        finally:
            await ledger.close()

    done = asyncio.run(run_once())
    print(f"purged {done.inferences} inference rows and {done.feedback} feedback rows older than {days:g} days "
          f"in {done.seconds:.1f} s")  # fmt: skip
    return 0


def export(args: argparse.Namespace) -> int:
    dpo = args.format == "dpo"
    if not dpo and (args.split != "train" or args.no_cross):
        print("speclearn feedback export: --split and --no-cross apply to --format dpo only", file=sys.stderr)
        return 2

    async def export() -> list[bytes]:
        since, until, compiler = args.since, None, None
        if dpo:
            from compiler.settings import CompilerSettings

            compiler, until = CompilerSettings(), time.time()
            if since is None:  # the window a compile round reads (compiler/runner.py ledger_dataset)
                since = until - compiler.window_days * DAY
        ledger = open_ledger(Settings())
        await ledger.start()
        try:
            events = await ledger.feedback_events(spec=args.spec, since=since, until=until)
        finally:
            await ledger.close()
        if compiler is not None:
            return _dpo_lines(events, args.split, not args.no_cross, compiler)
        return [orjson.dumps(e.to_dict()) + b"\n" for e in events]

    lines = asyncio.run(export())
    what = f"{args.split} preference pairs" if dpo else "feedback events"
    if args.output:
        with open(args.output, "wb") as fh:
            fh.writelines(lines)
        print(f"wrote {len(lines)} {what} to {args.output}", file=sys.stderr)
    else:
        sys.stdout.buffer.writelines(lines)
    return 0
