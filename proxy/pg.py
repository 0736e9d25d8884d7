"""What the PostgreSQL ledger and registry share: connecting, and the one versioned schema.

Every replica (and every uvicorn worker) runs `migrate` on start-up. The migrations run inside
one transaction holding a transaction-scoped advisory lock, so when ten replicas start at once one
applies the missing steps and the others wait, then find them applied. DDL in PostgreSQL is
transactional: a replica killed mid-migration leaves nothing half-applied.

The schema lives in the first schema of the connection's `search_path`, so several deployments
(or test runs) can share one database: `with_search_path(dsn, "team_a")`.
"""

from __future__ import annotations

import asyncio
import logging
import urllib.parse
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import orjson

from .errors import ServiceUnavailable
from .extras import MissingExtra

try:
    import asyncpg
except ImportError as exc:  # depends on the install: one line naming the `postgres` extra
    raise MissingExtra("postgres", "SPECLEARN_DATABASE_URL (the PostgreSQL backend)", str(exc)) from None

log = logging.getLogger(__name__)
T = TypeVar("T")

#: Notified (payload: the schema name) whenever a registry table changes.
REGISTRY_CHANNEL = "speclearn_registry"

# (version, name, SQL). Append only: a released step is never edited, a fix is a new step.
MIGRATIONS: list[tuple[int, str, str]] = [
    (
        1,
        "ledger",
        # `json`, not `jsonb`: it keeps the client's body byte-for-byte (key order, \u0000 escapes,
        # which jsonb rejects), matching the SQLite ledger; `::jsonb` works in ad-hoc queries.
        """
        CREATE TABLE inferences (
            id TEXT PRIMARY KEY,
            created_at DOUBLE PRECISION NOT NULL,
            route TEXT NOT NULL,
            model TEXT,
            spec_name TEXT,
            spec_version INTEGER,
            spec_hash TEXT,
            request JSON NOT NULL,
            response_text TEXT,
            tool_calls JSON,
            usage JSON,
            latency_ms DOUBLE PRECISION,
            ttft_ms DOUBLE PRECISION,
            status TEXT NOT NULL,
            http_status INTEGER NOT NULL,
            error TEXT,
            metadata JSON
        );
        CREATE INDEX inferences_by_spec ON inferences (spec_name, created_at);
        CREATE TABLE feedback (
            id TEXT PRIMARY KEY,
            inference_id TEXT NOT NULL,
            rejected_id TEXT,
            kind TEXT NOT NULL,
            value DOUBLE PRECISION NOT NULL,
            comment TEXT,
            tags JSON,
            created_at DOUBLE PRECISION NOT NULL
        );
        CREATE INDEX feedback_by_inference ON feedback (inference_id);
        CREATE INDEX feedback_by_time ON feedback (created_at);
        """,
    ),
    (
        2,
        "registry",
        """
        CREATE TABLE specs (
            name TEXT PRIMARY KEY,
            created_at TIMESTAMPTZ NOT NULL DEFAULT now()
        );
        CREATE TABLE spec_versions (
            name TEXT NOT NULL REFERENCES specs (name),
            version INTEGER NOT NULL CHECK (version > 0),
            text TEXT NOT NULL,
            sha256 TEXT NOT NULL,
            meta JSONB NOT NULL DEFAULT '{}',
            author TEXT NOT NULL,
            parent INTEGER,
            created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
            PRIMARY KEY (name, version)
        );
        CREATE TABLE spec_labels (
            name TEXT NOT NULL,
            label TEXT NOT NULL,
            version INTEGER NOT NULL,
            updated_at TIMESTAMPTZ NOT NULL DEFAULT now(),
            PRIMARY KEY (name, label),
            FOREIGN KEY (name, version) REFERENCES spec_versions (name, version)
        );
        CREATE TABLE spec_instructions (
            name TEXT PRIMARY KEY REFERENCES specs (name),
            text TEXT NOT NULL,
            updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
        );
        -- One row whose counter moves on every registry change: replicas poll it cheaply.
        CREATE TABLE registry_state (
            id INTEGER PRIMARY KEY CHECK (id = 1),
            generation BIGINT NOT NULL
        );
        INSERT INTO registry_state VALUES (1, 0);

        -- Versions are immutable; the database enforces it, not only the code.
        CREATE FUNCTION spec_versions_immutable() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            RAISE EXCEPTION 'spec versions are immutable: publish a new version instead';
        END $$;
        CREATE TRIGGER spec_versions_no_update BEFORE UPDATE ON spec_versions
            FOR EACH ROW EXECUTE FUNCTION spec_versions_immutable();

        -- Any change, by speclearn or by hand in psql, bumps the generation and wakes listeners;
        -- the NOTIFY is delivered at commit, so a woken replica reads the committed state.
        CREATE FUNCTION registry_touch() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            EXECUTE format('UPDATE %I.registry_state SET generation = generation + 1', TG_TABLE_SCHEMA);
            PERFORM pg_notify('speclearn_registry', TG_TABLE_SCHEMA);
            RETURN NULL;
        END $$;
        CREATE TRIGGER specs_touch AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON specs
            FOR EACH STATEMENT EXECUTE FUNCTION registry_touch();
        CREATE TRIGGER spec_versions_touch AFTER INSERT OR DELETE OR TRUNCATE ON spec_versions
            FOR EACH STATEMENT EXECUTE FUNCTION registry_touch();
        CREATE TRIGGER spec_labels_touch AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON spec_labels
            FOR EACH STATEMENT EXECUTE FUNCTION registry_touch();
        CREATE TRIGGER spec_instructions_touch
            AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON spec_instructions
            FOR EACH STATEMENT EXECUTE FUNCTION registry_touch();
        """,
    ),
    (
        3,
        "experiments",
        # The canary's assignment on every inference row, and the auto-promote decision log.
        """
        ALTER TABLE inferences ADD COLUMN assignment_unit TEXT, ADD COLUMN arm TEXT;
        CREATE TABLE experiment_decisions (
            id BIGSERIAL PRIMARY KEY,
            created_at DOUBLE PRECISION NOT NULL,
            spec TEXT NOT NULL,
            candidate INTEGER NOT NULL,
            production INTEGER NOT NULL,
            decision TEXT NOT NULL,
            reason TEXT NOT NULL,
            p_value DOUBLE PRECISION,
            lift DOUBLE PRECISION,
            candidate_ups INTEGER NOT NULL,
            candidate_n INTEGER NOT NULL,
            production_ups INTEGER NOT NULL,
            production_n INTEGER NOT NULL,
            details JSON
        );
        CREATE INDEX experiment_decisions_by_spec ON experiment_decisions (spec, id);
        """,
    ),
    (
        4,
        "approval holds",
        # Approval mode: a compiled version waits here until a person approves or rejects it.
        # Beside the immutable version row, never in it; a change wakes every replica.
        """
        CREATE TABLE spec_holds (
            name TEXT NOT NULL,
            version INTEGER NOT NULL,
            status TEXT NOT NULL CHECK (status IN ('held', 'approved', 'rejected')),
            label TEXT,
            requested_at TIMESTAMPTZ NOT NULL DEFAULT now(),
            decided_at TIMESTAMPTZ,
            PRIMARY KEY (name, version),
            FOREIGN KEY (name, version) REFERENCES spec_versions (name, version)
        );
        CREATE TRIGGER spec_holds_touch AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON spec_holds
            FOR EACH STATEMENT EXECUTE FUNCTION registry_touch();
        """,
    ),
    (
        5,
        "feedback changes",
        # Who judged, which publishable key may change it, changes and retractions in place; and
        # the key client addresses are hashed with (proxy.identity), one per ledger.
        """
        ALTER TABLE feedback ADD COLUMN user_id TEXT, ADD COLUMN owner TEXT,
            ADD COLUMN updated_at DOUBLE PRECISION, ADD COLUMN retracted_at DOUBLE PRECISION;
        CREATE TABLE ledger_secrets (name TEXT PRIMARY KEY, value TEXT NOT NULL);
        """,
    ),
    (
        6,
        "data governance",
        # The retention purge takes the oldest rows, forget one user's, and both take the
        # judgments on them (docs/data.md).
        """
        CREATE INDEX inferences_by_time ON inferences (created_at);
        CREATE INDEX inferences_by_user ON inferences ((metadata->>'user'));
        CREATE INDEX feedback_by_rejected ON feedback (rejected_id);
        CREATE INDEX feedback_by_user ON feedback (user_id);
        """,
    ),
    (
        8,  # 7 is another change's
        "upstream per inference",
        # Several upstreams: which one answered (proxy/upstreams.py).
        """
        ALTER TABLE inferences ADD COLUMN upstream TEXT;
        """,
    ),
    (
        9,
        "rule conclusions",
        # What compile rounds concluded about each rule (compiler/memory.py): one JSON record each.
        """
        CREATE TABLE rule_conclusions (
            id BIGSERIAL PRIMARY KEY,
            spec TEXT NOT NULL,
            created_at DOUBLE PRECISION NOT NULL,
            record JSON NOT NULL
        );
        CREATE INDEX rule_conclusions_by_spec ON rule_conclusions (spec, id);
        """,
    ),
]


