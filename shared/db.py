"""Database plumbing shared by the stateful services: engines, sessions, Alembic migrations.

The same code runs on SQLite (embedded default, via aiosqlite) and PostgreSQL (production, via asyncpg).
Schema changes go through each service's Alembic migrations, which run at start-up, or beforehand with
``switchboard migrate`` where ``SWITCHBOARD_MIGRATE_ON_START=false`` (the service then waits for the schema).
"""

from __future__ import annotations

import asyncio
import time
import weakref
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any, Protocol, TypeVarTuple, cast, overload

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, CursorResult, Engine, Executable, Result, Table, event, exc, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.sql.selectable import TypedReturnsRows

from shared import sqlite_one_hop
from shared.files import private_file
from shared.sqlite_wal import enable_wal

_Row = TypeVarTuple("_Row")  # a statement's column types (SQLAlchemy 2.1 types rows with a TypeVarTuple)


class SqlSession(Protocol):
    """What a unit of work uses of its session: an ``AsyncSession``, or the inline SQLite writer's
    (``sqlite_inline.InlineSession``)."""

    @overload
    async def execute(self, statement: TypedReturnsRows[*_Row], params: Any = None) -> Result[*_Row]: ...

    @overload
    async def execute(self, statement: Executable, params: Any = None) -> Result[*tuple[Any, ...]]: ...

    def get_bind(self) -> Engine | Connection: ...

    def begin_nested(self) -> AbstractAsyncContextManager[Any]: ...


def is_sqlite(url: str) -> bool:
    return url.startswith("sqlite")


def dialect_insert(table: Table, dialect: str) -> postgresql.Insert | sqlite.Insert:
    """``INSERT`` in the dialect's own form, the one with ``on_conflict_do_nothing``/``_do_update`` (both
    the project's databases speak it; SQLite since 3.24)."""
    return postgresql.insert(table) if dialect == "postgresql" else sqlite.insert(table)


def rowcount(result: Result[Any]) -> int:
    """Rows an INSERT/UPDATE/DELETE matched. ``AsyncSession.execute`` is annotated as returning ``Result``;
    for DML it returns a ``CursorResult``, the class that has ``rowcount`` (SQLAlchemy's advice: a cast)."""
    return cast("CursorResult[Any]", result).rowcount


# The busy timeout each SQLite engine was made with, for connections opened beside it (sqlite_inline.py).
_BUSY_TIMEOUTS: weakref.WeakKeyDictionary[AsyncEngine, float] = weakref.WeakKeyDictionary()
DEFAULT_SQLITE_BUSY_TIMEOUT = 30.0


def sqlite_busy_timeout(engine: AsyncEngine) -> float:
    """The busy timeout ``engine`` was made with (the default for an engine made elsewhere)."""
    return _BUSY_TIMEOUTS.get(engine, DEFAULT_SQLITE_BUSY_TIMEOUT)


# A pooled PostgreSQL connection idle this long is pinged before use (``ping_after_idle``).
PING_AFTER_IDLE_SECONDS = 1.0


