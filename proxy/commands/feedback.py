"""`speclearn feedback export`: feedback joined to its inferences as JSONL, for any other tool.
`speclearn feedback forget USER`: erase one end user's inferences and feedback (docs/data.md).
`speclearn feedback purge`: apply SPECLEARN_LEDGER_RETENTION_DAYS now (the proxy does it hourly).

`--format events` (the default): one feedback event with its inference per line.
`--format dpo`: the preference pairs a compile round would build from that feedback (the same
per-user cap, time window and held-out split), in the conversational shape TRL's DPOTrainer
reads. That work is the compiler's: this module configures the options, proxy/cli.py hands the
parsed arguments to compiler/commands/feedback_dpo.py, so the proxy never imports the compiler.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

import orjson

from ..extras import MissingExtra
from ..ledger import FeedbackEvent, open_ledger
from ..settings import Settings

FORMATS = ("events", "dpo")


def configure(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True)
    export = sub.add_parser("export", help="write JSONL: feedback events, or the compiler's preference pairs")
    export.add_argument("--format", choices=FORMATS, default="events",
                        help="events: one feedback event with its inference per line (default); "
                        "dpo: the compiler's preference pairs as TRL DPOTrainer rows (prompt, chosen, rejected)")  # fmt: skip
    export.add_argument("--spec", help="only feedback on inferences served with this spec")
    export.add_argument("--since", type=float, help="Unix time; only feedback at or after it "
                        "(dpo default: the compiler's window, the last 30 days)")  # fmt: skip
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
    """`--format events`; `--format dpo` is the compiler's, reached through proxy/cli.py."""
    if args.format != "events":
        print(f"speclearn feedback export: --format {args.format} is the compiler's work, reached through proxy/cli.py",
              file=sys.stderr)  # fmt: skip
        return 2
    if args.split != "train" or args.no_cross:
        print("speclearn feedback export: --split and --no-cross apply to --format dpo only", file=sys.stderr)
        return 2
    events = asyncio.run(read_events(args.spec, args.since))
    return write_lines([orjson.dumps(e.to_dict()) + b"\n" for e in events], args.output, "feedback events")


async def read_events(spec: str | None, since: float | None, until: float | None = None) -> list[FeedbackEvent]:
    """The feedback events (with their inferences) on the configured ledger, oldest first."""
    ledger = open_ledger(Settings())
    await ledger.start()
    try:
        return await ledger.feedback_events(spec=spec, since=since, until=until)
    finally:
        await ledger.close()


def write_lines(lines: list[bytes], output: str | None, what: str) -> int:
    """JSONL to `output`, saying on stderr how many `what` it holds; else to standard output."""
    if output:
        with open(output, "wb") as fh:
            fh.writelines(lines)
        print(f"wrote {len(lines)} {what} to {output}", file=sys.stderr)
    else:
        sys.stdout.buffer.writelines(lines)
    return 0
