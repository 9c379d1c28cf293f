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
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.callback.metrics import count_on_commit
from shared.events import EventData
from shared.outbox import stage
from shared.sqlite_inline import InlineWrites


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


class InlineSession(AsyncSession):
    """An ``AsyncSession`` whose synchronous session is bound to the inline writer's connection (plain
    ``sqlite3``): its calls run that session at once. ``AsyncSession`` would pass them through a greenlet
    and then close the cursor the async way, which a ``sqlite3`` cursor does not have."""

    async def execute(self, *args: Any, **kwargs: Any) -> Any:
        return self.sync_session.execute(*args, **kwargs)

    async def scalar(self, *args: Any, **kwargs: Any) -> Any:
        return self.sync_session.scalar(*args, **kwargs)

    async def scalars(self, *args: Any, **kwargs: Any) -> Any:
        return self.sync_session.scalars(*args, **kwargs)

    async def get(self, *args: Any, **kwargs: Any) -> Any:
        return self.sync_session.get(*args, **kwargs)

    async def flush(self, *args: Any, **kwargs: Any) -> None:
        self.sync_session.flush(*args, **kwargs)


@contextlib.asynccontextmanager
async def inline_unit_of_work(writes: InlineWrites, source: str) -> AsyncIterator[UnitOfWork]:
    """The same transaction on SQLite with its statements on the event loop's thread (``sqlite_inline``):
    the write lock is taken first (``BEGIN IMMEDIATE``), the commit's fsync waits on the writer's
    thread, and everything between runs inline instead of one trip to aiosqlite's thread per statement,
    which cost more CPU than SQLite's own work (about 120 µs a trip on the dev machine).

    The use cases keep their ``AsyncSession`` (:class:`InlineSession`): its synchronous session is bound
    to the writer's connection, so each call runs at once, without suspending. It joins the connection's transaction
    and never commits it (SQLAlchemy's ``conservative_savepoint``): the writer does, then the session's
    own commit runs its after-commit hooks (the metrics of emitted events), only once the commit held.
    """
    session = InlineSession(expire_on_commit=False)
    try:
        async with writes.transaction() as held:
            session.sync_session.bind = held.connection
            try:
                yield UnitOfWork(session=session, source=source)
                await session.flush()
            except BaseException:
                await session.rollback()  # the connection's transaction, and the hooks of a rollback
                raise
        await session.commit()
    finally:
        await session.close()
