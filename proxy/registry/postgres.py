"""The shared registry: spec versions, labels and instructions in PostgreSQL, for many replicas.

Changes reach every replica two ways. A trigger on each registry table bumps
`registry_state.generation` and sends NOTIFY at commit; each replica LISTENs on a dedicated
connection and reloads within milliseconds. Each replica also polls the generation every
`poll_interval`, so a dropped LISTEN connection (failover, idle timeout, a proxy in between)
delays a change by at most one interval, never forever; the listener is re-opened by the poller.

A reload reads the generation and all tables in one REPEATABLE READ transaction and builds a new
immutable `RegistrySnapshot`, swapped in whole. Version texts are immutable, so they are fetched
once per process and reused; each is checked against its sha256 and not served if it differs.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import time
from collections.abc import AsyncIterator, Iterable
from typing import Any

import asyncpg

from .. import pg
from ..errors import Conflict, NotFound, ServiceUnavailable
from . import specfile
from .base import (
    APPROVED,
    HELD,
    REJECTED,
    Hold,
    Registry,
    RegistrySnapshot,
    SpecState,
    SpecVersion,
    check_label,
    check_name,
    held_for_a_person,
    person_default,
)

log = logging.getLogger(__name__)

_GENERATION = "SELECT generation FROM registry_state"
VersionKey = tuple[str, int, str]  # name, version, sha256
_META_ORDER = ("version", "parent", "sha256", "created_at", "author")


def _iso(value: dt.datetime | None) -> str | None:
    return value.astimezone(dt.UTC).isoformat(timespec="seconds") if value is not None else None


class PostgresRegistry(Registry):
    def __init__(self, database_url: str, poll_interval: float = 0.5) -> None:
        self.database_url = database_url
        self.poll_interval = poll_interval
        self.snapshot = RegistrySnapshot({})
        self.listeners = []
        self._pool: asyncpg.Pool | None = None
        self._generation: int | None = None  # the database's generation the snapshot was built from
        self._versions: dict[VersionKey, SpecVersion | None] = {}  # immutable rows, parsed once
        self._lock = asyncio.Lock()
        self._pool_lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._listener: asyncpg.Connection | None = None
        self._listener_failed = False
        self._watcher: asyncio.Task[None] | None = None
        self._unreachable_since: float | None = None  # the watcher's first failed reload of an outage

    # -- lifecycle -----------------------------------------------------------------------
    async def start(self) -> None:
        await self.refresh()
        if self.poll_interval > 0:
            await self._ensure_listener()
            self._watcher = asyncio.create_task(self._watch())

    async def close(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
            self._watcher = None
        await self._drop_listener()
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    async def _get_pool(self) -> asyncpg.Pool:
        """The pool, opened on first use: like the file registry, this one works without `start`
        (the `speclearn specs` command only refreshes and writes; it follows no changes)."""
        async with self._pool_lock:
            if self._pool is None:
                self._pool = await pg.create_pool(self.database_url, max_size=2)  # rare writes
            return self._pool

    @property
    def listening(self) -> bool:
        """True while change notifications arrive; polling covers the gaps otherwise."""
        return self._listener is not None and not self._listener.is_closed()

    # -- following changes -----------------------------------------------------------------
    async def _watch(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.poll_interval)
            self._wake.clear()
            try:
                await self._ensure_listener()
                await self.refresh()
            except Exception as exc:  # noqa: BLE001 - logged once there; the last snapshot stays served
                self._reload_failed(exc)
            else:
                self._reloaded()

    def _reload_failed(self, exc: Exception) -> None:
        """Said once per outage, not on every poll: the snapshot in memory keeps being served."""
        if self._unreachable_since is not None:
            return
        self._unreachable_since = time.monotonic()
        if isinstance(exc, ServiceUnavailable):
            log.warning("spec registry unavailable (%s: %r): serving the last snapshot (generation %s) until it is "
                        "back", exc.message, exc.__cause__, self._generation)  # fmt: skip
        else:
            log.error("spec registry reload failed: serving the last snapshot", exc_info=exc)

    def _reloaded(self) -> None:
        if self._unreachable_since is not None:
            log.warning("spec registry reachable again after %.1f s", time.monotonic() - self._unreachable_since)
            self._unreachable_since = None

    async def _ensure_listener(self) -> None:
        if self.listening:
            return
        await self._drop_listener()
        try:
            conn = await pg.connect(self.database_url)
            await conn.add_listener(pg.REGISTRY_CHANNEL, self._on_notify)
        except (*pg.CONNECTION_ERRORS, asyncpg.PostgresError) as exc:
            if not self._listener_failed:
                log.warning("registry LISTEN unavailable (%s); polling every %.2fs", exc, self.poll_interval)
            self._listener_failed = True
            return
        conn.add_termination_listener(self._on_listener_lost)
        self._listener = conn
        if self._listener_failed:
            log.info("registry LISTEN connection restored")
        self._listener_failed = False
        self._wake.set()  # changes made while it was down were not notified: check now

    async def _drop_listener(self) -> None:
        conn, self._listener = self._listener, None
        if conn is not None and not conn.is_closed():
            conn.remove_termination_listener(self._on_listener_lost)  # closing it is not losing it
            with contextlib.suppress(Exception):
                await asyncio.wait_for(conn.close(), 2)

    def _on_notify(self, conn: Any, pid: int, channel: str, payload: str) -> None:
        self._wake.set()

    def _on_listener_lost(self, conn: Any) -> None:
        log.warning("registry LISTEN connection lost; polling until it is back")
        self._wake.set()

    # -- reading -------------------------------------------------------------------------
    async def refresh(self) -> bool:
        async with self._lock:
            pool = await self._get_pool()
            generation = await pg.with_retry(pool, lambda c: c.fetchval(_GENERATION), "polling the registry")
            if generation == self._generation:
                return False  # the common case: one cheap query per poll
            generation, specs = await pg.with_retry(pool, self._read_all, "loading the registry")
            self._swap(specs)
            self._generation = generation
            return True

    async def _read_all(self, conn: asyncpg.Connection) -> tuple[int, dict[str, SpecState]]:
        """The generation and every table from one snapshot of the database, so they agree."""
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            return await conn.fetchval(_GENERATION), await self._load(conn)

    async def _load(self, conn: asyncpg.Connection) -> dict[str, SpecState]:
        keys: list[VersionKey] = [
            (r["name"], r["version"], r["sha256"])
            for r in await conn.fetch("SELECT name, version, sha256 FROM spec_versions")
        ]
        missing = [key for key in keys if key not in self._versions]
        if missing:
            rows = await conn.fetch(
                "SELECT v.name, v.version, v.text, v.sha256, v.meta FROM spec_versions v "
                "JOIN unnest($1::text[], $2::int[]) AS k (name, version) USING (name, version)",
                [k[0] for k in missing], [k[1] for k in missing],
            )  # fmt: skip
            for row in rows:
                self._versions[(row["name"], row["version"], row["sha256"])] = self._parse(row)
        versions: dict[str, dict[int, SpecVersion]] = {}
        for key in keys:
            spec = self._versions.get(key)
            if spec is not None:
                versions.setdefault(spec.name, {})[spec.version] = spec
        holds: dict[str, dict[int, Hold]] = {}
        for r in await conn.fetch("SELECT name, version, status, label, requested_at, decided_at FROM spec_holds"):
            holds.setdefault(r["name"], {})[r["version"]] = Hold(
                r["status"], r["label"], _iso(r["requested_at"]), _iso(r["decided_at"])
            )
        labels: dict[str, dict[str, int]] = {}
        for r in await conn.fetch("SELECT name, label, version FROM spec_labels"):
            hold = holds.get(r["name"], {}).get(r["version"])
            # never point at an unserved version
            if r["version"] in versions.get(r["name"], {}) and (hold is None or not hold.blocks):
                labels.setdefault(r["name"], {})[r["label"]] = r["version"]
        instructions = {r["name"]: r["text"] for r in await conn.fetch("SELECT name, text FROM spec_instructions")}
        names = [r["name"] for r in await conn.fetch("SELECT name FROM specs ORDER BY name")]
        return {
            name: SpecState(name, versions.get(name, {}), labels.get(name, {}), instructions.get(name),
                            holds.get(name, {}))
            for name in names
        }  # fmt: skip

    @staticmethod
    def _parse(row: asyncpg.Record) -> SpecVersion | None:
        text: str = row["text"]
        if specfile.body_sha256(text) != row["sha256"]:
            log.error("not serving %s@%s: text does not match its sha256", row["name"], row["version"])
            return None
        # JSONB keeps keys in its own order; put the front-matter keys back in the file's order.
        stored: dict[str, Any] = dict(row["meta"] or {})
        meta = {k: stored.pop(k) for k in _META_ORDER if k in stored} | stored
        return SpecVersion(row["name"], row["version"], text, row["sha256"], meta)

    # -- writing -------------------------------------------------------------------------
    async def _refresh_after_write(self) -> None:
        """Show the writer its own change at once. The write is committed by now, so a failed
        reload must not fail it (a retried publish would add a second version): the watcher and
        every other replica pick the change up anyway."""
        try:
            await self.refresh()
        except Exception:
            log.exception("registry reload after a committed write failed; the watcher will retry")

    @contextlib.asynccontextmanager
    async def _write(self) -> AsyncIterator[asyncpg.Connection]:
        """A write transaction that first takes the registry's one write lock.

        The change triggers update `registry_state` anyway; taking its row lock first gives every
        writer the same lock order, so a publish and a label move cannot deadlock each other.
        """
        pool = await self._get_pool()
        try:
            async with pool.acquire() as conn, conn.transaction():
                await conn.execute("SELECT 1 FROM registry_state FOR UPDATE")
                yield conn
        except pg.CONNECTION_ERRORS as exc:  # not retried: a publish that did commit must not repeat
            raise ServiceUnavailable("the registry database is unavailable; retry") from exc

    async def publish(
        self,
        name: str,
        text: str,
        *,
        meta: dict[str, Any] | None = None,
        author: str = "human",
        parent: int | None = None,
        labels: Iterable[str] | None = (),
    ) -> SpecVersion:
        check_name(name)
        wanted = None if labels is None else list(labels)
        for label in wanted or ():
            check_label(label)
        text = text if text.endswith("\n") else text + "\n"
        sha = specfile.body_sha256(text)
        now = dt.datetime.now(dt.UTC)
        async with self._write() as conn:
            # Under the write lock a second publisher waits until this one commits, then (READ
            # COMMITTED: a fresh snapshot per statement) reads the number taken here: no collision.
            # The (name, version) primary key backs that up should anyone write around the lock.
            await conn.execute("INSERT INTO specs (name) VALUES ($1) ON CONFLICT (name) DO NOTHING", name)
            last = await conn.fetchval("SELECT max(version) FROM spec_versions WHERE name = $1", name)
            number = (last or 0) + 1
            if parent is None:
                parent = last
            existing = (
                []
                if wanted is not None
                else [r["label"] for r in await conn.fetch("SELECT label FROM spec_labels WHERE name = $1", name)]
            )  # under the write lock: two first publishes cannot both take `production`
            labels = person_default(wanted, existing, author)
            record = {
                "version": number,
                "parent": parent,
                "sha256": sha,
                "created_at": now.isoformat(timespec="seconds"),
                "author": author,
                **(meta or {}),
            }
            await conn.execute(
                "INSERT INTO spec_versions (name, version, text, sha256, meta, author, parent, created_at) "
                "VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                name, number, text, sha, record, author, parent, now,
            )  # fmt: skip
            # in the same transaction: never served unheld
            if author == "compiler" and (self.hold_compiled or held_for_a_person(meta)):
                await conn.execute(
                    "INSERT INTO spec_holds (name, version, status, label, requested_at) VALUES ($1, $2, $3, $4, $5)",
                    name, number, HELD, labels[0] if labels else None, now,
                )  # fmt: skip
            else:
                for label in labels:
                    await self._upsert_label(conn, name, label, number)
        await self._refresh_after_write()
        return SpecVersion(name, number, text, sha, record)

    async def set_label(self, name: str, label: str, version: int) -> None:
        check_name(name)
        check_label(label)
        async with self._write() as conn:
            exists = await conn.fetchval(
                "SELECT EXISTS (SELECT 1 FROM spec_versions WHERE name = $1 AND version = $2)", name, version
            )
            if not exists:
                raise NotFound(f"spec {name!r} has no version {version}", param="version")
            status = await conn.fetchval(
                "SELECT status FROM spec_holds WHERE name = $1 AND version = $2", name, version
            )
            if status is not None and status != APPROVED:
                raise Conflict(f"{name}@{version} is {status}: approve it first", param="version")
            await self._upsert_label(conn, name, label, version)
        await self._refresh_after_write()

    @staticmethod
    async def _upsert_label(conn: asyncpg.Connection, name: str, label: str, version: int) -> None:
        await conn.execute(
            "INSERT INTO spec_labels (name, label, version) VALUES ($1, $2, $3) "
            "ON CONFLICT (name, label) DO UPDATE SET version = EXCLUDED.version, updated_at = now()",
            name, label, version,
        )  # fmt: skip

    async def set_instruction(self, name: str, text: str) -> None:
        check_name(name)
        async with self._write() as conn:
            await conn.execute("INSERT INTO specs (name) VALUES ($1) ON CONFLICT (name) DO NOTHING", name)
            await conn.execute(
                "INSERT INTO spec_instructions (name, text) VALUES ($1, $2) "
                "ON CONFLICT (name) DO UPDATE SET text = EXCLUDED.text, updated_at = now()",
                name, text,
            )  # fmt: skip
        await self._refresh_after_write()

    async def decide_hold(self, name: str, version: int, approve: bool) -> Hold:
        check_name(name)
        async with self._write() as conn:
            row = await conn.fetchrow(
                "SELECT status, label, requested_at FROM spec_holds WHERE name = $1 AND version = $2 FOR UPDATE",
                name, version,
            )  # fmt: skip
            if row is None:
                exists = await conn.fetchval(
                    "SELECT EXISTS (SELECT 1 FROM spec_versions WHERE name = $1 AND version = $2)", name, version
                )
                if not exists:
                    raise NotFound(f"spec {name!r} has no version {version}", param="version",
                                   code="version_not_found")  # fmt: skip
            if row is None or row["status"] != HELD:
                status = row["status"] if row else "not held"
                raise Conflict(f"{name}@{version} is not awaiting approval ({status})", param="version")
            status = APPROVED if approve else REJECTED
            decided = await conn.fetchval(
                "UPDATE spec_holds SET status = $3, decided_at = now() WHERE name = $1 AND version = $2 "
                "RETURNING decided_at",
                name, version, status,
            )  # fmt: skip
            if approve and row["label"]:
                await self._upsert_label(conn, name, row["label"], version)
        await self._refresh_after_write()
        return Hold(status, row["label"], _iso(row["requested_at"]), _iso(decided))
