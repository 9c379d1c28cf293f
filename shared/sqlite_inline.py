"""A writer's SQLite transaction run on the event loop's own thread, with its waits kept off it.

Through the async stack (``AsyncSession`` on aiosqlite) a short statement costs about 210 µs of CPU here:
a greenlet per call, the hand-over to aiosqlite's thread and back through the event loop's self-pipe, and
SQLAlchemy around them. The same statement through SQLAlchemy's synchronous engine on the standard
``sqlite3`` driver costs about 25 µs (``bench/bench_lifecycle.py`` prints both side by side). A router
transaction is a handful of such statements, so for the router's single writer (and the callback
service's units of work, ``services/callback/unit_of_work.py``) this module runs them synchronously, on
the thread that already holds the use case:

- **The write lock is taken first** (``BEGIN IMMEDIATE``), the one step that can wait for another
  connection (the busy timeout, up to seconds). It is tried on the loop's thread without waiting (the
  connection's own busy timeout is 0); only if another connection holds the lock is it taken on a worker
  thread with the busy timeout, and the loop runs on meanwhile. The lock is free almost every time (the
  router is its database's one writer; the outbox relay's deletes are the other), so most transactions
  make one trip to the worker, for the commit, instead of two.
- **Then every statement runs inline.** A connection that holds SQLite's write lock in WAL mode never
  waits for a lock again before it commits: readers do not block it and it is the only writer. What is
  left is SQLite's own work, microseconds.
- **The commit runs on the worker thread** too: with ``synchronous=FULL`` it waits for an fsync.

One connection serves every transaction (the writer is one at a time); a failed commit, or a begin that
failed for another reason than a held lock, gives it up, and the next transaction opens another.

Errors are SQLAlchemy's own (``OperationalError`` for "database is locked", ``IntegrityError``, ...), as on
the async path, so callers classify them the same way. An in-memory database, which another connection
cannot see, and PostgreSQL keep the async path (:func:`for_engine` answers ``None``).
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from sqlalchemy import Connection, Engine, Executable, Result, create_engine, event
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.db import sqlite_busy_timeout as db_busy_timeout
from shared.db import sqlite_pragmas


class InlineSession:
    """What a unit of work asks of its session (``execute``, ``get_bind``, ``begin_nested``), answered by a
    synchronous connection that holds the write lock. ``execute`` is a coroutine only so that callers
    written for ``AsyncSession`` need not change: it never suspends."""

    __slots__ = ("connection",)

    def __init__(self, connection: Connection) -> None:
        self.connection = connection

    async def execute(self, statement: Executable, params: Any = None) -> Result[*tuple[Any, ...]]:
        return self.connection.execute(statement, params)

    def get_bind(self) -> Engine:
        return self.connection.engine

    @contextlib.asynccontextmanager
    async def begin_nested(self) -> AsyncIterator[None]:
        with self.connection.begin_nested():
            yield


class InlineWrites:
    """Transactions on one SQLite file, statements inline and the waits (lock, fsync) on one worker thread."""

    def __init__(self, database: str, *, busy_timeout: float) -> None:
        self.engine = create_engine(
            f"sqlite:///{database}",
            # Connections are opened, begun and committed on the worker thread and used on the loop's.
            connect_args={"timeout": busy_timeout, "check_same_thread": False},
        )
        self.busy_timeout = busy_timeout  # how long a transaction waits for another connection's lock
        busy_ms = int(busy_timeout * 1000)

        @event.listens_for(self.engine, "connect")
        def _connected(dbapi_conn: sqlite3.Connection, _record: Any) -> None:
            dbapi_conn.isolation_level = None  # the driver begins nothing by itself: _lock below does
            sqlite_pragmas(dbapi_conn, busy_ms)  # WAL may wait for another connection: with the timeout
            dbapi_conn.execute("PRAGMA busy_timeout=0")  # from now on a held lock answers at once

        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-writer")
        self._held: Connection | None = None  # the writer's connection, opened by the worker on first use

    def _connect(self) -> Connection:
        """On the worker: a new connection for the writer, kept between transactions (no pool check-out
        and reset-rollback each time, and SQLite's page cache stays warm)."""
        self._held = self.engine.connect()
        return self._held

    @staticmethod
    def _lock(conn: Connection) -> None:
        """``BEGIN IMMEDIATE``: the write lock now, or SQLAlchemy's "database is locked" error. SQLAlchemy's
        own begin (autobegin) emits nothing on this driver; the commit and rollback end both."""
        try:
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        except BaseException:
            conn.rollback()  # SQLAlchemy's autobegun transaction; SQLite has none open
            raise

    def _lock_waiting(self, conn: Connection) -> Connection:
        """On the worker: the write lock, waiting for it up to the busy timeout. Failing (after the
        timeout, or otherwise), the connection is given up."""
        raw = conn.connection.driver_connection
        assert raw is not None
        try:
            raw.execute(f"PRAGMA busy_timeout={int(self.busy_timeout * 1000)}")
            try:
                self._lock(conn)
            finally:
                raw.execute("PRAGMA busy_timeout=0")
        except BaseException:
            self._drop(conn)
            raise
        return conn

    def _lock_now(self, conn: Connection) -> bool:
        """On the loop's thread: the write lock if it is free (no wait: the busy timeout is 0); ``False``
        if another connection holds it. Any other failure gives the connection up and is raised."""
        try:
            self._lock(conn)
        except OperationalError as exc:
            if _is_busy(exc):
                return False
            self._drop(conn)
            raise
        except BaseException:
            self._drop(conn)
            raise
        return True

    def _commit(self, conn: Connection) -> None:
        """On the worker: commit (the fsync)."""
        self._or_drop(conn, conn.commit)

    def _discard(self, conn: Connection) -> None:
        """Roll back, on the loop's thread: nothing to wait for, the write lock is ours."""
        self._or_drop(conn, conn.rollback)

    def _or_drop(self, conn: Connection, step: Callable[[], object]) -> None:
        """``step`` (commit, rollback); if it fails, the connection is given up."""
        try:
            step()
        except BaseException:
            self._drop(conn)
            raise

    def _drop(self, conn: Connection) -> None:
        """Give the connection up: closed (rolling back what is open), a new one for the next transaction."""
        if self._held is conn:
            self._held = None
        conn.close()

    async def _begin(self) -> Connection:
        """The writer's connection, holding the write lock: taken on this thread when free, else waited
        for on the worker."""
        conn = self._held
        if conn is None or conn.closed or conn.invalidated:
            conn = await asyncio.wrap_future(self._worker.submit(self._connect))
        if self._lock_now(conn):
            return conn
        locking = self._worker.submit(self._lock_waiting, conn)
        try:
            return await asyncio.wrap_future(locking)
        except asyncio.CancelledError:
            # The worker may still take the lock on this connection: it is no longer the writer's (the
            # next transaction opens its own) and is closed once the worker is done with it, or the
            # write lock would stay held.
            if self._held is conn:
                self._held = None
            locking.add_done_callback(lambda _done: conn.close())
            raise

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[InlineSession]:
        """One transaction: committed when the block ends, rolled back if it raises."""
        conn = await self._begin()
        try:
            yield InlineSession(conn)
        except BaseException:
            self._discard(conn)
            raise
        # Cancelled while committing: the worker still commits (the next transaction queues behind it);
        # the caller learns of the cancellation and treats the outcome as unknown, as with any commit.
        await asyncio.wrap_future(self._worker.submit(self._commit, conn))

    def dispose(self) -> None:
        if self._held is not None:
            self._worker.submit(self._drop, self._held).result()
        self._worker.shutdown(wait=True)
        self.engine.dispose()


def _is_busy(exc: OperationalError) -> bool:
    """SQLite's SQLITE_BUSY (another connection holds the lock), extended codes included."""
    orig = exc.orig
    return isinstance(orig, sqlite3.Error) and orig.sqlite_errorcode & 0xFF == sqlite3.SQLITE_BUSY


def for_engine(engine: AsyncEngine) -> InlineWrites | None:
    """Inline writes on the SQLite file of ``engine`` (made by ``shared.db.make_engine``, whose busy timeout
    they share), or ``None`` where they do not apply: PostgreSQL, an in-memory or URI database."""
    url = engine.url
    database = str(url.database or "")
    if url.get_backend_name() != "sqlite" or database in ("", ":memory:") or database.startswith("file:") or url.query:
        return None
    return InlineWrites(database, busy_timeout=db_busy_timeout(engine))