def ping_after_idle(engine: AsyncEngine, idle_seconds: float = PING_AFTER_IDLE_SECONDS) -> None:
    """Ping a pooled connection before use only if it sat in the pool for ``idle_seconds`` or more.

    SQLAlchemy's ``pool_pre_ping`` pings on every checkout; on asyncpg that is three round trips (BEGIN,
    a ping, ROLLBACK) before each transaction, and the router's writer runs its transactions one after
    another (on Kafka + PostgreSQL at 50/s, a tenth of its time per change went with them). Under load a
    connection goes back to work within milliseconds; one that a database restart broke sat in the pool
    at least as long as the restart took, so it is still found and replaced before use. A connection
    killed on a live server and reused within the second fails its transaction instead: a transient
    error (consumers retry, the API answers 503), and the whole pool is renewed at once.
    """
    pool = engine.sync_engine.pool
    dialect = engine.sync_engine.dialect

    @event.listens_for(pool, "checkin")
    def _idle_from(_dbapi_connection: Any, record: Any) -> None:
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(pool, "checkout")
    def _ping_if_idle(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        idle_since = record.info.get("idle_since")
        if idle_since is None or time.monotonic() - idle_since < idle_seconds:
            return  # new, or back from work a moment ago
        try:
            dialect.do_ping(dbapi_connection)
        except Exception as error:
            # As pool_pre_ping does: this connection and every one pooled before it are replaced.
            raise exc.InvalidatePoolError(f"a connection idle for {idle_seconds} s or more failed its ping") from error


def make_engine(
    url: str,
    *,
    sqlite_busy_timeout: float = DEFAULT_SQLITE_BUSY_TIMEOUT,
    ping_idle_seconds: float = PING_AFTER_IDLE_SECONDS,
    **kwargs: Any,
) -> AsyncEngine:
    """An async engine; SQLite gets WAL, a busy timeout and foreign keys so several processes can share it.

    ``sqlite_busy_timeout``: how long a statement waits for another connection's write lock before it
    fails with "database is locked" (a transient error: consumers retry, the API answers 503).
    ``ping_idle_seconds``: PostgreSQL connections idle this long in the pool are pinged before use
    (``ping_after_idle``).
    """
    busy_ms = int(sqlite_busy_timeout * 1000)
    if is_sqlite(url):
        path = url.split(":///", 1)[-1]
        if path and path != ":memory:" and not path.startswith("file:"):
            private_file(path)  # owner-only before SQLite opens it: it holds customers' data
        kwargs.setdefault("connect_args", {"timeout": sqlite_busy_timeout})
        if url.startswith("sqlite+aiosqlite") and (one_hop := sqlite_one_hop.dbapi()) is not None:
            kwargs.setdefault("module", one_hop)  # one trip to aiosqlite's thread per statement
    engine = create_async_engine(url, **kwargs)
    if not is_sqlite(url) and not kwargs.get("pool_pre_ping"):
        ping_after_idle(engine, ping_idle_seconds)
    if is_sqlite(url):
        _BUSY_TIMEOUTS[engine] = sqlite_busy_timeout

        @event.listens_for(engine.sync_engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            sqlite_pragmas(dbapi_conn, busy_ms)

    return engine


def sqlite_pragmas(dbapi_conn: Any, busy_ms: int) -> None:
    """What every SQLite connection of a service gets on opening: WAL, ``synchronous=FULL`` (a commit
    survives a power loss), the busy timeout and foreign keys. Shared by the async engines and the
    router's inline writer (``sqlite_inline.py``), so the two cannot drift apart."""
    cur = dbapi_conn.cursor()
    enable_wal(cur)
    cur.execute("PRAGMA synchronous=FULL")
    cur.execute(f"PRAGMA busy_timeout={busy_ms}")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


def make_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)


async def ping(engine: AsyncEngine, *, lock_wait: float = 0.5) -> bool:
    """Whether the database can take this service's writes now.

    PostgreSQL: a connection and ``SELECT 1`` (a refused or dropped server fails it). SQLite: ``SELECT 1``
    never touches the file, so it passes while another process holds the write lock for good; the probe
    takes the write lock itself (``BEGIN IMMEDIATE``, then ``ROLLBACK``) on a connection of its own,
    waiting at most ``lock_wait`` seconds: a stateful service that cannot write is not ready.
    """
    try:
        if engine.url.get_backend_name() == "sqlite" and engine.url.database not in (None, "", ":memory:"):
            return await asyncio.to_thread(_sqlite_writable, str(engine.url.database), lock_wait)
        async with engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
        return True
    except Exception:
        return False


def _sqlite_writable(path: str, lock_wait: float) -> bool:
    import sqlite3

    if not Path(path).exists():  # opening it would create an empty database, not probe the real one
        return False
    conn = sqlite3.connect(path, timeout=lock_wait, isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")  # "database is locked" after lock_wait if another writer holds it
        conn.execute("ROLLBACK")
        return True
    except sqlite3.Error:
        return False
    finally:
        conn.close()


def alembic_config(script_location: Path, url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(script_location))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


async def migrate(script_location: Path, url: str) -> None:
    """Bring the database to the newest schema (``alembic upgrade head``).

    Alembic's command API is synchronous and its env.py runs its own event loop, so it runs in a thread.
    """
    cfg = alembic_config(script_location, url)
    await asyncio.to_thread(command.upgrade, cfg, "head")


def head_revisions(script_location: Path) -> set[str]:
    """The newest revision(s) of a service's migration scripts."""
    from alembic.script import ScriptDirectory

    return set(ScriptDirectory.from_config(alembic_config(script_location, "sqlite://")).get_heads())


async def current_revisions(url: str) -> set[str]:
    """The revision(s) the database is at; empty for a database never migrated (or an absent SQLite file,
    which is not created)."""
    from alembic.runtime.migration import MigrationContext
    from sqlalchemy.pool import NullPool

    if is_sqlite(url):
        path = url.split(":///", 1)[-1]
        if path and path != ":memory:" and not path.startswith("file:") and not Path(path).exists():
            return set()
    engine = create_async_engine(url, poolclass=NullPool)
    try:
        async with engine.connect() as conn:
            heads = await conn.run_sync(lambda sync: MigrationContext.configure(sync).get_current_heads())
        return set(heads)
    finally:
        await engine.dispose()


class SchemaNotMigrated(RuntimeError):
    """The database is not at the newest schema and this process was told not to migrate it."""


async def wait_until_migrated(script_location: Path, url: str, *, timeout: float, interval: float = 2.0) -> None:
    """For services that do not migrate at start-up (``SWITCHBOARD_MIGRATE_ON_START=false``): wait until
    ``switchboard migrate`` (a Kubernetes Job, a compose one-shot) has brought the database to head.

    Raises :class:`SchemaNotMigrated` after ``timeout`` seconds: a service must not run on an older schema.
    A database that cannot be reached counts as not migrated yet (it may still be starting)."""
    heads = head_revisions(script_location)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    current: set[str] | str = set()
    while True:
        try:
            current = await current_revisions(url)
        except Exception as exc:  # unreachable or still starting: try again until the deadline
            current = f"unreachable ({type(exc).__name__})"
        if current == heads:
            return
        if loop.time() >= deadline:
            raise SchemaNotMigrated(
                f"database schema at {sorted(current) if isinstance(current, set) else current}, not at "
                f"{sorted(heads)} ({script_location.parent.name}); run `switchboard migrate`, or set "
                "SWITCHBOARD_MIGRATE_ON_START=true"
            )
        await asyncio.sleep(interval)


# Tables every stateful service has (inbox for dedupe, outbox for publishing). Each service's Alembic
# migrations create them alongside its own tables: pass ``[service_metadata, MESSAGING_METADATA]``.
from sqlalchemy import MetaData  # noqa: E402

MESSAGING_METADATA = MetaData()
