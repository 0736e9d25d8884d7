"""The model server: llama.cpp's HTTP server (xllamacpp) in this process, and the child entry
point `python -m proxy.local_model` that the supervisor runs; plus the port and health helpers
both sides use.

xllamacpp has no command line and serves from background threads until its process exits, hence
a child process that exits on its own when its parent dies.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import importlib.util
import os
import signal
import socket
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path

from .errors import LocalModelError
from .models import DEFAULT_MODEL

RUNTIME = "xllamacpp==2026.10.11549"  # pinned: outputs differ between llama.cpp builds
HEALTH_PATH = "/health"
# One KV pool shared by the slots (kv_unified): a single request may use all of it, e.g. the
# compiler's long prompts, while 4 concurrent chats still average 4096 tokens each. ≈0.8 GB RSS.
DEFAULT_CTX = 16384
DEFAULT_PARALLEL = 4


def runtime_installed() -> bool:
    """find_spec does not load the 34 MB library."""
    return importlib.util.find_spec("xllamacpp") is not None


def require_runtime(extra: str = "local") -> None:
    """Fail early and clearly if xllamacpp is missing; `extra` is the one to suggest."""
    if not runtime_installed():
        raise LocalModelError(
            f"the local model runtime is not installed: pip install 'speclearn[{extra}]' (or pip install {RUNTIME})."
        )


def check_port(host: str, port: int) -> None:
    """Raise LocalModelError if host:port cannot be bound (llama.cpp's own message is obscure)."""
    with socket.socket(_family(host), socket.SOCK_STREAM) as s:
        # Like the server itself: REUSEADDR ignores TIME_WAIT leftovers, never a live listener.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as e:
            if e.errno in (errno.EADDRINUSE, errno.EACCES):
                raise LocalModelError(
                    f"port {port} on {host} is already in use; pick another with --port, or 0 for a free port."
                ) from None
            raise LocalModelError(f"cannot bind {host}:{port}: {e}") from None


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(_family(host), socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def _url_host(host: str) -> str:
    if host in ("0.0.0.0", "::", ""):
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host


_direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never via $http_proxy


def healthy(root: str, timeout: float = 1.0) -> bool:
    """True once llama.cpp answers /health with 200 (it answers 503 while loading)."""
    try:
        with _direct.open(root + HEALTH_PATH, timeout=timeout) as r:
            return bool(r.status == 200)
    except (urllib.error.URLError, OSError, ValueError):
        return False


def exit_with_parent(parent_pid: int, *, stdin_eof: bool = True) -> None:
    """Exit this process as soon as the parent is gone, even after its kill -9.

    Two signals, both process-level (PR_SET_PDEATHSIG would follow the *thread* that spawned us):
    EOF on the stdin pipe the parent holds (instant), and the parent pid changing (poll).
    """

    def eof() -> None:
        with contextlib.suppress(Exception):
            while sys.stdin.buffer.read(4096):
                pass
        os._exit(0)

    def poll() -> None:
        while os.getppid() == parent_pid:
            time.sleep(0.5)
        os._exit(0)

    if stdin_eof:
        threading.Thread(target=eof, daemon=True, name="parent-eof").start()
    threading.Thread(target=poll, daemon=True, name="parent-poll").start()


def default_threads() -> int:
    """Leave one core to the proxy and its clients: on a busy 2-core box llama.cpp with 2 threads
    fell from 21 to under 3 tokens/s (its threads spin-wait on each other); 1 thread held 12."""
    return max(1, (os.cpu_count() or 2) - 1)


def start_server(
    model_path: Path | str,
    host: str = "127.0.0.1",
    port: int = 8081,
    threads: int = 0,
    ctx: int = DEFAULT_CTX,
    parallel: int = DEFAULT_PARALLEL,
    alias: str = DEFAULT_MODEL,
) -> object:
    """Start llama.cpp's HTTP server in this process's background threads and return its handle.

    Returns once the model is loaded and the port is listening (the constructor blocks); the
    server stops when the handle is garbage-collected. `port=0` lets the OS choose: read it back
    from `handle.listening_address`. `ctx` is one KV pool shared by the `parallel` slots (without
    kv_unified llama.cpp would cap every request at ctx / parallel).
    """
    require_runtime()
    if port:
        check_port(host, port)
    import xllamacpp

    threads = threads or default_threads()
    p = xllamacpp.CommonParams()
    p.model.path = str(model_path)
    p.model_alias = {alias}
    p.hostnames = [host]
    p.port = port
    p.n_ctx = ctx
    p.n_parallel = parallel
    p.kv_unified = True
    p.cpuparams.n_threads = threads
    p.cpuparams_batch.n_threads = threads
    p.ui = False
    p.offline = True
    p.embedding = False
    # A Ctrl-C held during construction is raised as we leave the block; `server` is a local, so
    # the traceback keeps it alive and the caller can exit without running its destructor.
    with _sigint_deferred():
        try:
            server = xllamacpp.Server(p)
        except RuntimeError as e:  # a generic message; llama.cpp logged the cause to stderr
            raise LocalModelError(f"llama.cpp server failed to start for {model_path}: {e}") from e
    return server


@contextlib.contextmanager
def _sigint_deferred() -> Iterator[None]:
    """Hold Ctrl-C until the server object exists. Interrupted inside its constructor, xllamacpp
    destroys the half-started server and that hangs ("waiting for main loop exit"). Threads the
    constructor starts inherit the mask, so a later Ctrl-C reaches the Python main thread."""
    if not hasattr(signal, "pthread_sigmask") or threading.current_thread() is not threading.main_thread():
        yield
        return
    old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def serve_forever(
    model_path: Path | str,
    host: str = "127.0.0.1",
    port: int = 8081,
    threads: int = 0,
    ctx: int = DEFAULT_CTX,
    parallel: int = DEFAULT_PARALLEL,
    alias: str = DEFAULT_MODEL,
) -> None:
    """Serve until the process is killed or interrupted.

    Never returns: the server is not destroyed on the way out, because destroying it right after
    start can hang forever in llama.cpp ("waiting for main loop exit"); nothing needs flushing.
    """
    server = start_server(model_path, host, port, threads, ctx, parallel, alias)  # noqa: F841
    try:
        threading.Event().wait()
    finally:
        sys.stderr.flush()
        os._exit(0)


def child_command(
    model_path: Path, host: str, port: int, threads: int, ctx: int, parallel: int, alias: str
) -> list[str]:
    return [
        sys.executable, "-m", "proxy.local_model", "--model-path", str(model_path),
        "--host", host, "--port", str(port), "--threads", str(threads), "--ctx", str(ctx),
        "--parallel", str(parallel), "--alias", alias, "--parent-pid", str(os.getpid()),
    ]  # fmt: skip


def _main(argv: Sequence[str] | None = None) -> int:
    """Child entry point: `python -m proxy.local_model --model-path ... --port ...`."""
    ap = argparse.ArgumentParser(prog="python -m proxy.local_model")
    ap.add_argument("--model-path", required=True)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--ctx", type=int, default=DEFAULT_CTX)
    ap.add_argument("--parallel", type=int, default=DEFAULT_PARALLEL)
    ap.add_argument("--alias", default=DEFAULT_MODEL)
    ap.add_argument("--parent-pid", type=int, default=0)
    a = ap.parse_args(argv)
    if a.parent_pid:
        exit_with_parent(a.parent_pid)
    try:
        serve_forever(a.model_path, a.host, a.port, a.threads, a.ctx, a.parallel, a.alias)
    except LocalModelError as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        return 2
    return 0
