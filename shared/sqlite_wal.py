"""Switch a SQLite connection to write-ahead logging, waiting out the other connections doing the same.

Changing a fresh database's journal mode takes an exclusive lock, and SQLite answers "database is locked"
at once when another connection holds one, without calling the busy handler: ``timeout=30`` on the
connection does not help. Services open several connections to one file as they start (intake's store, its
migrations and its readiness probe; routers sharing a data directory), so the first statement of a
starting service failed now and then (seen in CI: intake's readiness answered 503, its prune task died
on its first run; 46 of 300 trials of three connections racing on a fresh file, reproduced here). The
pragma is retried with a short, growing wait (tenacity) until the deadline, then the error is raised.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from tenacity import Retrying, retry_if_exception, stop_after_delay, wait_exponential


def _locked(exc: BaseException) -> bool:
    """SQLite's "database is locked" / "busy", from sqlite3 or an async adapter's own OperationalError."""
    locked = "database is locked" in str(exc) or "database is busy" in str(exc)
    return locked and (isinstance(exc, sqlite3.OperationalError) or type(exc).__name__ == "OperationalError")


def enable_wal(conn: Any, *, within: float = 30.0) -> None:
    """``PRAGMA journal_mode=WAL`` on a DB-API connection (or cursor), retried while the file is locked."""
    for attempt in Retrying(
        retry=retry_if_exception(_locked),
        stop=stop_after_delay(within),
        wait=wait_exponential(multiplier=0.005, max=0.2),
        reraise=True,
    ):
        with attempt:
            conn.execute("PRAGMA journal_mode=WAL")
