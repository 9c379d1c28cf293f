"""The inline SQLite writer (shared/sqlite_inline.py): statements on the loop's thread, every wait off it.

What it must guarantee, each checked against a real SQLite file and a second connection that competes for
the write lock as another process would:
- only the commit, and the lock when another connection holds it, leave the loop's thread: a free lock is
  taken inline without waiting, and a transaction's statements run inline;
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


async def ticker(ticks: list[int]) -> None:
    """Counts the event loop's turns, 10 ms apart: few in a second means the loop was held."""
    while True:
        await asyncio.sleep(0.01)
        ticks[0] += 1


def thread_log(writes: sqlite_inline.InlineWrites) -> dict[str, list[str]]:
    """Which thread ran each ``BEGIN``, each other statement and each commit, in order."""
    threads: dict[str, list[str]] = {"begin": [], "statements": [], "commit": []}

    @event.listens_for(writes.engine, "before_cursor_execute")
    def statement(_c, _cur, sql, _p, _ctx, _many):  # type: ignore[no-untyped-def]
        threads["begin" if sql.startswith("BEGIN") else "statements"].append(threading.current_thread().name)

    @event.listens_for(writes.engine, "commit")
    def commit(_conn):  # type: ignore[no-untyped-def]
        threads["commit"].append(threading.current_thread().name)

    return threads


async def test_a_free_lock_is_taken_inline_and_only_the_commit_leaves_the_loops_thread(database: Path) -> None:
    writes = writes_for(database)
    threads = thread_log(writes)
    try:
        for value in (1, 2):
            async with writes.transaction() as session:
                await session.execute(text("INSERT OR REPLACE INTO t VALUES ('a', :v)"), {"v": value})
                await session.execute(text("UPDATE t SET v = v + 1 WHERE k = 'a'"))
                assert (await session.execute(text("SELECT v FROM t WHERE k = 'a'"))).scalar_one() == value + 1
    finally:
        writes.dispose()
    loop_thread = threading.current_thread().name
    assert threads["begin"] == [loop_thread, loop_thread]
    assert set(threads["statements"]) == {loop_thread}
    assert len(threads["commit"]) == 2 and loop_thread not in threads["commit"]
    assert rows(database) == {"a": 3}


async def test_a_held_lock_is_waited_for_on_the_worker_on_the_same_connection(database: Path) -> None:
    writes = writes_for(database)
    threads = thread_log(writes)
    holder = sqlite3.connect(database, isolation_level=None, check_same_thread=False)
    ticks = [0]
    try:
        async with writes.transaction() as session:  # opens the writer's connection
            await session.execute(text("INSERT INTO t VALUES ('w', 0)"))
        connection = writes._held
        holder.execute("BEGIN IMMEDIATE")
        threading.Timer(0.5, holder.execute, ("ROLLBACK",)).start()  # another process lets go in 0.5 s
        running = asyncio.create_task(ticker(ticks))
        started = time.monotonic()
        async with writes.transaction() as session:
            waited = time.monotonic() - started
            await session.execute(text("UPDATE t SET v = 1 WHERE k = 'w'"))
        running.cancel()
        assert writes._held is connection  # a held lock is no failure: the connection and its cache stay
    finally:
        holder.close()
        writes.dispose()
    loop_thread = threading.current_thread().name
    # Tried inline first (busy at once), then taken on the worker once the other connection let go.
    assert threads["begin"][1:] == [loop_thread, threads["commit"][0]]
    assert threads["commit"][0] != loop_thread
    assert set(threads["statements"]) == {loop_thread}
    assert 0.4 <= waited < 3
    assert ticks[0] >= 20, f"the event loop ran {ticks[0]} times in {waited:.2f} s: it waited for the lock"
    assert rows(database) == {"w": 1}


async def test_the_loop_runs_while_another_writer_holds_the_lock_then_locked_is_transient(database: Path) -> None:
    writes = writes_for(database, busy_timeout=1.0)
    holder = sqlite3.connect(database, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    ticks = [0]
    running = asyncio.create_task(ticker(ticks))
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
    assert ticks[0] >= 30, f"the event loop ran {ticks[0]} times in {waited:.2f} s: it waited for the lock"
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
        assert writes.busy_timeout == 2  # the async engine's busy timeout, not the default
        with writes.engine.connect() as conn:
            # The connection itself never waits: a held lock is waited for on the worker, with the timeout.
            assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar_one() == 0
            assert conn.exec_driver_sql("PRAGMA synchronous").scalar_one() == 2  # FULL
    finally:
        writes.dispose()
