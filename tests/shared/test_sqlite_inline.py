"""The inline SQLite writer (shared/sqlite_inline.py): statements on the loop's thread, every wait off it.

What it must guarantee, each checked against a real SQLite file and a second connection that competes for
the write lock as another process would:
- only the lock and the commit leave the loop's thread; a transaction's statements do not;
- while another connection holds the write lock, the event loop keeps running, and after the busy timeout
  the transaction fails with SQLAlchemy's "database is locked" ``OperationalError`` (transient);
- a block that raises leaves nothing written and the write lock free, and the writer goes on;
- a transaction cancelled while it waits for the lock never leaves the lock held;
- what an ended block wrote is committed, for every other connection to read;
- a savepoint rolls back alone.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import event, text
from sqlalchemy.exc import IntegrityError, OperationalError

from shared import db, faults, sqlite_inline


@pytest.fixture
def database(tmp_path: Path) -> Path:
    path = tmp_path / "inline.sqlite3"
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE t (k TEXT PRIMARY KEY, v INTEGER)")
    conn.close()
    return path


def rows(path: Path) -> dict[str, int]:
    conn = sqlite3.connect(path)
    try:
        return dict(conn.execute("SELECT k, v FROM t").fetchall())
    finally:
        conn.close()


def writes_for(path: Path, busy_timeout: float = 5.0) -> sqlite_inline.InlineWrites:
    engine = db.make_engine(f"sqlite+aiosqlite:///{path}", sqlite_busy_timeout=busy_timeout)
    writes = sqlite_inline.for_engine(engine)
    assert writes is not None
    return writes


async def test_only_the_lock_and_the_commit_leave_the_loops_thread(database: Path) -> None:
    writes = writes_for(database)
    threads: dict[str, set[str]] = {"statements": set(), "commit": set()}

    @event.listens_for(writes.engine, "before_cursor_execute")
    def statement(_c, _cur, sql, _p, _ctx, _many):  # type: ignore[no-untyped-def]
        kind = "begin" if sql.startswith("BEGIN") else "statements"
        threads.setdefault(kind, set()).add(threading.current_thread().name)

    @event.listens_for(writes.engine, "commit")
    def commit(_conn):  # type: ignore[no-untyped-def]
        threads["commit"].add(threading.current_thread().name)

    try:
        async with writes.transaction() as session:
            await session.execute(text("INSERT INTO t VALUES ('a', 1)"))
            await session.execute(text("UPDATE t SET v = v + 1 WHERE k = 'a'"))
            assert (await session.execute(text("SELECT v FROM t WHERE k = 'a'"))).scalar_one() == 2
    finally:
        writes.dispose()
    loop_thread = threading.current_thread().name
    assert threads["statements"] == {loop_thread}
    assert len(threads["begin"]) == 1 and loop_thread not in threads["begin"]
    assert threads["commit"] == threads["begin"]
    assert rows(database) == {"a": 2}


async def test_the_loop_runs_while_another_writer_holds_the_lock_then_locked_is_transient(database: Path) -> None:
    writes = writes_for(database, busy_timeout=1.0)
    holder = sqlite3.connect(database, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    running = asyncio.create_task(ticker())
    started = time.monotonic()
    try:
        with pytest.raises(OperationalError) as locked:
            async with writes.transaction() as session:
                await session.execute(text("INSERT INTO t VALUES ('b', 1)"))
        waited = time.monotonic() - started
        running.cancel()
        holder.execute("ROLLBACK")
        async with writes.transaction() as session:  # the writer recovers once the lock is free
            await session.execute(text("INSERT INTO t VALUES ('b2', 1)"))
    finally:
        running.cancel()
        holder.close()
        writes.dispose()
    assert "database is locked" in str(locked.value)
    assert faults.is_transient(locked.value)
    assert 0.9 <= waited < 5
    assert ticks >= 30, f"the event loop ran {ticks} times in {waited:.2f} s: it waited for the lock"
    assert rows(database) == {"b2": 1}


async def test_a_block_that_raises_writes_nothing_and_frees_the_lock(database: Path) -> None:
    writes = writes_for(database)
    try:
        with pytest.raises(RuntimeError):
            async with writes.transaction() as session:
                await session.execute(text("INSERT INTO t VALUES ('c', 1)"))
                raise RuntimeError("use case failed")
        other = sqlite3.connect(database, timeout=0, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")  # at once: the failed transaction holds nothing
        other.execute("ROLLBACK")
        other.close()
        async with writes.transaction() as session:  # the same connection serves the next one
            await session.execute(text("INSERT INTO t VALUES ('c2', 1)"))
    finally:
        writes.dispose()
    assert rows(database) == {"c2": 1}


async def test_cancelled_while_waiting_for_the_lock_it_never_keeps_it(database: Path) -> None:
    writes = writes_for(database, busy_timeout=5.0)
    holder = sqlite3.connect(database, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")

    async def write() -> None:
        async with writes.transaction() as session:
            await session.execute(text("INSERT INTO t VALUES ('d', 1)"))

    task = asyncio.create_task(write())
    await asyncio.sleep(0.2)  # the worker is waiting for the lock
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    holder.execute("ROLLBACK")  # the worker now gets the lock: it must give it back unused
    holder.close()
    try:
        other = sqlite3.connect(database, timeout=3, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")  # within the timeout: the cancelled transaction let go
        other.execute("ROLLBACK")
        other.close()
        async with writes.transaction() as session:  # and the writer still works
            await session.execute(text("INSERT INTO t VALUES ('e', 1)"))
    finally:
        writes.dispose()
    assert rows(database) == {"e": 1}


async def test_a_savepoint_rolls_back_alone(database: Path) -> None:
    writes = writes_for(database)
    try:
        async with writes.transaction() as session:
            await session.execute(text("INSERT INTO t VALUES ('f', 1)"))
            with pytest.raises(IntegrityError):
                async with session.begin_nested():
                    await session.execute(text("INSERT INTO t VALUES ('g', 1)"))
                    await session.execute(text("INSERT INTO t VALUES ('f', 2)"))
            assert session.get_bind().dialect.name == "sqlite"
    finally:
        writes.dispose()
    assert rows(database) == {"f": 1}


def test_only_a_sqlite_file_gets_inline_writes(tmp_path: Path) -> None:
    assert sqlite_inline.for_engine(db.make_engine("sqlite+aiosqlite:///:memory:")) is None
    assert sqlite_inline.for_engine(db.make_engine("postgresql+asyncpg://u@127.0.0.1/x")) is None
    writes = sqlite_inline.for_engine(db.make_engine(f"sqlite+aiosqlite:///{tmp_path / 'r.db'}", sqlite_busy_timeout=2))
    assert writes is not None
    try:
        assert writes.engine.url.database == str(tmp_path / "r.db")
        with writes.engine.connect() as conn:  # the async engine's busy timeout, not the default
            assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar_one() == 2000
            assert conn.exec_driver_sql("PRAGMA synchronous").scalar_one() == 2  # FULL
    finally:
        writes.dispose()
