"""Child processes of the benchmark: start, pin, wait for health, measure, stop.

Why /proc instead of psutil: the smoke test runs in CI with the base install only, and everything
needed here (process-group members, RSS, CPU ticks) is three small files per process on Linux.
Each target is started in its own session, so "its process tree" is exactly the processes whose
process group is the leader's pid: uvicorn/LiteLLM workers included, nothing else.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

_PAGE = os.sysconf("SC_PAGE_SIZE")
_TICK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    """A loopback port that was free a moment ago (the usual small race is acceptable here)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _stat_fields(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read()
    except OSError:
        return None
    return raw[raw.rfind(b")") + 2 :].decode().split()  # fields after "pid (comm) "


def group_pids(pgid: int) -> list[int]:
    """Live processes whose process group is ``pgid`` (field 3 of /proc/PID/stat is pgrp)."""
    out = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            f = _stat_fields(int(name))
            if f is not None and int(f[2]) == pgid and f[0] != "Z":
                out.append(int(name))
    return out


def rss_bytes(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/statm", "rb") as f:
                total += int(f.read().split()[1]) * _PAGE
        except OSError:
            pass
    return total


def cpu_seconds(pids: list[int]) -> float:
    """User+system CPU of the live processes (children that exited are not counted)."""
    total = 0
    for pid in pids:
        f = _stat_fields(pid)
        if f is not None:
            total += int(f[11]) + int(f[12])
    return total / _TICK


def runqueue_wait_seconds(pids: list[int]) -> float:
    """Time the processes' threads were runnable but waiting for a CPU (/proc/PID/task/*/schedstat).

    Next to CPU time it tells contention (waiting for a core) from blocking (sleeping on I/O or a
    lock): a proxy at 50% CPU with 50% run-queue wait is starved, with 0% wait it is stuck.
    """
    total = 0
    for pid in pids:
        try:
            tids = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for tid in tids:
            try:
                with open(f"/proc/{pid}/task/{tid}/schedstat", "rb") as f:
                    total += int(f.read().split()[1])
            except (OSError, IndexError, ValueError):
                pass
    return total / 1e9


def pinning(workers: int, mode: str) -> tuple[set[int] | None, set[int] | None]:
    """(proxy cores, harness cores): proxy on cores 0..workers-1, mock+load generator on the rest.

    Pinning only when there is at least one core left for the harness, so that a proxy never
    competes with the load generator for CPU and numbers read "per proxy core".
    """
    cores = sorted(os.sched_getaffinity(0))
    if mode == "off" or len(cores) < workers + 1:
        return None, None
    return set(cores[:workers]), set(cores[workers:])


@dataclass
class Managed:
    """A started target (or mock) with its log file; everything it forks stays in its group."""

    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path
    peak_rss: int = 0
    rss_samples: list[tuple[float, int]] = field(default_factory=list)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def pids(self) -> list[int]:
        return group_pids(self.popen.pid)

    def rss(self) -> int:
        value = rss_bytes(self.pids())
        self.peak_rss = max(self.peak_rss, value)
        return value

    def cpu(self) -> float:
        return cpu_seconds(self.pids())

    def runq_wait(self) -> float:
        return runqueue_wait_seconds(self.pids())

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log_tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM the group, then SIGKILL what is left: only our own session's processes."""
        if self.popen.poll() is None:
            try:
                os.killpg(self.popen.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        for pid in self.pids():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait(5)


def start(
    name: str,
    cmd: list[str],
    log_dir: Path,
    env: dict[str, str] | None = None,
    cpus: set[int] | None = None,
    cwd: Path | None = None,
) -> Managed:
    """Start ``cmd`` in a new session (its own process group), optionally pinned to ``cpus``."""
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{name}.log"
    log = open(log_path, "wb")

    def pre() -> None:
        if cpus:
            os.sched_setaffinity(0, cpus)

    popen = subprocess.Popen(
        cmd,
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        env=env,
        cwd=cwd,
        start_new_session=True,
        preexec_fn=pre,
    )
    log.close()
    return Managed(name, popen, log_path)


def wait_http_ok(proc: Managed, url: str, timeout_s: float) -> None:
    """Poll ``url`` until it answers 2xx; fail early, with the log tail, if the process dies."""
    deadline = time.monotonic() + timeout_s
    last = ""
    while time.monotonic() < deadline:
        if not proc.alive():
            raise RuntimeError(f"{proc.name} exited with {proc.popen.returncode}:\n{proc.log_tail()}")
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if 200 <= resp.status < 300:
                    return
        except OSError as e:
            last = str(e)
        time.sleep(0.2)
    raise RuntimeError(f"{proc.name} not healthy at {url} after {timeout_s}s ({last}):\n{proc.log_tail()}")
