"""`speclearn compiler`: the sidecar loop, with Prometheus metrics on its own port."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
from collections.abc import Callable

from prometheus_client import start_http_server

from proxy.local_model import LocalModelError

from ..runner import Context
from ..sidecar import run_forever, tick
from .common import add_llm_options, build_settings, context, run_cleanly, setup_logging
from .endpoints import EmbeddedServers, embedded_servers, resolve

log = logging.getLogger("speclearn.compiler.sidecar")


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--interval", type=float, help="seconds between passes (default 300)")
    parser.add_argument("--min-feedback", type=int, help="new feedback events that make a spec due (default 20)")
    parser.add_argument("--metrics-port", type=int, help="Prometheus port (default 9101; 0 = off)")
    parser.add_argument("--once", action="store_true", help="one pass over the specs, then exit")
    parser.add_argument("--auto-promote", action="store_true", default=None,
                        help="promote/roll back `candidate` from live thumbs (with a canary share)")  # fmt: skip
    add_llm_options(parser)


def run(args: argparse.Namespace) -> int:
    setup_logging(args.verbose)
    return run_cleanly(lambda: asyncio.run(_run(args)))


async def _run(args: argparse.Namespace) -> int:
    settings, compiler = build_settings(args)
    options = {"interval": args.interval, "min_feedback": args.min_feedback, "metrics_port": args.metrics_port,
               "auto_promote": args.auto_promote}  # fmt: skip
    update = {k: v for k, v in options.items() if v is not None}
    compiler = compiler.model_copy(update=update)
    if compiler.metrics_port and not args.once:
        start_http_server(compiler.metrics_port)
        log.info("compiler metrics on :%d/metrics", compiler.metrics_port)
    with embedded_servers(settings) as servers:
        compiler = resolve(servers, settings, compiler, force_local=args.local_model)
        async with context(settings, compiler, with_ledger=True, use_cache=not args.no_cache) as ctx:
            if args.once:
                await tick(ctx)
                return 0
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, stop.set)
            log.info("compiler sidecar: every %.0fs, specs with >= %d new feedback events",
                     compiler.interval, compiler.min_feedback)  # fmt: skip
            await run_forever(ctx, stop, before_tick=_follow(servers, ctx))
    return 0


def _follow(servers: EmbeddedServers, ctx: Context) -> Callable[[], None]:
    """Keep the sidecar on a live embedded server when the one it reused goes away."""

    def refresh() -> None:
        try:
            ctx.compiler = servers.refresh(ctx.compiler)
        except LocalModelError as exc:  # the rounds fail and back off until a server is back
            log.error("compiler LLM: %s", exc)

    return refresh
