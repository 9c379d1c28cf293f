"""Which failures the consumers wait out (transient) and which may reach the DLQ (permanent): explicit."""

from __future__ import annotations

import errno
import sqlite3
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError, ProgrammingError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from shared import db
from shared.bus.base import BusUnavailable
from shared.faults import is_transient


@pytest.mark.parametrize(
    "exc",
    [
        BusUnavailable("kafka did not acknowledge"),
        TimeoutError(),
        TimeoutError(),
        ConnectionRefusedError(errno.ECONNREFUSED, "refused"),
        OSError(errno.ENOSPC, "No space left on device"),
        OSError(errno.EROFS, "Read-only file system"),
        sqlite3.OperationalError("database is locked"),
        sqlite3.OperationalError("database or disk is full"),
        sqlite3.OperationalError("disk I/O error"),
        sqlite3.OperationalError("attempt to write a readonly database"),
        sqlite3.OperationalError("unable to open database file"),
        OperationalError("INSERT ...", {}, sqlite3.OperationalError("database or disk is full")),
        asyncpg.exceptions.CannotConnectNowError("the database system is starting up"),
        asyncpg.exceptions.TooManyConnectionsError("too many clients"),
        asyncpg.exceptions.AdminShutdownError("terminating connection due to administrator command"),
        asyncpg.exceptions.DiskFullError("could not extend file"),
        asyncpg.exceptions.ObjectNotInPrerequisiteStateError('database "x" is not currently accepting connections'),
        asyncpg.exceptions.SerializationError("could not serialize access"),
        asyncpg.exceptions.DeadlockDetectedError("deadlock detected"),
        asyncpg.exceptions.ConnectionDoesNotExistError("connection was closed in the middle of operation"),
        asyncpg.exceptions.InterfaceError("connection is closed"),
        DBAPIError("SELECT 1", {}, Exception("server closed the connection"), connection_invalidated=True),
        PoolTimeout("QueuePool limit reached"),
    ],
    ids=repr,
)
def test_outages_are_transient(exc: BaseException) -> None:
    assert is_transient(exc)


@pytest.mark.parametrize(
    "exc",
    [
        ValueError("bad payload"),
        KeyError("missing"),
        RuntimeError("a bug"),
        sqlite3.OperationalError("no such table: contacts"),
        sqlite3.OperationalError('near "SELEC": syntax error'),
        sqlite3.IntegrityError("UNIQUE constraint failed: contacts.contact_id"),
        IntegrityError("INSERT ...", {}, sqlite3.IntegrityError("UNIQUE constraint failed")),
        ProgrammingError("SELECT ...", {}, Exception("column does not exist")),
        asyncpg.exceptions.UniqueViolationError("duplicate key value"),
        asyncpg.exceptions.UndefinedTableError('relation "x" does not exist'),
        asyncpg.exceptions.DataError("invalid input"),
    ],
    ids=repr,
)
def test_everything_else_is_permanent(exc: BaseException) -> None:
    assert not is_transient(exc)


def test_the_cause_chain_is_followed_but_not_an_unrelated_context() -> None:
    try:
        try:
            raise ConnectionResetError("peer reset")
        except ConnectionResetError as inner:
            raise RuntimeError("while saving") from inner
    except RuntimeError as outer:
        assert is_transient(outer)
    try:
        try:
            raise ConnectionResetError("peer reset")
        except ConnectionResetError:
            raise ValueError("a bug in the fallback path")  # noqa: B904 - context, not cause
    except ValueError as outer:
        assert not is_transient(outer)


async def test_a_real_locked_sqlite_database_is_transient(tmp_path: Path) -> None:
    """What SQLAlchemy + aiosqlite really raise when another connection holds the write lock."""
    path = tmp_path / "x.sqlite3"
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("CREATE TABLE t (x INTEGER)")
    holder.execute("BEGIN EXCLUSIVE")
    engine = db.make_engine(f"sqlite+aiosqlite:///{path}", connect_args={"timeout": 0.1})
    try:
        with pytest.raises(Exception) as caught:
            async with engine.begin() as conn:
                await conn.execute(text("PRAGMA busy_timeout=100"))
                await conn.execute(text("INSERT INTO t VALUES (1)"))
        assert is_transient(caught.value), repr(caught.value)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
        await engine.dispose()


async def test_a_refused_postgres_connection_is_transient() -> None:
    """Nothing listens on this port: what the pool raises when PostgreSQL is down."""
    engine = db.make_engine("postgresql+asyncpg://postgres@127.0.0.1:1/none")
    try:
        with pytest.raises(Exception) as caught:
            async with engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
        assert is_transient(caught.value), repr(caught.value)
    finally:
        await engine.dispose()
