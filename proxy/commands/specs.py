"""`speclearn specs`: the registry from the command line. Rollback = moving `production`."""
from __future__ import annotations

import argparse
import asyncio
import difflib
import sys
from pathlib import Path

from ..errors import ProxyError
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
    publish.add_argument("--label", action="append", default=None, help="labels to move (default: production)")
    label = sub.add_parser("label", help="point LABEL at VERSION (promote or roll back)")
    label.add_argument("name")
    label.add_argument("label")
    label.add_argument("version", type=int)


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
    elif args.action == "show":
        name, ref = parse_ref(args.ref)
        spec = snapshot.resolve(name, ref)
        if args.meta:
            for key, value in spec.meta.items():
                print(f"# {key}: {value}")
        sys.stdout.write(spec.text)
    elif args.action == "diff":
        a, b = snapshot.resolve(args.name, args.a), snapshot.resolve(args.name, args.b)
        sys.stdout.writelines(
            difflib.unified_diff(
                a.text.splitlines(True), b.text.splitlines(True), f"{a.ref}", f"{b.ref}"
            )
        )
    elif args.action == "publish":
        text = sys.stdin.read() if args.file == "-" else Path(args.file).read_text("utf-8")
        labels = args.label if args.label is not None else ["production"]
        spec = await registry.publish(args.name, text, labels=labels)
        print(f"published {spec.ref} ({', '.join(labels) or 'no labels'})")
    elif args.action == "label":
        await registry.set_label(args.name, args.label, args.version)
        print(f"{args.name}: {args.label} -> {args.version}")
    return 0


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
