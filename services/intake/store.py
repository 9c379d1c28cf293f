"""The idempotency store: which requests intake already accepted, and what it answered.

One row per (tenant, scope, source, key): scope ``external`` is the sender's id (call/chat id),
``idempotency_key`` the ``Idempotency-Key`` header, ``abandon`` an abandon notice. A row is written only
after the bus acknowledged the event, so "recorded" implies "published"; the converse gap (published,
crash before the row) is closed downstream by the deterministic event id.

Lookups and inserts are *group-committed*: concurrent requests queue up and one round trip/transaction
serves them all; each caller still waits for its own row to be committed.

How durable a row must be follows from what losing it costs. The bus is the record of what was
accepted (its commit is a full fsync, and only it gates the ``202``). A lost idempotency row costs one
re-publication of the same event id on a retry, which consumers drop. So rows are committed without
waiting for the disk flush (SQLite WAL ``synchronous=NORMAL``, PostgreSQL ``synchronous_commit=off``):
they survive a crash of intake itself (``kill -9``), and only an OS crash or power loss within the
last moments can lose a few, harmlessly. That keeps one fsync per batch of requests, not two.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Generic, TypeVar

from sqlalchemy import (
    Column,
    DateTime,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    bindparam,
    create_engine,
    delete,
    event,
    select,
    text,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from shared import db

INTAKE_METADATA = MetaData()

requests_table = Table(
    "intake_requests",
    INTAKE_METADATA,
    # One fixed-size key over (tenant, scope, source, key): a single indexed IN (...) serves a whole batch
    # of lookups with one cached statement, on SQLite and PostgreSQL alike.
    Column("key_hash", String(64), primary_key=True),
    Column("tenant_id", String(100), nullable=False),
    Column("scope", String(32), nullable=False),
    Column("source", String(100), nullable=False),
    Column("key", String(300), nullable=False),
    Column("resource_id", String(100), nullable=False),  # contact id / callback request id
    Column("event_id", String(100), nullable=False),
    Column("site", String(64), nullable=False),
    Column("fingerprint", String(64), nullable=False),  # sha256 of the request body
    Column("status_code", Integer, nullable=False),
    Column("media_type", String(100), nullable=False),
    Column("response", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, index=True),
)
_NO_FLUSH_WAIT = text("SET LOCAL synchronous_commit TO OFF")
_FIND = select(requests_table).where(requests_table.c.key_hash.in_(bindparam("hashes", expanding=True)))


class Scope:
    EXTERNAL = "external"
    IDEMPOTENCY_KEY = "idempotency_key"
    ABANDON = "abandon"
    QUEUE_FALLBACK = "queue_fallback"
    CONTENT = "content"  # no id at all (web form): the normalised content of the day


@dataclass(frozen=True, slots=True)
class RequestKey:
    tenant_id: str
    scope: str
    source: str
    key: str

    @property
    def hash(self) -> str:
        raw = "\x1f".join((self.tenant_id, self.scope, self.source, self.key))
        return hashlib.sha256(raw.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class StoredRequest:
    key: RequestKey
    resource_id: str
    event_id: str
    site: str
    fingerprint: str
    status_code: int
    media_type: str
    response: str
    created_at: datetime


class StoreUnavailable(RuntimeError):
    """The idempotency store could not be read or written."""


T = TypeVar("T")
R = TypeVar("R")


class GroupCommit(Generic[T, R]):
    """Runs ``fn`` over everything submitted while the previous batch was in flight.

    Under no load a call costs one round trip; under load N concurrent calls cost ~one round trip.
    """

    def __init__(self, fn: Callable[[list[T]], Awaitable[list[R]]], *, max_batch: int = 500) -> None:
        self._fn = fn
        self._max = max_batch
        self._pending: list[tuple[T, asyncio.Future[R]]] = []
        self._running = False
        self._task: asyncio.Task[None] | None = None  # held: the loop keeps only weak references

    async def submit(self, item: T) -> R:
        fut: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._pending.append((item, fut))
        if not self._running:
            self._running = True
            self._task = asyncio.get_running_loop().create_task(self._drain())
        return await fut

    async def _drain(self) -> None:
        try:
            while self._pending:
                batch, self._pending = self._pending[: self._max], self._pending[self._max :]
                try:
                    results = await self._fn([item for item, _ in batch])
                except BaseException as exc:  # noqa: BLE001 - handed to every waiter
                    for _, fut in batch:
                        if not fut.done():
                            fut.set_exception(exc if isinstance(exc, Exception) else StoreUnavailable(str(exc)))
                    if not isinstance(exc, Exception):
                        raise
                    continue
                for (_, fut), result in zip(batch, results, strict=True):
                    if not fut.done():
                        fut.set_result(result)
        finally:
            self._running = False


def _utc(value: datetime) -> datetime:
    """SQLite hands back naive datetimes; everything we write is UTC."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class _SqliteThread:
    """SQLite: one thread owns a synchronous connection; a whole batch costs one hop to it.

    Through the async driver every DBAPI call (cursor, execute, fetch, commit) is its own thread hop
    and event-loop wake-up: for small statements that overhead, not SQLite, dominated the cost.
    """

    def __init__(self, url: str) -> None:
        path = url.split(":///", 1)[1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        self.engine = create_engine(
            f"sqlite+pysqlite:///{path}", connect_args={"timeout": 30, "check_same_thread": False}
        )
        self.dialect = "sqlite"
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="intake-store")

        @event.listens_for(self.engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")  # see the module docstring: the bus gates the 202
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

    async def run(self, fn: Callable[[Connection], R], *, write: bool) -> R:
        return await asyncio.get_running_loop().run_in_executor(self._executor, self._run, fn, write)

    def _run(self, fn: Callable[[Connection], R], write: bool) -> R:
        with self.engine.begin() if write else self.engine.connect() as conn:
            return fn(conn)

    async def close(self) -> None:
        await asyncio.get_running_loop().run_in_executor(self._executor, self.engine.dispose)
        self._executor.shutdown(wait=True)


class _AsyncDriver:
    """PostgreSQL (asyncpg): already asynchronous end to end; rows committed without a flush wait."""

    def __init__(self, url: str) -> None:
        self.engine = db.make_engine(url)
        self.dialect = self.engine.dialect.name

    async def run(self, fn: Callable[[Connection], R], *, write: bool) -> R:
        async with self.engine.begin() if write else self.engine.connect() as conn:
            if write and self.dialect == "postgresql":
                await conn.execute(_NO_FLUSH_WAIT)
            return await conn.run_sync(fn)

    async def close(self) -> None:
        await self.engine.dispose()


class IdempotencyStore:
    """Lookups and inserts of :data:`requests_table`, group-committed. Build with :func:`open_store`."""

    def __init__(self, driver: _SqliteThread | _AsyncDriver) -> None:
        self._driver = driver
        self._insert = postgresql.insert if driver.dialect == "postgresql" else sqlite.insert
        self._lookups: GroupCommit[tuple[RequestKey, ...], StoredRequest | None] = GroupCommit(self._lookup_batch)
        self._inserts: GroupCommit[list[StoredRequest], None] = GroupCommit(self._insert_batch)

    async def close(self) -> None:
        await self._driver.close()

    async def ping(self) -> bool:
        """For ``/readyz``: the store answers a query now."""
        try:
            await self._driver.run(lambda conn: conn.execute(select(1)).scalar(), write=False)
            return True
        except Exception:
            return False

    async def find(self, keys: Sequence[RequestKey]) -> StoredRequest | None:
        """The first stored request among ``keys`` (in the given order of preference), if any."""
        try:
            return await self._lookups.submit(tuple(keys))
        except StoreUnavailable:
            raise
        except Exception as exc:
            raise StoreUnavailable(f"idempotency lookup failed: {exc}") from exc

    async def record(self, rows: list[StoredRequest]) -> None:
        """Insert rows (first writer wins on a key); returns once they are committed."""
        if not rows:
            return
        try:
            await self._inserts.submit(rows)
        except StoreUnavailable:
            raise
        except Exception as exc:
            raise StoreUnavailable(f"idempotency record failed: {exc}") from exc

    async def purge(self, older_than: datetime) -> int:
        """Forget requests recorded before ``older_than`` (retries come within hours, not weeks)."""
        cutoff = older_than.astimezone(UTC)

        def delete_old(conn: Connection) -> int:
            return conn.execute(delete(requests_table).where(requests_table.c.created_at < cutoff)).rowcount or 0

        return await self._driver.run(delete_old, write=True)

    async def _lookup_batch(self, batch: list[tuple[RequestKey, ...]]) -> list[StoredRequest | None]:
        wanted = [[k.hash for k in keys] for keys in batch]
        hashes = sorted({h for keys in wanted for h in keys})

        def select_rows(conn: Connection) -> dict[str, StoredRequest]:
            found: dict[str, StoredRequest] = {}
            for i in range(0, len(hashes), 500):
                for row in conn.execute(_FIND, {"hashes": hashes[i : i + 500]}).mappings():
                    found[row["key_hash"]] = StoredRequest(
                        key=RequestKey(row["tenant_id"], row["scope"], row["source"], row["key"]),
                        resource_id=row["resource_id"],
                        event_id=row["event_id"],
                        site=row["site"],
                        fingerprint=row["fingerprint"],
                        status_code=row["status_code"],
                        media_type=row["media_type"],
                        response=row["response"],
                        created_at=_utc(row["created_at"]),
                    )
            return found

        found = await self._driver.run(select_rows, write=False)
        return [next((found[h] for h in keys if h in found), None) for keys in wanted]

    async def _insert_batch(self, batch: list[list[StoredRequest]]) -> list[None]:
        values = [
            {
                "key_hash": r.key.hash,
                "tenant_id": r.key.tenant_id,
                "scope": r.key.scope,
                "source": r.key.source,
                "key": r.key.key,
                "resource_id": r.resource_id,
                "event_id": r.event_id,
                "site": r.site,
                "fingerprint": r.fingerprint,
                "status_code": r.status_code,
                "media_type": r.media_type,
                "response": r.response,
                "created_at": r.created_at.astimezone(UTC),
            }
            for rows in batch
            for r in rows
        ]
        statement = self._insert(requests_table).on_conflict_do_nothing()

        def insert_rows(conn: Connection) -> None:  # one transaction, one commit for the whole batch
            conn.execute(statement, values)

        await self._driver.run(insert_rows, write=True)
        return [None] * len(batch)


def open_store(url: str) -> IdempotencyStore:
    """The store on a connection of its own: a writer thread for SQLite, the async driver otherwise."""
    return IdempotencyStore(_SqliteThread(url) if db.is_sqlite(url) else _AsyncDriver(url))
