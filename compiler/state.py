"""What the sidecar remembers between rounds, and the per-spec lock that keeps rounds apart.

The lock is `fcntl.flock` on DATA_DIR/compiler/locks/NAME.lock: it holds across processes on one
host (two sidecars, or a sidecar and a manual `speclearn compile`) and is released by the kernel
when its holder dies, so a crash never leaves a spec locked. With the PostgreSQL backend, where
sidecars may run on several hosts, a session-level advisory lock in the database is taken too;
the server releases it when the holder's connection ends.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import orjson

from proxy.registry.files import write_atomic

from .errors import CompilerError, RoundBusy


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


_ADVISORY_KEY = "hashtextextended('speclearn.compile.' || current_schema() || '.' || $1, 0)"


@contextlib.asynccontextmanager
async def database_lock(dsn: str, name: str) -> AsyncIterator[None]:
    """Hold the round lock for `name` in the database (per schema) or raise RoundBusy at once."""
    from proxy import pg  # asyncpg is an extra: only PostgreSQL deployments import it

    try:
        conn = await pg.connect(dsn)
    except pg.CONNECTION_ERRORS as exc:
        raise CompilerError(f"cannot take the round lock in the database at {pg.describe(dsn)}: {exc}") from exc
    try:
        if not await conn.fetchval(f"SELECT pg_try_advisory_lock({_ADVISORY_KEY})", name):
            raise RoundBusy(f"another compile round for {name!r} is running (on some host)")
        try:
            yield
        finally:
            with contextlib.suppress(*pg.CONNECTION_ERRORS):
                await conn.execute(f"SELECT pg_advisory_unlock({_ADVISORY_KEY})", name)
    finally:
        with contextlib.suppress(*pg.CONNECTION_ERRORS):
            await conn.close()


@contextlib.asynccontextmanager
async def round_lock(state_dir: Path, name: str, database_url: str | None) -> AsyncIterator[None]:
    """The host lock, and with a shared database the cross-host one too."""
    with spec_lock(state_dir, name):
        if database_url is None:
            yield
        else:
            async with database_lock(database_url, name):
                yield


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
