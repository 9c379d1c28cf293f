"""The unit of work: every change to the callbacks is one database transaction, events included.

A :class:`UnitOfWork` is what a use case writes into: the commitment rows, the inbox entries of consumed
events and the emitted events (outbox) share its session, so they commit together or not at all. An
emitted event is counted in the metrics only once the transaction committed.

Several writers (the API, the consumer, the scheduler; several replicas) may work at once. PostgreSQL
keeps them apart with row locks (``FOR UPDATE`` / ``SKIP LOCKED`` in the use cases); on SQLite each unit
of work first takes the database write lock (:func:`write_lock`).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.callback.metrics import count_on_commit
from shared.events import EventData
from shared.outbox import stage


@dataclass
class UnitOfWork:
    """One transaction: its session, and the outbox the events go to."""

    session: AsyncSession
    source: str

    async def emit(self, data: EventData, event_id: str) -> None:
        """Stage an event in the outbox (deterministic id: re-emission after a crash is deduplicated);
        the relay publishes it after the commit."""
        await stage(self.session, data, source=self.source, event_id=event_id)
        name = data.event_type.removeprefix("switchboard.").rsplit(".", 1)[0]
        reason = str(getattr(data, "reason", "") or "")
        count_on_commit(self.session.sync_session, name, getattr(data, "site", ""), reason)


async def write_lock(s: AsyncSession) -> None:
    """On SQLite, take the database write lock before reading what the transaction will change.

    pysqlite only opens a transaction at the first write, so reads before it are not isolated: two
    writers (API and scheduler, or two processes) could both decide on the same stale row. A no-op
    UPDATE first makes the whole use case one serialised write transaction. PostgreSQL uses row
    locks (FOR UPDATE / SKIP LOCKED) instead and needs nothing here.
    """
    if s.get_bind().dialect.name == "sqlite":  # the engine the sessionmaker was made for
        await s.execute(text("UPDATE callback_dispatch_locks SET site = site WHERE 1 = 0"))


@contextlib.asynccontextmanager
async def unit_of_work(sessionmaker: async_sessionmaker[AsyncSession], source: str) -> AsyncIterator[UnitOfWork]:
    """A transaction holding the write lock; it commits when the block ends, or rolls back on an error."""
    async with sessionmaker() as s, s.begin():
        await write_lock(s)
        yield UnitOfWork(session=s, source=source)
