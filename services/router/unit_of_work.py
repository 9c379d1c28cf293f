"""The unit of work: every change to the routing state is one fenced transaction, made by one writer.

A :class:`UnitOfWork` is what a use case writes into: state rows, timeline entries, counters and the
emitted events (outbox) share its session, so they commit together or not at all. Stream messages wait
in it until the commit, so an agent never hears of a change that was rolled back.

The :class:`Writer` opens them: under its lock (one writer), renewing the ownership lease inside each
transaction (fencing: a router that lost the lease cannot commit), and rebuilding the engine from the
database when a transaction fails after the engine already changed, so the two never drift apart.
Group commit (``group_commit.py``) runs many operations in one of these.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import structlog
from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.router.closing_statement import close
from services.router.errors import RouterError
from services.router.ownership import Ownership, OwnershipLost
from services.router.rows import period_of
from services.router.store import counters, offers, timeline
from services.router.stream_events import AGENT_STREAM_EVENTS, checked
from shared.db import SqlSession, dialect_insert
from shared.events import Envelope, EventData
from shared.outbox import INSERT_OUTBOX, outbox_row
from shared.sqlite_inline import InlineWrites

log = structlog.get_logger(__name__)

Clock = Callable[[], float]
Publish = Callable[[str, str, BaseModel], None]


def _add_to_counters(dialect: str) -> Any:
    """``INSERT .. ON CONFLICT DO UPDATE value = value + excluded``: one statement per counter, however
    many changes of a group added to it (both dialects speak it; SQLite since 3.24)."""
    insert = dialect_insert(counters, dialect)
    return insert.on_conflict_do_update(
        index_elements=[counters.c.period, counters.c.name], set_={"value": counters.c.value + insert.excluded.value}
    )


# Built once: the statements every transaction writes (a construct reused keeps its cache key, so it is
# neither rebuilt nor re-keyed per execution), each executed with a list of rows (one executemany).
INSERT_NOTES = timeline.insert()
INSERT_OFFER = offers.insert()
ADD_TO_COUNTERS = {dialect: _add_to_counters(dialect) for dialect in ("sqlite", "postgresql")}


@dataclass
class UnitOfWork:
    """One transaction: the session, plus what to do once (and only if) it committed.

    Timeline entries, counters and outbox rows are appended here and written by :meth:`flush` at the end
    of the transaction, one statement per table for the whole group: they are written, never read back,
    within a transaction, and a group of a hundred changes costs three statements instead of hundreds.
    """

    session: SqlSession
    source: str
    now: float
    pushes: list[tuple[str, str, BaseModel]] = field(default_factory=list)
    emitted: int = 0
    notes: list[dict[str, Any]] = field(default_factory=list)
    staged: list[dict[str, Any]] = field(default_factory=list)
    bumps: dict[str, float] = field(default_factory=dict)
    # The transaction ends with the closing statement (PostgreSQL, set by the Writer): the agents' settled
    # work waits in ``work``, ``new_<column>`` per row (settle_work.py), to be written by it.
    closes_in_one: bool = False
    work: list[dict[str, Any]] = field(default_factory=list)
    offers: list[dict[str, Any]] = field(default_factory=list)  # new offer rows, for the closing statement
    goodwill_synced: bool = False  # the ledger was read back from every router's grants (goodwill.py)

    @property
    def dialect(self) -> str:
        """The database's dialect name, for the statements built per dialect (``ON CONFLICT``)."""
        return self.session.get_bind().dialect.name

    async def emit(self, data: EventData, event_id: str | None = None) -> Envelope:
        """Stage an event in the outbox (written at :meth:`flush`); the relay publishes it after the commit."""
        envelope, row = outbox_row(data, source=self.source, event_id=event_id)
        self.staged.append(row)
        self.emitted += 1
        return envelope

    async def note(self, contact_id: str, kind: str, agent_id: str | None = None, **detail: Any) -> None:
        """Add an entry to the contact's timeline (the audit trail), in order."""
        self.notes.append(
            {"contact_id": contact_id, "at": self.now, "kind": kind, "agent_id": agent_id, "detail": detail}
        )

    async def bump(self, name: str, amount: float) -> None:
        """Add to today's counter ``name`` (``/v1/stats`` ``today``)."""
        self.bumps[name] = self.bumps.get(name, 0.0) + amount

    async def insert_offers(self, rows: list[dict[str, Any]]) -> None:
        """New offer rows: inserted now in one statement, or on PostgreSQL by the closing statement.
        Offers are made last in a transaction (``offers.make_offers``) and nothing after reads them."""
        if self.closes_in_one:
            self.offers.extend(rows)
        elif rows:
            await self.session.execute(INSERT_OFFER, rows)

    def push(self, agent_id: str, event: str, data: BaseModel) -> None:
        """A message for the agent's stream, sent after the commit: ``data`` is the model of ``event``
        (``stream_events.py``), or this raises here, where the message is made."""
        self.pushes.append((agent_id, event, checked(AGENT_STREAM_EVENTS, event, data)))

    async def flush(self) -> None:
        """Write the buffered timeline entries, counters and outbox rows (last thing before the commit)."""
        if self.notes:
            await self.session.execute(INSERT_NOTES, self.notes)
            self.notes = []
        if self.bumps:
            period = period_of(self.now)
            rows = [{"period": period, "name": name, "value": value} for name, value in self.bumps.items()]
            await self.session.execute(ADD_TO_COUNTERS[self.dialect], rows)
            self.bumps = {}
        if self.staged:
            await self.session.execute(INSERT_OUTBOX, self.staged)
            self.staged = []


