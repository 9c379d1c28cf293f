"""The callback service: same-day promises kept in the database, changed one unit of work at a time.

Every state change is a unit of work (``unit_of_work.py``): one database transaction holding the
commitment rows, the inbox entries of consumed events and the emitted events (outbox). What happens on
each command, event or scheduler pass is in ``use_cases/``, one module per use case; consumed events
reach theirs through the event-type table in ``use_cases/inbound_events.py``; the reads are ``views``.

The scheduler calls :meth:`CallbackService.tick`, which re-derives everything from the database, so a
restart at any moment loses nothing: what was due, at risk or breached is found again.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.callback.clock import Clock
from services.callback.errors import AttemptBeforeRequest, AttemptTooSoon, CommitmentClosed, CommitmentNotFound
from services.callback.lifecycle import Policy, callable_windows, evaluate
from services.callback.store import Commitment
from services.callback.unit_of_work import UnitOfWork, inline_unit_of_work, unit_of_work
from services.callback.use_cases import record_attempt, request_callback, tick
from services.callback.use_cases.tick import TickReport
from services.callback.views import CallbackViews, ListFilter, SiteSummary, Summary
from shared.business_hours import BusinessCalendars, Interval
from shared.events import AttemptResult, CallbackRequested
from shared.sqlite_inline import InlineWrites

__all__ = [
    "AttemptBeforeRequest",
    "AttemptTooSoon",
    "CallbackService",
    "CommitmentClosed",
    "CommitmentNotFound",
    "ListFilter",
    "SiteSummary",
    "Summary",
    "TickReport",
]


class CallbackService:
    """The callback service's context (database, calendars, policy, clock) and the commands the API,
    the consumer and the scheduler call. Each command is one use case, in the module it names
    (``use_cases/``); the reads are ``views``."""

    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        calendars: BusinessCalendars,
        policy: Policy,
        clock: Clock,
        *,
        source: str = "switchboard/callback",
        notify: Callable[[], None] = lambda: None,
        batch_size: int = 200,
        release_without_presence: bool = False,
        inline_writes: InlineWrites | None = None,
    ) -> None:
        self.sessionmaker = sessionmaker
        # SQLite: units of work with their statements on this thread (``inline_unit_of_work``), one at a
        # time on the writer's one connection; None: each through the sessionmaker (PostgreSQL).
        self.inline_writes = inline_writes
        self._one_writer = asyncio.Lock()
        self.calendars = calendars
        self.policy = policy
        self.clock = clock
        self.source = source
        self.notify = notify  # the outbox relay: events were staged
        self.batch_size = batch_size
        self.release_without_presence = release_without_presence
        self._wake_listeners: list[Callable[[], None]] = []
        self.views = CallbackViews(sessionmaker, calendars, clock)  # the read side

    # -- plumbing ---------------------------------------------------------------------------------

    def on_wake(self, listener: Callable[[], None]) -> None:
        """Called after changes that may allow a release (new commitment, free agent, retry)."""
        self._wake_listeners.append(listener)

    def close(self) -> None:
        """Give back the inline writer's connection and thread (after the last unit of work)."""
        if self.inline_writes is not None:
            self.inline_writes.dispose()

    def committed(self) -> None:
        """After a commit: publish the outbox now and let the scheduler look again."""
        self.notify()
        for listener in self._wake_listeners:
            listener()

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[UnitOfWork]:
        """A unit of work; the caller says :meth:`committed` after it, when others should hear of it."""
        if self.inline_writes is None:
            async with unit_of_work(self.sessionmaker, self.source) as tx:
                yield tx
            return
        # The API, the consumer and the scheduler share the writer's one connection: one at a time, as
        # SQLite's write lock would have them anyway.
        async with self._one_writer, inline_unit_of_work(self.inline_writes, self.source) as tx:
            yield tx

    def now(self) -> datetime:
        """The clock's instant in UTC (all arithmetic happens in UTC; see shared.business_hours)."""
        return self.clock.now().astimezone(UTC)

    def windows(self, c: Commitment) -> list[Interval]:
        """The commitment's callable time: its site open and the customer callable."""
        return callable_windows(self.calendars.for_site(c.site), self.policy, c)

    def refresh(self, c: Commitment, now: datetime) -> None:
        """After a change: when the scheduler should look at the commitment next."""
        c.next_check_at = evaluate(c, self.windows(c), now, self.policy).next_check_at
        c.updated_at = now

    # -- commands ---------------------------------------------------------------------------------

    async def request(self, req: CallbackRequested, *, accepted: bool = True) -> tuple[Commitment, bool]:
        """Create (or merge) a commitment; True when a new one was created (``use_cases/request_callback``)."""
        return await request_callback.request(self, req, accepted=accepted)

    async def record_attempt(
        self,
        callback_id: str,
        result: AttemptResult,
        *,
        agent_id: str | None = None,
        notes: str | None = None,
        at: datetime | None = None,
        attempt_key: str | None = None,
        source: str = "api",
    ) -> Commitment:
        """Record a call to the customer (``use_cases/record_attempt``)."""
        return await record_attempt.record_attempt(
            self,
            callback_id,
            result,
            agent_id=agent_id,
            notes=notes,
            at=at,
            attempt_key=attempt_key,
            source=source,
        )

    async def tick(self, now: datetime | None = None) -> TickReport:
        """One scheduler pass (``use_cases/tick``): breaches, at-risk escalations, fallbacks, releases."""
        return await tick.run(self, now)

    # -- reads (views.py) -------------------------------------------------------------------------

    async def get(self, callback_id: str) -> Commitment:
        return await self.views.get(callback_id)

    async def list(self, f: ListFilter) -> list[Commitment]:
        return await self.views.list(f)

    async def summary_today(self, now: datetime | None = None) -> Summary:
        return await self.views.summary_today(now)

    async def agent_token_is_current(self, tenant_id: str, agent_id: str, token_id: str) -> bool:
        return await self.views.agent_token_is_current(tenant_id, agent_id, token_id)
