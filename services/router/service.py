"""The router service: the pure matching engine wrapped in durable, transactional state changes.

One :class:`RouterService` owns the routing state in its database (fenced by an ownership lease:
``ownership.py``, ``leadership.py``). Every state change is a unit of work (``unit_of_work.py``): under
one writer, in a database transaction that also renews the lease, records the timeline and stages the
emitted events in the outbox; agent actions and batches of consumed events that arrive together share
one transaction and one commit (``group_commit.py``). The in-memory engine is an index of the database:
it is rebuilt from it on start, and again whenever a transaction fails after the engine was already
changed (``rebuild.py``), so the two never drift apart.

Self-healing reservations: an offer is a lease with ``expires_at`` stored in the database. The tick
times out expired leases and requeues their contacts; after a crash the same happens at start-up, before
any new event is consumed. Presence is an open agent stream; an agent gone longer than the grace period
gets no offers.

What happens on each command or event is in ``use_cases/``, one module per use case.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, cast

import structlog
from sqlalchemy import Engine
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.router import leadership, rebuild
from services.router.agent_work import AgentWork
from services.router.auth import IssuedToken, KnownTokens, Principal, new_token
from services.router.domains import OwnedDomains
from services.router.errors import RouterError
from services.router.group_commit import GroupCommit
from services.router.handling import HandlingWatch
from services.router.matching import MatchingEngine
from services.router.open_offers import OpenOffers
from services.router.ownership import WHOLE, Ownership, OwnershipLost
from services.router.settings import RouterSettings
from services.router.shared_presence import PresenceRecorder
from services.router.strategy import GoodwillLedger, Strategy
from services.router.streams import Presence, StreamHub
from services.router.unit_of_work import Clock, UnitOfWork, Writer
from services.router.use_cases import (
    accept_offer,
    agent_admin,
    agent_presence,
    agent_status,
    complete_contact,
    decline_offer,
    inbound_events,
    settle_work,
    strategy_reload,
    tick,
)
from services.router.use_cases.agent_admin import AgentProfile
from services.router.views import RouterViews
from shared import sqlite_inline
from shared.events import AgentStatus, AttemptResult, Envelope, Outcome

log = structlog.get_logger(__name__)


class RouterService:
    """The router: its state (the engine and the indexes beside it, all rebuilt from the database), its
    writer, and the commands app.py and the API call. Each command is one use case, in the module it
    names (``use_cases/``); the reads are ``views``."""

    def __init__(
        self,
        *,
        sessionmaker: async_sessionmaker[AsyncSession],
        settings: RouterSettings,
        strategy: Strategy,
        source: str = "switchboard/router",
        tenant_id: str = "default",
        notify: Callable[[], None] = lambda: None,
        clock: Clock = time.time,
        issue_agent_token: Callable[[str], IssuedToken] | None = None,
    ) -> None:
        self.sessionmaker = sessionmaker
        # Signed tokens any service can verify (shared.auth); opaque random ones in unit tests.
        self.issue_agent_token = issue_agent_token or (lambda _agent: IssuedToken(new_token(), uuid.uuid4().hex, None))
        self.settings = settings
        self.strategy = strategy
        self.source = source
        self.tenant_id = tenant_id
        self.clock = clock
        self.hub = StreamHub()
        self.presence = Presence(settings.presence_grace_seconds)
        self.engine = MatchingEngine(strategy)
        self.goodwill = GoodwillLedger(strategy.goodwill)
        self.tokens = KnownTokens()
        self.ownership = Ownership(
            f"router/{tenant_id}", uuid.uuid4().hex, settings.ownership_ttl_seconds, address=settings.advertise_url
        )
        # Which routing domains this router acts on: all, or its partitions' (domain_ownership.py).
        self.domains = OwnedDomains(tenant_id, self.ownership, whole=settings.ownership == WHOLE)
        # SQLite: the writer's statements run on this thread once it holds the write lock (sqlite_inline.py).
        self.inline_writes = (
            sqlite_inline.for_engine(sessionmaker.kw["bind"]) if settings.sqlite_inline_writes else None
        )
        self.writer = Writer(
            sessionmaker=sessionmaker,
            source=source,
            clock=clock,
            ownership=self.ownership,
            rebuild=lambda: rebuild.from_database(self),
            notify=notify,
            publish=self.hub.publish,
            settle=lambda tx: settle_work.settle(self, tx),
            inline=self.inline_writes,
        )
        # Agent actions and batches of consumed events share transactions, each group ending with the
        # offers it made possible; if those fail, the group commits without them and the tick offers.
        self.writes: GroupCommit[UnitOfWork] = GroupCommit(
            self.writer.unit_of_work,
            refusals=(RouterError,),
            finish=lambda tx: tick.route(self, tx),
            finish_dropped=self.wake,
        )
        self.open_offers = OpenOffers()
        self.work = AgentWork()  # the router's view of each agent's work, apart from their status
        # Assigned contacts not yet past their allowed handling time: contact -> when it runs out.
        self.handling = HandlingWatch()
        self.absent: set[str] = set()  # agents the engine was told are not connected
        # Streams seen here, recorded for the other routers' lists (several active routers only).
        self.presence_record = PresenceRecorder(sessionmaker, enabled=not self.domains.whole)
        # Offered callbacks whose terms changed (a newer callback.due): requeued from the database row.
        self.refresh_on_release: set[str] = set()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.serving = False  # owns the state, rebuilt it and consumes: the API may be served (standby.py)
        self.consumer_name = settings.consumer_group
        self.views = RouterViews(self)  # the read side

    # ------------------------------------------------------------------------------------------
    # Lifecycle
    # ------------------------------------------------------------------------------------------

    @property
    def offer_timeout(self) -> float:
        return self.settings.offer_timeout_seconds or self.strategy.offer_timeout_seconds

    @property
    def write_engine(self) -> Engine:
        """The engine the writer's statements go through: its events see every write (tests, benchmarks)."""
        if self.inline_writes is not None:
            return self.inline_writes.engine
        return cast(Engine, self.sessionmaker.kw["bind"].sync_engine)

    @property
    def active(self) -> bool:
        """True while this router owns the routing state (a standby is not active)."""
        return self.ownership.held

    async def start(self) -> None:
        """Own the state, rebuild it from the database, heal what a crash left behind, start ticking.
        Sharing the database (``ownership=partitions``), a router owns nothing yet: its domains come
        with the partitions its consumer is assigned (``domain_ownership.py``)."""
        if self.domains.whole:
            await leadership.acquire(self)
            async with self.writer.lock:
                await rebuild.from_database(self)
            await self.tick()  # expired leases are timed out and requeued before anything else happens
        self._task = asyncio.create_task(self._run(), name="router-tick")
        self.presence_record.start()

    async def stop(self) -> None:
        await self.writes.stop()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self.hub.shutdown()
        await self.presence_record.stop()
        await leadership.hand_over(self)
        self.close()

    def close(self) -> None:
        """Give back what the service opened beside the engine it was given (the inline writer's)."""
        if self.inline_writes is not None:
            self.inline_writes.dispose()

    def wake(self) -> None:
        """Route now rather than at the next tick (a contact arrived, an agent became free)."""
        self._wake.set()

    async def _run(self) -> None:
        interval = self.settings.tick_interval_seconds
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=interval)
            self._wake.clear()
            try:
                await self.tick()
            except asyncio.CancelledError:
                raise
            except OwnershipLost:
                pass  # logged where it happened; the next tick waits to own the state again
            except Exception:
                log.exception("router.tick_failed")
                await asyncio.sleep(interval)

    # ------------------------------------------------------------------------------------------
    # Agents
    # ------------------------------------------------------------------------------------------

    async def register_agent(
        self, agent_id: str | None, profile: AgentProfile, status: AgentStatus
    ) -> tuple[dict[str, Any], str]:
        return await agent_admin.register_agent(self, agent_id, profile, status)

    async def update_agent(self, agent_id: str, profile: AgentProfile) -> dict[str, Any]:
        return await agent_admin.update_agent(self, agent_id, profile)

    async def rotate_token(self, agent_id: str) -> str:
        return await agent_admin.rotate_token(self, agent_id)

    async def agent_for_token(self, token: str) -> str | None:
        return await agent_admin.agent_for_token(self, token)

    async def change_status(self, agent_id: str, status: AgentStatus, reason: str | None) -> dict[str, Any]:
        return await agent_status.change_status(self, agent_id, status, reason)

    def stream_opened(self, agent_id: str) -> None:
        agent_presence.stream_opened(self, agent_id)

    def stream_closed(self, agent_id: str) -> None:
        agent_presence.stream_closed(self, agent_id)

    # ------------------------------------------------------------------------------------------
    # Contacts from the bus
    # ------------------------------------------------------------------------------------------

    async def handle_event(self, envelope: Envelope) -> None:
        """Consume one event (``contacts``, and the end of callbacks from ``callbacks``): inbox dedupe,
        state change and outbox in one transaction."""
        await inbound_events.handle_events(self, [envelope])

    async def handle_events(self, envelopes: Sequence[Envelope], partitions: set[int] | None = None) -> None:
        """A batch of consumed events; ``partitions``: the ``contacts`` partitions they came from (their
        leases are made sure of first, when several routers share the database)."""
        await inbound_events.handle_events(self, envelopes, partitions)

    # ------------------------------------------------------------------------------------------
    # Offers and assignments
    # ------------------------------------------------------------------------------------------

    async def tick(self) -> int:
        return await tick.run(self)

    async def accept(self, offer_id: str, who: Principal) -> dict[str, Any]:
        return await accept_offer.accept(self, offer_id, who)

    async def decline(self, offer_id: str, who: Principal, reason: str | None) -> dict[str, Any]:
        return await decline_offer.decline(self, offer_id, who, reason)

    async def complete(
        self, contact_id: str, who: Principal, outcome: Outcome, attempt_result: AttemptResult | None
    ) -> dict[str, Any]:
        return await complete_contact.complete(self, contact_id, who, outcome, attempt_result)

    # ------------------------------------------------------------------------------------------
    # Strategy
    # ------------------------------------------------------------------------------------------

    async def reload_strategy(self, path: Path | None) -> Strategy:
        return await strategy_reload.reload_strategy(self, path)