class Writer:
    """The router's one writer: its lock and the fenced transactions it opens."""

    def __init__(
        self,
        *,
        sessionmaker: async_sessionmaker[AsyncSession],
        source: str,
        clock: Clock,
        ownership: Ownership,
        rebuild: Callable[[], Awaitable[None]],
        notify: Callable[[], None],
        publish: Publish,
        settle: Callable[[UnitOfWork], Awaitable[None]] | None = None,
        inline: InlineWrites | None = None,
    ) -> None:
        self._sessionmaker = sessionmaker
        self._inline = inline  # SQLite: statements on the loop's thread, lock and fsync on a worker
        self._source = source
        self._clock = clock
        self._ownership = ownership
        self._rebuild = rebuild
        self._notify = notify  # the outbox relay: events were staged
        self._publish = publish  # the agents' streams
        self._settle = settle  # derived state written last, inside each transaction (settle_work.py)
        self.lock = asyncio.Lock()
        self.stale = False  # the engine may differ from the database (a failed rebuild): rebuild first
        self.renewed_at = 0.0  # when the lease was last renewed (the tick keeps it while idle)

    @contextlib.asynccontextmanager
    async def locked(self) -> AsyncIterator[None]:
        """The writer lock, with the engine brought back in line with the database if it may differ."""
        async with self.lock:
            if self.stale:
                await self._rebuild()
            yield

    @contextlib.asynccontextmanager
    async def _session(self) -> AsyncIterator[SqlSession]:
        """A session in a transaction, committed when the block ends (rolled back if it raises)."""
        if self._inline is not None:
            async with self._inline.transaction() as inline:
                yield inline
        else:
            async with self._sessionmaker() as session, session.begin():
                yield session

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[UnitOfWork]:
        """A transaction; on failure the engine is rebuilt from the database (it may hold the change)."""
        now = self._clock()
        tx: UnitOfWork | None = None
        try:
            async with self._session() as session:
                tx = UnitOfWork(session=session, source=self._source, now=now)
                # Fencing: a router that no longer owns the state cannot commit anything. On PostgreSQL
                # the lease is renewed in the transaction's closing statement, with what it buffered.
                tx.closes_in_one = tx.dialect == "postgresql"
                if not tx.closes_in_one:
                    await self._ownership.renew(session, tx.now)
                yield tx
                if self._settle is not None:
                    await self._settle(tx)
                if tx.closes_in_one:
                    await close(tx, self._ownership)
                else:
                    await tx.flush()
        except RouterError:
            raise  # refused before anything changed: the engine is untouched
        except OwnershipLost:
            log.error("router.ownership_lost", lease=self._ownership.name, still_held=sorted(self._ownership.names))
            # Rebuilt before the engine is used again: for the leases still held (some domains were
            # lost), or once ownership is regained.
            self.stale = True
            raise
        except BaseException:
            try:
                await self._rebuild()
            except Exception:
                # The database is unreachable: rebuild before the engine is used again, or a
                # reservation the database never saw would stay stuck in memory.
                self.stale = True
                log.exception("router.rebuild_failed")
            raise
        assert tx is not None
        self.renewed_at = tx.now
        if tx.emitted:
            self._notify()
        for agent_id, event, data in tx.pushes:
            self._publish(agent_id, event, data)

    @contextlib.asynccontextmanager
    async def unit_of_work(self) -> AsyncIterator[UnitOfWork]:
        """A group's transaction under the writer lock (``group_commit.py``; it ends with the offers the
        group made possible, ``tick.route``)."""
        async with self.locked(), self.transaction() as tx:
            yield tx
