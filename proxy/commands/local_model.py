"""`speclearn local-model`: assemble the embedded model and serve it in the foreground.

For trying speclearn without an API key: point `SPECLEARN_UPSTREAM_URL` at the printed URL
(or let `speclearn serve` start the model itself). The base URL is the only line on stdout so
scripts can capture it; progress and llama.cpp's log go to stderr.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time
from typing import Any, NoReturn

from proxy import local_model as lm
from proxy import tuning
from proxy.settings import Settings

DEFAULT_PORT = 8081  # a fixed port by default so the printed URL can go into a config file


def configure(parser: argparse.ArgumentParser) -> None:
    a = parser.add_argument
    a("--model", choices=sorted(lm.MODELS), help=f"default: $SPECLEARN_LOCAL_MODEL or {lm.DEFAULT_MODEL}")
    a("--host", default="127.0.0.1")
    a("--port", type=int, help=f"0 = any free port (default {DEFAULT_PORT})")
    a("--threads", type=int, help="CPU threads (default 0 = cores - 1)")
    a("--ctx", type=int, help=f"context tokens, one pool shared by the slots (default {tuning.LOCAL_MODEL_CTX})")
    a("--parallel", type=int, help=f"concurrent request slots (default {tuning.LOCAL_MODEL_PARALLEL})")
    a("--cache-dir", help="where the assembled model file is kept (default: $SPECLEARN_MODEL_CACHE_DIR)")


def run(args: argparse.Namespace) -> int:
    announced: list[lm.Announcement] = []
    # Ctrl-C is how this command stops, also when a non-interactive shell started it in the
    # background, which leaves SIGINT ignored for the process (uvicorn, behind `speclearn
    # serve`, installs its own handler the same way)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        return _serve(args, announced)
    except KeyboardInterrupt:
        # Exit without destroying the server: llama.cpp can hang in its destructor when
        # interrupted right after start, and it has nothing to flush.
        _exit(announced)


def _exit(announced: list[lm.Announcement]) -> NoReturn:
    for a in announced:
        a.withdraw()
    sys.stdout.flush()
    os._exit(0)


def _serve(args: argparse.Namespace, announced: list[lm.Announcement]) -> int:
    s = Settings()

    def pick(given: Any, default: Any) -> Any:
        return default if given is None else given

    model = pick(args.model, s.local_model)
    port = pick(args.port, s.local_model_port or DEFAULT_PORT)
    t0 = time.perf_counter()
    try:
        lm.require_runtime()
        path = lm.ensure_model(model, pick(args.cache_dir, s.model_cache_dir))
        print(f"model {model}: {path} ({time.perf_counter() - t0:.1f}s)", file=sys.stderr, flush=True)
        server = lm.start_server(
            path,
            args.host,
            port,
            pick(args.threads, s.local_model_threads),
            pick(args.ctx, s.local_model_ctx),
            pick(args.parallel, s.local_model_parallel),
            model,
        )
    except lm.LocalModelError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    root = str(server.listening_address).rstrip("/")  # type: ignore[attr-defined]
    while not lm.healthy(root):
        time.sleep(0.1)
    # Announced for the compiler on this host (DATA_DIR/local-models/MODEL.json); SIGTERM is a
    # clean stop too, so it removes the file like Ctrl-C does.
    announced.append(lm.announce(s.data_dir, model, root, owner="speclearn local-model"))
    signal.signal(signal.SIGTERM, lambda *_: _exit(announced))
    print(f"{root}/v1", flush=True)
    print(
        f"ready in {time.perf_counter() - t0:.1f}s; Ctrl-C stops. Try:\n"
        f"  SPECLEARN_UPSTREAM_URL={root}/v1 speclearn serve",
        file=sys.stderr,
        flush=True,
    )
    threading.Event().wait()  # until Ctrl-C (see run)
    return 0