def normalize_dsn(dsn: str) -> str:
    """Accept the spellings people paste: `postgres://` and SQLAlchemy's `postgresql+asyncpg://`."""
    scheme, sep, rest = dsn.partition("://")
    if sep and (scheme == "postgres" or scheme.startswith(("postgresql+", "postgres+"))):
        return f"postgresql://{rest}"
    return dsn


def with_search_path(dsn: str, schema: str) -> str:
    """The DSN with `schema` first on the search path, in the libpq form psql understands too."""
    parts = urllib.parse.urlsplit(normalize_dsn(dsn))
    query = [(k, v) for k, v in urllib.parse.parse_qsl(parts.query) if k != "options"]
    query.append(("options", f"-csearch_path={schema}"))
    return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query)))


#: Seconds a new connection may take (asyncpg waits 60): a reachable server connects in
#: milliseconds, so a host that has not answered in 5 s is down or cut off, and a request waiting
#: on it (feedback) gets its 503 in seconds, not after a minute.
CONNECT_TIMEOUT = 5.0

#: The server went away (restart, failover, killed backend): worth one retry on a fresh connection.
#: asyncpg reports a connection killed while idle in the pool as an Interface/InternalClientError
#: on its next use, depending on when the news arrives.
CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
    asyncpg.CannotConnectNowError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
)


