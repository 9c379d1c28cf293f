"""SQLite statements in one trip to aiosqlite's thread instead of four.

aiosqlite runs every call on the connection's own thread; SQLAlchemy's adapter makes four such calls per
statement (open a cursor, execute, fetch the rows, close the cursor), each a queue put, a thread wake-up,
a wake-up of the event loop through its self-pipe and a greenlet switch. For the router's short
statements that hand-over costs more than SQLite's own work. Here a statement is one function run on
that thread (open, execute, fetch, close), and its description, row count and rows come back together:
about 30 % less CPU per contact lifecycle in the router (``bench/bench_lifecycle.py``, 10.1 -> 7.1 ms
in groups of 20, 26 -> 18 ms alone).

Same driver, same thread, same SQLite connection, same errors: only the number of trips changes.
Transactions, commits, rollbacks and the pool are SQLAlchemy's aiosqlite dialect, untouched.

It uses ``aiosqlite.Connection._execute`` (queue a function on the connection's thread), which is
private: aiosqlite has no public call for "run this on your thread". SQLAlchemy's own dialect already
reaches into the same internals (``_tx``, ``_conn``) and our versions are pinned by the lock file;
:func:`available` checks for it and the stock adapter is used where it is missing, so an aiosqlite that
renames it is slower, not broken. ``tests/shared/test_sqlite_one_hop.py`` checks both give the same
results and errors.
"""

from __future__ import annotations

import collections
import sqlite3
from collections.abc import Sequence
from typing import Any

import aiosqlite
from sqlalchemy.dialects.sqlite.aiosqlite import (
    AsyncAdapt_aiosqlite_connection,
    AsyncAdapt_aiosqlite_cursor,
    AsyncAdapt_aiosqlite_dbapi,
)

Description = tuple[tuple[Any, ...], ...] | None


def available() -> bool:
    """Whether this aiosqlite has the call the one-trip cursor needs."""
    return callable(getattr(aiosqlite.Connection, "_execute", None))


def _run(
    conn: sqlite3.Connection, operation: str, parameters: Any, many: bool
) -> tuple[Description, list[Any] | None, int, int | None]:
    """On aiosqlite's thread: the whole statement, rows included, and what the cursor knew of it."""
    cursor = conn.cursor()
    try:
        if many:
            cursor.executemany(operation, parameters)
        elif parameters is None:
            cursor.execute(operation)
        else:
            cursor.execute(operation, parameters)
        description = cursor.description
        rows = cursor.fetchall() if description else None
        return description, rows, cursor.rowcount, cursor.lastrowid
    finally:
        cursor.close()


class OneHopCursor(AsyncAdapt_aiosqlite_cursor):
    """A cursor that needs no aiosqlite cursor: each statement is one trip, the results kept here."""

    __slots__ = ("_description", "_rowcount", "_lastrowid")

    def __init__(self, adapt_connection: AsyncAdapt_aiosqlite_connection) -> None:
        self._adapt_connection = adapt_connection
        self._connection = adapt_connection._connection
        self._cursor = None  # type: ignore[assignment]  # no driver cursor: nothing to open or close
        self._soft_closed_memoized = {}  # type: ignore[assignment]  # base class keeps an immutable dict
        self._rows = collections.deque()
        self._description: Description = None
        self._rowcount = -1
        self._lastrowid: int | None = None

    @property
    def description(self) -> Any:
        return self._description

    @property
    def rowcount(self) -> int:
        return self._rowcount

    @property
    def lastrowid(self) -> Any:
        return self._lastrowid

    async def _async_soft_close(self) -> None:
        return None  # nothing is open on the driver's side

    def close(self) -> None:
        self._rows.clear()

    async def _trip(self, operation: Any, parameters: Any, many: bool) -> None:
        connection: Any = self._connection  # aiosqlite.Connection; ``_execute`` is untyped
        async with self._adapt_connection._execute_mutex:
            description, rows, rowcount, lastrowid = await connection._execute(
                _run, connection._conn, operation, parameters, many
            )
        self._description, self._rowcount, self._lastrowid = description, rowcount, lastrowid
        self._rows = collections.deque(rows) if rows else collections.deque()

    async def _execute_async(self, operation: Any, parameters: Any) -> Any:
        await self._trip(operation, parameters, many=False)

    async def _executemany_async(self, operation: Any, seq_of_parameters: Sequence[Any]) -> Any:
        await self._trip(operation, seq_of_parameters, many=True)


class OneHopConnection(AsyncAdapt_aiosqlite_connection):
    __slots__ = ()
    _cursor_cls = OneHopCursor  # type: ignore[assignment]  # a subclass: SQLAlchemy types the slot invariantly


class OneHopDBAPI(AsyncAdapt_aiosqlite_dbapi):
    """The aiosqlite DBAPI module SQLAlchemy uses, handing out :class:`OneHopConnection`."""

    def connect(self, *arg: Any, **kw: Any) -> OneHopConnection:
        stock = super().connect(*arg, **kw)
        return OneHopConnection(self, stock._connection)


def dbapi() -> OneHopDBAPI | None:
    """The module to give ``create_async_engine(module=...)`` for an aiosqlite URL (None: the stock one)."""
    return OneHopDBAPI(aiosqlite, sqlite3) if available() else None
