"""What the sidecar remembers between rounds, and the per-spec lock that keeps rounds apart.

The lock is `fcntl.flock` on DATA_DIR/compiler/locks/NAME.lock: it holds across processes on one
host (two sidecars, or a sidecar and a manual `speclearn compile`) and is released by the kernel
when its holder dies, so a crash never leaves a spec locked.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

from proxy.registry.files import write_atomic

from .errors import RoundBusy


@contextlib.contextmanager
def spec_lock(state_dir: Path, name: str) -> Iterator[None]:
    """Hold the round lock for `name` or raise RoundBusy at once."""
    path = Path(state_dir) / "locks" / f"{name}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RoundBusy(f"another compile round for {name!r} is running") from None
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


class CompilerState:
    """DATA_DIR/compiler/state.json: per spec, the end of the last round's feedback window, its
    outcome, and the backoff after errors. Written atomically after every round."""

    def __init__(self, state_dir: Path) -> None:
        self.path = Path(state_dir) / "state.json"

    def load(self) -> dict[str, dict[str, Any]]:
        try:
            data = orjson.loads(self.path.read_bytes())
            return data if isinstance(data, dict) else {}
        except (FileNotFoundError, orjson.JSONDecodeError):
            return {}

    def get(self, name: str) -> dict[str, Any]:
        return dict(self.load().get(name) or {})

    def update(self, name: str, **fields: Any) -> dict[str, Any]:
        data = self.load()
        entry = {**(data.get(name) or {}), **fields}
        data[name] = entry
        write_atomic(self.path, orjson.dumps(data, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS))
        return entry
