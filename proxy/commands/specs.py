"""`speclearn specs`: the registry from the command line. Rollback = moving `production`."""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import difflib
import sys
from pathlib import Path

from ..errors import ProxyError
from ..ledger import open_ledger
from ..registry import Registry, open_registry
from ..routing import parse_ref
from ..settings import Settings


def configure(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True)
    sub.add_parser("list", help="every spec with its versions and labels")
    show = sub.add_parser("show", help="print one version (NAME, NAME@VERSION or NAME@LABEL)")
    show.add_argument("ref")
    show.add_argument("--meta", action="store_true", help="print the front matter too")
    diff = sub.add_parser("diff", help="unified diff between two versions")
    diff.add_argument("name")
    diff.add_argument("a")
    diff.add_argument("b")
    publish = sub.add_parser("publish", help="publish FILE's text as the next version")
    publish.add_argument("name")
    publish.add_argument("file", help="a text/Markdown file, or - for standard input")
    moved = publish.add_mutually_exclusive_group()
    moved.add_argument(
        "--label",
        action="append",
        default=None,
        help="a label to move onto the new version, repeatable (default: production)",
    )
    moved.add_argument(
        "--no-label",
        action="store_true",
        help="move no label: not production (served by default only while the spec has no production label)",
    )
    label = sub.add_parser("label", help="point LABEL at VERSION (promote or roll back)")
    label.add_argument("name")
    label.add_argument("label")
    label.add_argument("version", type=int)
    for action, what in (("approve", "serve a held version: apply the label the compiler asked for"),
                         ("reject", "never serve a held version")):  # fmt: skip
        hold = sub.add_parser(action, help=what)
        hold.add_argument("name")
        hold.add_argument("version", type=int)
    experiments = sub.add_parser("experiments", help="the auto-promote decision log of a spec's canary")
    experiments.add_argument("name")
    experiments.add_argument("--limit", type=int, default=50, help="newest N decisions (default 50; 0 = all)")


async def _run(args: argparse.Namespace, registry: Registry) -> int:
    await registry.refresh()
    snapshot = registry.snapshot
    if args.action == "list":
        if not snapshot.specs:
            print("no specs")
        for state in snapshot.specs.values():
            labels = ", ".join(f"{k}={v}" for k, v in sorted(state.labels.items())) or "-"
            latest = max(state.versions) if state.versions else "-"
            print(f"{state.name:<24} versions={len(state.versions):<3} latest={latest:<4} labels: {labels}")
            for number, hold in sorted(state.holds.items()):
                if hold.status != "approved":
                    print(f"{'':<24} {state.name}@{number} {hold.status} (asks for {hold.label or 'no label'})")
    elif args.action == "show":
        name, ref = parse_ref(args.ref)
        spec = snapshot.get(name).resolve(ref, include_held=True)
        if args.meta:
            for key, value in spec.meta.items():
                print(f"# {key}: {value}")
        sys.stdout.write(spec.text)
    elif args.action == "diff":
        state = snapshot.get(args.name)
        a, b = state.resolve(args.a, include_held=True), state.resolve(args.b, include_held=True)
        sys.stdout.writelines(
            difflib.unified_diff(a.text.splitlines(True), b.text.splitlines(True), f"{a.ref}", f"{b.ref}")
        )
    elif args.action == "publish":
        # a command: nothing else runs on this loop while the file is read
        text = sys.stdin.read() if args.file == "-" else Path(args.file).read_text("utf-8")  # noqa: ASYNC240
        moved: list[str] = [] if args.no_label else args.label if args.label is not None else ["production"]
        spec = await registry.publish(args.name, text, labels=moved)
        print(f"published {spec.ref} ({', '.join(moved) or 'no labels'})")
    elif args.action == "label":
        await registry.set_label(args.name, args.label, args.version)
        print(f"{args.name}: {args.label} -> {args.version}")
    elif args.action in ("approve", "reject"):
        hold = await registry.decide_hold(args.name, args.version, approve=args.action == "approve")
        applied = f", {hold.label} -> {args.version}" if hold.status == "approved" and hold.label else ""
        print(f"{args.name}@{args.version}: {hold.status}{applied}")
    elif args.action == "experiments":
        await _print_experiments(args.name, args.limit or None)
    return 0


async def _print_experiments(name: str, limit: int | None) -> None:
    ledger = open_ledger(Settings())
    await ledger.start()
    try:
        decisions = await ledger.decisions(name, limit=limit)
    finally:
        await ledger.close()
    if not decisions:
        print(f"no experiment decisions for {name}")
        return
    print(f"{'time (UTC)':<20} {'cand':>4} {'prod':>4} {'decision':<9} {'cand up/n':>10} {'prod up/n':>10} "
          f"{'lift':>7} {'p-value':>8}  reason")  # fmt: skip
    for d in decisions:
        at = dt.datetime.fromtimestamp(d.created_at, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")
        lift = f"{d.lift:+.3f}" if d.lift is not None else "-"
        p = f"{d.p_value:.4f}" if d.p_value is not None else "-"
        print(f"{at:<20} {d.candidate:>4} {d.production:>4} {d.decision:<9} "
              f"{f'{d.candidate_ups}/{d.candidate_n}':>10} {f'{d.production_ups}/{d.production_n}':>10} "
              f"{lift:>7} {p:>8}  {d.reason}")  # fmt: skip


def run(args: argparse.Namespace) -> int:
    settings = Settings()
    registry = open_registry(settings)

    async def main() -> int:
        try:
            return await _run(args, registry)
        finally:
            await registry.close()

    try:
        return asyncio.run(main())
    except ProxyError as exc:
        print(f"speclearn specs: {exc.message}", file=sys.stderr)
        return 1
