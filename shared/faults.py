"""Which failures are *transient* (a dependency is unavailable: wait and try again) and which are not.

Why it matters: a consumer that dead-letters a valid event because its own database was out of space
for four seconds loses an accepted contact for good (issue 13). So the bus retries a transient failure
for as long as it lasts, with jittered backoff, and only a failure that is not transient (the event
cannot be applied: validation, a deterministic bug, a constraint that keeps failing) counts towards
``max_attempts`` and the DLQ. The API layers use the same test to answer ``503`` + ``Retry-After``
instead of a bare ``500``.

Transient, explicitly:

* the bus cannot take or give events (:class:`shared.bus.base.BusUnavailable`);
* timeouts (``TimeoutError``, asyncio's included) and ``OSError`` (connection refused/reset, disk full,
  read-only file system, I/O errors);
* SQLite's ``OperationalError`` when the message says the database is busy/locked, full, read-only,
  cannot be opened or had an I/O error (not e.g. "no such table" or a syntax error, which repeat);
* PostgreSQL (asyncpg) errors whose SQLSTATE class is 08 connection exception, 53 insufficient
  resources (disk full, too many connections), 57 operator intervention (admin shutdown, cannot
  connect now), 58 system error, or 40001/40P01/55P03/55000 (serialization failure, deadlock, lock not
  available, database not accepting connections), and asyncpg's own connection errors;
* SQLAlchemy's ``DBAPIError`` with ``connection_invalidated`` set, or wrapping any of the above,
  and its pool ``TimeoutError``.

Everything else is permanent: retrying it a few times is enough to rule out a race.
"""

from __future__ import annotations

import sqlite3

from sqlalchemy import exc as sa_exc

# SQLite's OperationalError covers both outages and programming errors; the message tells them apart.
_SQLITE_TRANSIENT_MESSAGES = (
    "database is locked",
    "database table is locked",
    "database is busy",
    "database or disk is full",
    "disk i/o error",
    "unable to open database",
    "attempt to write a readonly database",
    "readonly database",
    "cannot commit transaction",
    "locking protocol",
)

# SQLSTATE classes / codes of PostgreSQL that mean "the server cannot do it now", not "never".
_PG_TRANSIENT_CLASSES = ("08", "53", "57", "58")
_PG_TRANSIENT_CODES = ("40001", "40P01", "55P03", "55000", "55006")


def is_transient(exc: BaseException) -> bool:
    """True when ``exc`` says a dependency is unavailable now (retry later), not that the work is wrong."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if _transient_here(current):
            return True
        # SQLAlchemy wraps the driver's error in ``.orig``; others chain with ``raise ... from``.
        orig = getattr(current, "orig", None)
        if isinstance(orig, BaseException) and id(orig) not in seen:
            current = orig
            continue
        current = current.__cause__  # explicit chaining only: a context is not a cause
    return False


def _transient_here(exc: BaseException) -> bool:
    from shared.bus.base import BusUnavailable  # the bus imports this module

    if isinstance(exc, BusUnavailable | TimeoutError | ConnectionError | sa_exc.TimeoutError):
        return True
    if isinstance(exc, sa_exc.DBAPIError) and exc.connection_invalidated:
        return True
    if isinstance(exc, sa_exc.DisconnectionError):
        return True
    if isinstance(exc, sqlite3.OperationalError):
        message = str(exc).lower()
        return any(m in message for m in _SQLITE_TRANSIENT_MESSAGES)
    if isinstance(exc, OSError):
        return True
    return _asyncpg_transient(exc)


def _asyncpg_transient(exc: BaseException) -> bool:
    try:
        import asyncpg
    except ImportError:  # pragma: no cover - asyncpg is a dependency
        return False
    if isinstance(exc, asyncpg.exceptions.PostgresConnectionError | asyncpg.exceptions.InterfaceError):
        # InterfaceError: "connection is closed", "another operation is in progress" after a drop.
        return True
    sqlstate = getattr(exc, "sqlstate", None)
    if isinstance(exc, asyncpg.exceptions.PostgresError) and isinstance(sqlstate, str):
        return sqlstate[:2] in _PG_TRANSIENT_CLASSES or sqlstate in _PG_TRANSIENT_CODES
    # SQLAlchemy's asyncpg adapter re-raises driver errors as its own classes with ``pgcode``.
    pgcode = getattr(exc, "pgcode", None) or getattr(exc, "sqlstate", None)
    if isinstance(pgcode, str) and len(pgcode) == 5:
        return pgcode[:2] in _PG_TRANSIENT_CLASSES or pgcode in _PG_TRANSIENT_CODES
    return False
