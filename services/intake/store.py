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
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar

from sqlalchemy import Column, DateTime, Integer, MetaData, String, Table, Text, bindparam, event, select, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncEngine

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

    async def submit(self, item: T) -> R:
        fut: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._pending.append((item, fut))
        if not self._running:
            self._running = True
            asyncio.get_running_loop().create_task(self._drain())
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


def relaxed_flush(engine: AsyncEngine) -> AsyncEngine:
    """Commit without waiting for the disk flush on SQLite (see the module docstring for why)."""
    if engine.dialect.name == "sqlite":

        @event.listens_for(engine.sync_engine, "connect")
        def _normal_sync(dbapi_conn: Any, _record: Any) -> None:  # runs after shared.db's FULL pragma
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()

    return engine


class IdempotencyStore:
    """Lookups and inserts of :data:`requests_table`. Give it an engine of its own (see :func:`open_store`)."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._dialect = engine.dialect.name
        self._lookups: GroupCommit[tuple[RequestKey, ...], StoredRequest | None] = GroupCommit(self._lookup_batch)
        self._inserts: GroupCommit[list[StoredRequest], None] = GroupCommit(self._insert_batch)

    @property
    def engine(self) -> AsyncEngine:
        return self._engine

    async def close(self) -> None:
        await self._engine.dispose()

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

    async def _lookup_batch(self, batch: list[tuple[RequestKey, ...]]) -> list[StoredRequest | None]:
        hashes = sorted({k.hash for keys in batch for k in keys})
        found: dict[str, StoredRequest] = {}
        async with self._engine.connect() as conn:
            for i in range(0, len(hashes), 500):
                result = await conn.execute(_FIND, {"hashes": hashes[i : i + 500]})
                for row in result.mappings():
                    key = RequestKey(row["tenant_id"], row["scope"], row["source"], row["key"])
                    found[row["key_hash"]] = StoredRequest(
                        key=key,
                        resource_id=row["resource_id"],
                        event_id=row["event_id"],
                        site=row["site"],
                        fingerprint=row["fingerprint"],
                        status_code=row["status_code"],
                        media_type=row["media_type"],
                        response=row["response"],
                        created_at=_utc(row["created_at"]),
                    )
        return [next((found[k.hash] for k in keys if k.hash in found), None) for keys in batch]

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
        insert = postgresql.insert if self._dialect == "postgresql" else sqlite.insert
        async with self._engine.begin() as conn:  # one transaction, one commit for the whole batch
            if self._dialect == "postgresql":
                await conn.execute(_NO_FLUSH_WAIT)
            await conn.execute(insert(requests_table).on_conflict_do_nothing(), values)
        return [None] * len(batch)


def open_store(url: str) -> IdempotencyStore:
    """A store on its own engine (pool and flush policy separate from the service's other tables)."""
    return IdempotencyStore(relaxed_flush(db.make_engine(url)))
