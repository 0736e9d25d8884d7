"""The parent side: run the model server in a child process, health-check it, restart it when
it dies, stop it with the parent."""

from __future__ import annotations

import collections
import contextlib
import logging
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

from .errors import LocalModelError
from .models import DEFAULT_MODEL, get_model
from .server import (
    DEFAULT_CTX,
    DEFAULT_PARALLEL,
    _url_host,
    check_port,
    child_command,
    default_threads,
    free_port,
    healthy,
    require_runtime,
)
from .weights import ensure_model

if TYPE_CHECKING:
    from ..settings import Settings

log = logging.getLogger("speclearn.local_model")

CommandFactory = Callable[[str, int], Sequence[str]]


class LocalModelSupervisor:
    """Run the local model server in a child process and keep it running.

    Sync and thread-based so `speclearn serve` can start it before uvicorn. The port is chosen
    once, so a restarted child keeps the base URL the proxy was configured with. `command`
    (host, port) -> argv is injectable for tests; by default the model is assembled here, in the
    parent, so its errors surface from `start()` rather than from a crashing child.
    """

    def __init__(
        self,
        model: str = DEFAULT_MODEL,
        cache_dir: Path | str | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        threads: int = 0,
        ctx: int = DEFAULT_CTX,
        parallel: int = DEFAULT_PARALLEL,
        *,
        command: CommandFactory | None = None,
        restart_delay: float = 1.0,
        max_restart_delay: float = 30.0,
    ) -> None:
        self.model, self.cache_dir, self.host, self.port = model, cache_dir, host, port
        self.threads, self.ctx, self.parallel = threads or default_threads(), ctx, parallel
        self._command = command
        self.restart_delay, self.max_restart_delay = restart_delay, max_restart_delay
        self.restarts = 0
        self._proc: subprocess.Popen[bytes] | None = None
        self._stderr: collections.deque[str] = collections.deque(maxlen=40)
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._watcher: threading.Thread | None = None
        self._start_timeout = 120.0

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: Any) -> Self:
        """The model `SPECLEARN_LOCAL_MODEL` names, sized by proxy/tuning.py; `overrides` win (a port, a benchmark's
        thread count)."""
        configured: dict[str, Any] = {
            "model": settings.local_model, "cache_dir": settings.model_cache_dir,
            "threads": settings.local_model_threads, "ctx": settings.local_model_ctx,
            "parallel": settings.local_model_parallel,
        }  # fmt: skip
        return cls(**{**configured, **overrides})

    @property
    def root_url(self) -> str:
        return f"http://{_url_host(self.host)}:{self.port}"

    @property
    def base_url(self) -> str:
        return self.root_url + "/v1"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def start(self, timeout: float = 120.0) -> str:
        """Start the child, wait until /health answers, return the OpenAI base URL."""
        if self._command is None:
            require_runtime()
            model_path = ensure_model(self.model, self.cache_dir)
            spec = get_model(self.model)

            def default(host: str, port: int) -> Sequence[str]:
                return child_command(model_path, host, port, self.threads, self.ctx, self.parallel, spec.name)

            self._command = default
        if self.port:
            check_port(self.host, self.port)
        else:
            self.port = free_port(self.host)
        self._start_timeout = timeout
        self._stopping.clear()
        self._spawn_and_wait(timeout)
        self._watcher = threading.Thread(target=self._watch, daemon=True, name="local-model-watch")
        self._watcher.start()
        return self.base_url

    def stop(self, timeout: float = 10.0) -> None:
        """Stop watching and terminate the child (SIGTERM, then SIGKILL)."""
        self._stopping.set()
        with self._lock:
            proc, self._proc = self._proc, None
        if proc is not None:
            terminate(proc, timeout)
        if self._watcher is not None and self._watcher is not threading.current_thread():
            self._watcher.join(timeout)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stderr_tail(self) -> str:
        return "\n".join(self._stderr)

    def _spawn_and_wait(self, timeout: float) -> None:
        assert self._command is not None
        argv = list(self._command(self.host, self.port))
        self._stderr.clear()
        # stdin is a pipe only we hold: the child sees EOF when we die, however we die. Its own
        # session keeps a terminal's Ctrl-C away from it: stop() ends it, after uvicorn drained.
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        threading.Thread(target=self._drain, args=(proc,), daemon=True).start()
        with self._lock:
            if self._stopping.is_set():
                terminate(proc, 5)
                return
            self._proc = proc
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not self._stopping.is_set():
            if proc.poll() is not None:
                time.sleep(0.1)  # let the drain thread catch the last lines
                raise LocalModelError(
                    f"local model server exited with code {proc.returncode} before it was ready:\n{self.stderr_tail()}"
                )
            if healthy(self.root_url, timeout=1.0):
                log.info("local model ready at %s (pid %d)", self.base_url, proc.pid)
                return
            time.sleep(0.1)
        if not self._stopping.is_set():
            terminate(proc, 5)
            raise LocalModelError(f"local model server not ready after {timeout:.0f}s:\n{self.stderr_tail()}")

    def _drain(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stderr is not None
        for raw in proc.stderr:
            line = raw.decode("utf-8", "replace").rstrip()
            self._stderr.append(line)
            log.debug("local model: %s", line)

    def _watch(self) -> None:
        """Restart the child whenever it dies, with backoff while it keeps failing."""
        delay = self.restart_delay
        while not self._stopping.is_set():
            proc = self._proc
            if proc is None:
                return
            try:
                proc.wait(timeout=0.5)
            except subprocess.TimeoutExpired:
                continue
            if self._stopping.is_set():
                return
            log.warning(
                "local model server died (code %s); restarting in %.1fs:\n%s",
                proc.returncode, delay, self.stderr_tail(),
            )  # fmt: skip
            if self._stopping.wait(delay):
                return
            try:
                self._spawn_and_wait(self._start_timeout)
                self.restarts += 1
                delay = self.restart_delay
            except (LocalModelError, OSError) as e:
                log.error("local model restart failed: %s", e)
                delay = min(delay * 2, self.max_restart_delay)


def terminate(proc: subprocess.Popen[bytes], timeout: float) -> None:
    """Terminate a child (killed if it has not exited after `timeout` s) and close its pipes."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    for f in (proc.stdin, proc.stderr):
        with contextlib.suppress(OSError):
            if f:
                f.close()