async def with_retry(
    pool: asyncpg.Pool,
    op: Callable[[asyncpg.Connection], Awaitable[T]],
    what: str,
    timeout: float | None = None,  # noqa: ASYNC109 - a per-attempt bound that terminates the connection
) -> T:
    """Run an idempotent `op` on a pooled connection, once more if that connection was lost.

    After a database restart every pooled connection is dead; without the retry the first
    request on each would fail. A connection that cannot be opened at all is not retried: the
    database is away, and the client gets a retryable 503 (`ServiceUnavailable`, code
    `storage_unavailable`) at once rather than a 500 or a second wait. `timeout` bounds the wait
    for a connection and then the op: a server that stopped answering (a partition, a frozen
    host) ends the connection instead of holding the caller until TCP gives up.
    """
    for attempt in (1, 2):
        connected = False
        try:
            async with pool.acquire(timeout=timeout) as conn:
                connected = True
                try:
                    async with asyncio.timeout(timeout):
                        return await op(conn)
                except CONNECTION_ERRORS:
                    conn.terminate()  # the pool opens a fresh one instead of reusing this
                    raise
        except CONNECTION_ERRORS as exc:
            if attempt == 2 or not connected:
                raise ServiceUnavailable(f"the database is unavailable ({what})", code="storage_unavailable") from exc
            log.warning("database connection lost during %s (%r); retrying once", what, exc)
    raise AssertionError("unreachable")


def _dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


async def _init_connection(conn: asyncpg.Connection) -> None:
    """json/jsonb columns in and out as Python values, through orjson."""
    for type_name in ("json", "jsonb"):
        await conn.set_type_codec(type_name, encoder=_dumps, decoder=orjson.loads, schema="pg_catalog")


async def connect(dsn: str) -> asyncpg.Connection:
    """One connection outside any pool (the registry's LISTEN connection)."""
    conn = await asyncpg.connect(normalize_dsn(dsn), timeout=CONNECT_TIMEOUT)
    await _init_connection(conn)
    return conn


async def create_pool(dsn: str, *, min_size: int = 0, max_size: int = 4) -> asyncpg.Pool:
    """A pool with the JSON codecs, after bringing the schema up to date.

    No floor by default: connections open on first use and stay while in use. asyncpg refills a
    floor from a background task that, through a database outage, logs a traceback at every try;
    the callers here retry (and say so once) themselves."""
    try:
        pool = await asyncpg.create_pool(
            normalize_dsn(dsn), min_size=min_size, max_size=max_size, init=_init_connection, timeout=CONNECT_TIMEOUT
        )
    except CONNECTION_ERRORS as exc:
        raise ServiceUnavailable(
            f"cannot reach the database at {describe(dsn)}: {exc}", code="storage_unavailable"
        ) from exc
    try:
        async with pool.acquire() as conn:
            await migrate(conn)
    except BaseException:
        await pool.close()
        raise
    return pool


def describe(dsn: str) -> str:
    """host:port/database of a DSN, for messages: never the password."""
    parts = urllib.parse.urlsplit(normalize_dsn(dsn))
    return f"{parts.hostname or 'localhost'}:{parts.port or 5432}{parts.path or ''}"


async def migrate(conn: asyncpg.Connection) -> list[int]:
    """Apply missing migrations under an advisory lock; returns the versions applied here."""
    applied_now: list[int] = []
    async with conn.transaction():
        schema = await conn.fetchval("SELECT current_schema()")
        if schema is None:
            raise RuntimeError("no schema on the search_path exists: create it or fix the DSN's search_path")
        # One lock per schema: deployments in other schemas do not wait on each other.
        await conn.execute("SELECT pg_advisory_xact_lock(hashtextextended('speclearn.migrate.' || $1, 0))", schema)
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS speclearn_migrations ("
            " version INTEGER PRIMARY KEY, name TEXT NOT NULL,"
            " applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
        )
        done = {r["version"] for r in await conn.fetch("SELECT version FROM speclearn_migrations")}
        newest = max(v for v, _, _ in MIGRATIONS)
        if done and max(done) > newest:
            log.warning("database schema is at version %d, newer than this code (%d)", max(done), newest)
        for version, name, sql in MIGRATIONS:
            if version in done:
                continue
            await conn.execute(sql)
            await conn.execute("INSERT INTO speclearn_migrations (version, name) VALUES ($1, $2)", version, name)
            applied_now.append(version)
    if applied_now:
        log.info("applied database migrations %s in schema %s", applied_now, schema)
    return applied_now
