"""The transactional outbox: events a service emits are written in the same transaction as its state.

A relay task publishes outbox rows to the bus in order and deletes them once the bus acknowledged.
A crash between publish and delete publishes the row again after restart; the event id is unchanged,
so consumers drop the copy (see :mod:`shared.inbox`). Nothing is emitted that was not committed, and
nothing committed is never emitted.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import structlog
from sqlalchemy import BigInteger, Column, DateTime, Integer, LargeBinary, String, Table, bindparam, delete, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from shared.bus.base import BusUnavailable, EventBus
from shared.db import MESSAGING_METADATA
from shared.events import Envelope, EventData, make_event, utcnow
from shared.topics import route

log = structlog.get_logger(__name__)

outbox = Table(
    "outbox",
    MESSAGING_METADATA,
    Column("seq", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("topic", String(200), nullable=False),
    Column("key", String(300), nullable=True),
    Column("payload", LargeBinary, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)


def outbox_row(data: EventData, *, source: str, event_id: str | None = None) -> tuple[Envelope, dict[str, Any]]:
    """The envelope of ``data`` and its outbox row, to be inserted within the caller's transaction."""
    envelope = make_event(data, source=source, event_id=event_id)
    topic, key = route(data)
    return envelope, {"topic": topic, "key": key, "payload": envelope.to_bytes(), "created_at": utcnow()}


INSERT_OUTBOX = outbox.insert()  # built once: executed with a list of rows it is one executemany
# The relay's statements, built once too: a statement built per call is keyed for SQLAlchemy's compiled
# cache on every execution, and the relay runs after every commit that emitted.
OLDEST_FIRST = select(outbox).order_by(outbox.c.seq).limit(bindparam("batch", type_=Integer))
DELETE_PUBLISHED = delete(outbox).where(outbox.c.seq.in_(bindparam("seqs", expanding=True)))


async def stage(session: AsyncSession, data: EventData, *, source: str, event_id: str | None = None) -> Envelope:
    """Insert ``data`` into the outbox within the caller's transaction."""
    envelope, row = outbox_row(data, source=source, event_id=event_id)
    await session.execute(INSERT_OUTBOX, [row])
    return envelope


class OutboxRelay:
    """Publishes committed outbox rows to the bus, oldest first. Call :meth:`notify` after a commit."""

    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        bus: EventBus,
        *,
        idle_interval: float = 0.25,
        batch: int = 200,
        gather: float = 0.0,
    ) -> None:
        self._sessionmaker = sessionmaker
        self._bus = bus
        self._idle = idle_interval
        self._batch = batch
        # After a drain that published, the rows committed within this wait go out together: one
        # transaction and one bus round trip for them, not one per commit (0: at once).
        self._gather = gather
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    def notify(self) -> None:
        self._wake.set()

    async def start(self) -> None:
        self._stopping = False
        self._task = asyncio.create_task(self._run(), name="outbox-relay")

    async def stop(self) -> None:
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def drain(self) -> int:
        """Publish everything currently committed; return how many events went out."""
        sent = 0
        while True:
            n = await self._relay_batch()
            sent += n
            if n < self._batch:
                return sent

    async def _relay_batch(self) -> int:
        """One batch, oldest first, published with one wait (``publish_many``: one bus commit on the
        embedded bus, one round trip on Kafka, where a row at a time cost an acknowledgement each).
        Deleted: the rows up to the first one the bus refused. The rows after it are published again
        with it, in order (the same event ids, which consumers drop), so no key's events overtake."""
        async with self._sessionmaker() as session:
            rows = (await session.execute(OLDEST_FIRST, {"batch": self._batch})).all()
            if not rows:
                return 0
            results = await self._bus.publish_many([(row.topic, row.key, row.payload) for row in rows])
            refused = next((i for i, error in enumerate(results) if error is not None), len(rows))
            if refused:
                await session.execute(DELETE_PUBLISHED, {"seqs": [row.seq for row in rows[:refused]]})
                await session.commit()
            if refused < len(rows):
                error = results[refused]
                assert error is not None
                raise error
            return len(rows)

    async def _run(self) -> None:
        backoff = self._idle
        while not self._stopping:
            # Cleared before the drain, not after: a commit notifying while a drain runs must wake the
            # next one (cleared after, its rows waited for the idle poll).
            self._wake.clear()
            try:
                sent = await self.drain()
                backoff = self._idle
                if sent and self._gather and not self._stopping:
                    await asyncio.sleep(self._gather)
            except BusUnavailable as exc:
                log.warning("outbox.bus_unavailable", error=str(exc))
                backoff = min(backoff * 2, 5.0)
            except Exception:
                log.exception("outbox.relay_failed")
                backoff = min(backoff * 2, 5.0)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=backoff)
        with contextlib.suppress(Exception):
            await self.drain()
