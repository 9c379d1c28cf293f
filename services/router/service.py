"""The router service: the pure matching engine wrapped in durable, transactional state changes.

One :class:`RouterService` owns the routing state in its database (fenced by an ownership lease, see
:mod:`services.router.ownership`). Every state change runs under one asyncio lock (one writer) inside a
database transaction that also renews the lease, records the timeline and stages the emitted events in
the outbox; agent actions and batches of consumed events that arrive together share one transaction and
one commit (:mod:`services.router.group_commit`), and what they free is offered before that commit. The
in-memory
engine is an index of the database: it is rebuilt from the database on start, and again whenever a
transaction fails after the engine was already changed, so the two never drift apart.

Self-healing reservations: an offer is a lease with ``expires_at`` stored in the database. The tick loop
times out expired leases and requeues their contacts; after a crash the same happens at start-up, before
any new event is consumed. Presence is an open agent stream; an agent gone longer than the grace period
gets no offers.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.router import leadership, metrics, rebuild
from services.router.auth import IssuedToken, KnownTokens, Principal, hash_token, new_token
from services.router.errors import Conflict, Forbidden, Invalid, NotFound, RouterError
from services.router.group_commit import GroupCommit
from services.router.handling import HandlingWatch
from services.router.leeway import leeway_for, role_of
from services.router.matching import MatchingEngine
from services.router.open_offers import OpenOffers, PendingOffer
from services.router.ownership import Ownership, OwnershipLost
from services.router.reach import contact_uris_values, reach_of
from services.router.rows import (
    ON_CONTACT,
    agent_row,
    agent_state,
    contact_row,
    has_assignment,
    has_work,
    loads_by_agent,
    offer_for,
    offered_role,
    to_datetime,
    waiting_contact,
)
from services.router.settings import RouterSettings
from services.router.store import ContactState, OfferState, agents, contacts, offers
from services.router.strategy import GoodwillLedger, Strategy, load_strategy
from services.router.streams import Presence, StreamHub
from services.router.unit_of_work import Clock, UnitOfWork, Writer
from services.router.use_cases import agent_presence, agent_status, inbound_events, tick
from services.router.use_cases.agent_status import set_status
from services.router.use_cases.dialing_outcomes import dialled_attempt
from services.router.use_cases.offer_timeout import time_out
from services.router.use_cases.offers import close_offer
from services.router.views import RouterViews, offer_view
from shared.events import (
    AgentStatus,
    AgentStatusChanged,
    AgentTokenIssued,
    AssignmentCompleted,
    AttemptResult,
    CallbackAttempted,
    CallbackOrigin,
    CallbackRequested,
    Channel,
    Customer,
    Envelope,
    Intent,
    OfferAccepted,
    Outcome,
    Role,
    deterministic_id,
)

log = structlog.get_logger(__name__)

SALE_ON_SHORT_QUESTION = "sale_on_short_question"  # timeline kind: a strategy deviation, recorded



@dataclass
class AgentProfile:
    """What an admin registers or updates about an agent (validated by the API layer)."""

    name: str
    roles: list[Role]
    primary_role: Role
    skills: dict[str, int]
    languages: list[str]
    capacity: dict[Channel, int]
    site: str
    team: str | None = None
    contact_uris: dict[Channel, str] | None = None  # None: keep what is stored


class RouterService:
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
        self.ownership = Ownership(f"router/{tenant_id}", uuid.uuid4().hex, settings.ownership_ttl_seconds)
        self.writer = Writer(
            sessionmaker=sessionmaker,
            source=source,
            clock=clock,
            ownership=self.ownership,
            rebuild=lambda: rebuild.from_database(self),
            notify=notify,
            publish=self.hub.publish,
        )
        # Agent actions and batches of consumed events share transactions (see group_commit.py).
        self.writes: GroupCommit[UnitOfWork] = GroupCommit(self.writer.unit_of_work, refusals=(RouterError,))
        self.open_offers = OpenOffers()
        self.wrap_until: dict[str, float] = {}  # agents in wrap-up: when it ends
        # Assigned contacts not yet past their allowed handling time: contact -> when it runs out.
        self.handling = HandlingWatch()
        self.absent: set[str] = set()  # agents the engine was told are not connected
        # Offered callbacks whose terms changed (a newer callback.due): requeued from the database row.
        self.refresh_on_release: set[str] = set()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.consumer_name = settings.consumer_group
        self.views = RouterViews(self)  # the read side

    # ------------------------------------------------------------------------------------------
    # Lifecycle
    # ------------------------------------------------------------------------------------------

    @property
    def offer_timeout(self) -> float:
        return self.settings.offer_timeout_seconds or self.strategy.offer_timeout_seconds

    @property
    def active(self) -> bool:
        """True while this router owns the routing state (a standby is not active)."""
        return self.ownership.held

    async def start(self) -> None:
        """Own the state, rebuild it from the database, heal what a crash left behind, start ticking."""
        await leadership.acquire(self)
        async with self.writer.lock:
            await rebuild.from_database(self)
        await self.tick()  # expired leases are timed out and requeued before anything else happens
        self._task = asyncio.create_task(self._run(), name="router-tick")

    async def stop(self) -> None:
        await self.writes.stop()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self.hub.shutdown()
        await leadership.hand_over(self)

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
    # Converting rows
    # ------------------------------------------------------------------------------------------

    async def _resync_agent(self, tx: UnitOfWork, agent_id: str) -> None:
        """Give the engine the agent as the database has it (profile, status, load)."""
        row = (await tx.session.execute(select(agents).where(agents.c.agent_id == agent_id))).first()
        if row is None:
            return
        loads = await loads_by_agent(tx.session, agent_id)
        self.engine.upsert_agent(agent_state(row, loads.get(agent_id, {}), connected=agent_id not in self.absent))

    # ------------------------------------------------------------------------------------------
    # Agents
    # ------------------------------------------------------------------------------------------

    async def register_agent(
        self, agent_id: str | None, profile: AgentProfile, status: AgentStatus
    ) -> tuple[dict[str, Any], str]:
        """Create an agent; returns it and its bearer token (shown once, only its hash is kept)."""
        if status in (AgentStatus.BUSY, AgentStatus.WRAP_UP):
            raise Invalid("an agent starts as available, break or offline")
        agent_id = agent_id or str(uuid.uuid4())
        issued = self.issue_agent_token(agent_id)
        token = issued.token
        async with self.writer.locked(), self.writer.transaction() as tx:
            exists = await tx.session.execute(select(agents.c.agent_id).where(agents.c.agent_id == agent_id))
            if exists.first() is not None:
                raise Conflict(f"agent {agent_id!r} already exists")
            await tx.session.execute(
                agents.insert().values(
                    agent_id=agent_id,
                    tenant_id=self.tenant_id,
                    site=profile.site,
                    team=profile.team,
                    name=profile.name,
                    roles=[r.value for r in profile.roles],
                    primary_role=profile.primary_role.value,
                    skills=profile.skills,
                    languages=profile.languages,
                    capacity={c.value: n for c, n in profile.capacity.items()},
                    status=status.value,
                    status_since=tx.now,
                    status_reason="registered",
                    wrap_up_until=None,
                    missed_offers=0,
                    contact_uris={c.value: u for c, u in (profile.contact_uris or {}).items()},
                    token_hash=hash_token(token),
                    created_at=tx.now,
                    updated_at=tx.now,
                )
            )
            self.presence.track(agent_id, tx.now)
            await self._resync_agent(tx, agent_id)
            await tx.emit(
                AgentStatusChanged(
                    tenant_id=self.tenant_id,
                    agent_id=agent_id,
                    site=profile.site,
                    status=status,
                    previous=None,
                    reason="registered",
                    at=to_datetime(tx.now),
                )
            )
            await tx.emit(
                AgentTokenIssued(
                    tenant_id=self.tenant_id, agent_id=agent_id, site=profile.site, token_id=issued.token_id
                )
            )
            metrics.AGENT_STATUS_CHANGES.labels(status.value).inc()
        self.wake()
        return await self.views.get_agent(agent_id), token

    async def update_agent(self, agent_id: str, profile: AgentProfile) -> dict[str, Any]:
        async with self.writer.locked(), self.writer.transaction() as tx:
            row = await agent_row(tx.session, agent_id)
            if profile.site != row.site and await has_work(tx.session, agent_id):
                raise Conflict("an agent cannot change site while it has offers or assignments")
            await tx.session.execute(
                update(agents)
                .where(agents.c.agent_id == agent_id)
                .values(
                    name=profile.name,
                    roles=[r.value for r in profile.roles],
                    primary_role=profile.primary_role.value,
                    skills=profile.skills,
                    languages=profile.languages,
                    capacity={c.value: n for c, n in profile.capacity.items()},
                    site=profile.site,
                    team=profile.team,
                    updated_at=tx.now,
                    **contact_uris_values(profile.contact_uris),
                )
            )
            await self._resync_agent(tx, agent_id)
        self.wake()
        return await self.views.get_agent(agent_id)

    async def rotate_token(self, agent_id: str) -> str:
        """A new token; the old one stops working here at once, on the other services once they have
        consumed the ``agent.token_issued`` event staged in the same transaction."""
        issued = self.issue_agent_token(agent_id)
        self.tokens.forget()
        async with self.writer.locked(), self.writer.transaction() as tx:
            row = await agent_row(tx.session, agent_id)
            await tx.session.execute(
                update(agents)
                .where(agents.c.agent_id == agent_id)
                .values(token_hash=hash_token(issued.token), updated_at=tx.now)
            )
            await tx.emit(
                AgentTokenIssued(tenant_id=self.tenant_id, agent_id=agent_id, site=row.site, token_id=issued.token_id)
            )
        self.tokens.forget()  # also what was looked up while the change committed
        return issued.token

    async def agent_for_token(self, token: str) -> str | None:
        """The agent a bearer token belongs to (lookup by the token's hash; the token is never stored)."""
        digest = hash_token(token)
        if (known := self.tokens.get(digest)) is not None:
            return known
        generation = self.tokens.generation
        async with self.sessionmaker() as session:
            agent_id = (
                await session.execute(select(agents.c.agent_id).where(agents.c.token_hash == digest))
            ).scalar_one_or_none()
        if agent_id is not None:
            self.tokens.remember(digest, agent_id, generation)  # not if a token changed meanwhile
        return agent_id

    async def change_status(self, agent_id: str, status: AgentStatus, reason: str | None) -> dict[str, Any]:
        return await agent_status.change_status(self, agent_id, status, reason)

    # ------------------------------------------------------------------------------------------
    # Contacts from the bus
    # ------------------------------------------------------------------------------------------

    async def handle_event(self, envelope: Envelope) -> None:
        """Consume one event (``contacts``, and the end of callbacks from ``callbacks``): inbox dedupe,
        state change and outbox in one transaction."""
        await inbound_events.handle_events(self, [envelope])

    async def handle_events(self, envelopes: Sequence[Envelope]) -> None:
        await inbound_events.handle_events(self, envelopes)

    # ------------------------------------------------------------------------------------------
    # The tick: presence, expiries, wrap-up, decisions
    # ------------------------------------------------------------------------------------------

    async def tick(self) -> int:
        return await tick.run(self)

    def stream_opened(self, agent_id: str) -> None:
        agent_presence.stream_opened(self, agent_id)

    def stream_closed(self, agent_id: str) -> None:
        agent_presence.stream_closed(self, agent_id)

    # ------------------------------------------------------------------------------------------
    # Agent actions: accept, decline, complete
    # ------------------------------------------------------------------------------------------

    async def accept(self, offer_id: str, who: Principal) -> dict[str, Any]:
        async def accept(tx: UnitOfWork) -> dict[str, Any] | None:
            row = await offer_for(tx.session, offer_id, who)
            pending = self.open_offers.get(offer_id)
            if row.state != OfferState.PENDING or pending is None:
                raise Conflict(f"offer is {row.state}, it can no longer be accepted")
            if pending.expires_at <= tx.now:
                await time_out(self, tx, pending)  # committed: the contact goes to the next agent
                return None
            return await self._assign(tx, pending)

        assignment = await self.writes.run(accept)
        if assignment is None:
            self.wake()
            raise Conflict("offer expired before it was accepted; the contact was offered again")
        return assignment

    async def _assign(self, tx: UnitOfWork, offer: PendingOffer) -> dict[str, Any]:
        self.open_offers.untrack(offer.offer_id)
        self.engine.accept(offer.contact_id)
        await tx.session.execute(
            update(offers)
            .where(offers.c.offer_id == offer.offer_id)
            .values(state=OfferState.ACCEPTED, resolved_at=tx.now)
        )
        await tx.session.execute(
            update(contacts)
            .where(contacts.c.contact_id == offer.contact_id)
            .values(state=ContactState.ASSIGNED, agent_id=offer.agent_id, answered_at=tx.now)
        )
        agent = await agent_row(tx.session, offer.agent_id)
        if agent.missed_offers:
            await tx.session.execute(update(agents).where(agents.c.agent_id == offer.agent_id).values(missed_offers=0))
        if agent.status in (AgentStatus.AVAILABLE, AgentStatus.WRAP_UP):
            await set_status(self, tx, agent, AgentStatus.BUSY, ON_CONTACT)
        contact = await contact_row(tx.session, offer.contact_id)
        await tx.emit(
            OfferAccepted(
                tenant_id=contact.tenant_id,
                offer_id=offer.offer_id,
                contact_id=offer.contact_id,
                agent_id=offer.agent_id,
                site=contact.site,
                at=to_datetime(tx.now),
                **reach_of(agent, contact),
            )
        )
        waited = tx.now - contact.virtual_start
        await tx.note(
            offer.contact_id,
            "accepted",
            agent_id=offer.agent_id,
            offer_id=offer.offer_id,
            waited_seconds=round(waited, 3),
        )
        metrics.OFFERS.labels("accepted").inc()
        if contact.callback_id is None:
            metrics.ANSWER_WAIT.labels(contact.channel).observe(max(0.0, tx.now - contact.received_at))
        role = role_of(await self._offer_explanation(tx.session, offer.offer_id))
        view = self.views.assignment_view(contact, role)
        leeway = leeway_for(self.strategy, self.strategy.plan(waiting_contact(contact)), role)
        self.handling.watch(offer.contact_id, offer.agent_id, leeway, tx.now)
        tx.push(offer.agent_id, "assignment", view)
        return view

    async def _offer_explanation(self, session: AsyncSession, offer_id: str) -> Any:
        return (
            await session.execute(select(offers.c.explanation).where(offers.c.offer_id == offer_id))
        ).scalar_one_or_none()

    async def decline(self, offer_id: str, who: Principal, reason: str | None) -> dict[str, Any]:

        async def decline(tx: UnitOfWork) -> dict[str, Any]:
            row = await offer_for(tx.session, offer_id, who)
            pending = self.open_offers.get(offer_id)
            if row.state != OfferState.PENDING or pending is None:
                raise Conflict(f"offer is {row.state}, it can no longer be declined")
            await close_offer(self, tx, pending, OfferState.DECLINED, reason=reason or "declined")
            await tx.session.execute(
                update(agents).where(agents.c.agent_id == pending.agent_id).values(missed_offers=0)
            )
            return offer_view(await offer_for(tx.session, offer_id, who))

        view = await self.writes.run(decline)
        self.wake()
        return view

    async def complete(
        self,
        contact_id: str,
        who: Principal,
        outcome: Outcome,
        attempt_result: AttemptResult | None,
    ) -> dict[str, Any]:

        async def complete(tx: UnitOfWork) -> Any:
            row = await contact_row(tx.session, contact_id)
            if row is None:
                raise NotFound(f"contact {contact_id!r} not found")
            if row.agent_id is None or not who.may_act_for(row.agent_id):
                raise Forbidden("this contact is not assigned to you")
            if row.state != ContactState.ASSIGNED:
                raise Conflict(f"contact is {row.state}, not assigned; nothing to complete")
            attempt = attempt_result
            if row.callback_id is not None and attempt is None:
                attempt = await dialled_attempt(tx.session, row)  # the placed call's outcome, if known
            if row.callback_id is not None and attempt is None:
                raise Invalid("attempt_result is required to complete a callback")
            if row.callback_id is None and attempt is not None:
                raise Invalid("attempt_result applies only to callback assignments")
            plan = self.strategy.plan(waiting_contact(row))
            leeway = leeway_for(self.strategy, plan, await offered_role(tx.session, contact_id, row.agent_id))
            budget = leeway.goodwill_budget
            if outcome.goodwill_amount > budget + 1e-9:
                raise Invalid(
                    f"goodwill_amount {outcome.goodwill_amount} exceeds this contact's budget {budget} "
                    f"(the {leeway.role.value} leeway)"
                )
            # The period budget holds across agents: checked against the ledger as it stands in this
            # group's order (an earlier completion in the same transaction already counted), so two
            # grants that together exceed it cannot both pass.
            left = self.goodwill.remaining(tx.now)
            if left is not None and outcome.goodwill_amount > left + 1e-9:
                raise Invalid(
                    f"goodwill_amount {outcome.goodwill_amount} exceeds what remains of the goodwill period "
                    f"budget: {round(left, 2)} of {self.strategy.goodwill.period_budget} left"
                )
            role_budget = self.strategy.goodwill.role_budgets.get(leeway.role)
            role_left = self.goodwill.remaining(tx.now, leeway.role)
            if role_budget is not None and role_left is not None and outcome.goodwill_amount > role_left + 1e-9:
                raise Invalid(
                    f"goodwill_amount {outcome.goodwill_amount} exceeds what remains of the "
                    f"{leeway.role.value} goodwill period budget: {round(role_left, 2)} of {role_budget} left"
                )
            pushed_sale = outcome.sold and plan.short_question
            if pushed_sale and self.strategy.short_question.sale_recorded == "refuse":
                raise Invalid(
                    "a sale on a short question goes against the strategy (short_question.sale_recorded: "
                    "refuse); complete it without 'sold'"
                )
            await self._finish(tx, row, outcome, attempt, leeway.role)
            if pushed_sale:
                await tx.note(
                    contact_id, SALE_ON_SHORT_QUESTION, agent_id=row.agent_id, role=leeway.role.value,
                    deviation="the strategy sends short questions without a sales push",
                )
                await tx.bump("sales_on_short_questions", 1)
                metrics.SALES_ON_SHORT_QUESTIONS.labels(leeway.role.value, row.channel).inc()
            return await contact_row(tx.session, contact_id)

        done = await self.writes.run(complete)
        self.wake()
        return {
            "contact_id": contact_id,
            "state": done.state,
            "outcome": done.outcome,
            "ended_at": to_datetime(done.ended_at).isoformat(),
        }

    async def _finish(
        self, tx: UnitOfWork, row: Any, outcome: Outcome, attempt: AttemptResult | None, role: Role | None = None
    ) -> None:
        agent_id = row.agent_id
        outcome_doc = outcome.model_dump(mode="json")
        if attempt is not None:
            outcome_doc["attempt_result"] = attempt.value
        await tx.session.execute(
            update(contacts)
            .where(contacts.c.contact_id == row.contact_id)
            .values(state=ContactState.COMPLETED, ended_at=tx.now, outcome=outcome_doc)
        )
        self.engine.finish(row.contact_id, tx.now)
        self.handling.forget(row.contact_id)
        handled = tx.now - row.answered_at if row.answered_at else None
        customer = Customer.model_validate(row.customer)
        await tx.emit(
            AssignmentCompleted(
                tenant_id=row.tenant_id,
                contact_id=row.contact_id,
                agent_id=agent_id,
                site=row.site,
                customer=customer,
                callback_id=row.callback_id,
                outcome=outcome,
                handled_seconds=handled,
                at=to_datetime(tx.now),
            )
        )
        if row.callback_id is not None and attempt is not None:
            await tx.emit(
                CallbackAttempted(
                    tenant_id=row.tenant_id,
                    callback_id=row.callback_id,
                    customer=customer,
                    site=row.site,
                    agent_id=agent_id,
                    result=attempt,
                    notes=outcome.notes,
                    at=to_datetime(tx.now),
                ),
                # One id per attempt (the work item is re-queued with a fresh received_at for each
                # callback.due after an attempt), so attempt 2, 3... are not dropped as duplicates of the
                # first, while a redelivery of this same completion still dedupes.
                event_id=deterministic_id(
                    "callback-attempted", row.contact_id, str(row.callback_attempt), repr(float(row.received_at))
                ),
            )
        if outcome.callback_promised:
            await tx.emit(
                CallbackRequested(
                    tenant_id=row.tenant_id,
                    request_id=deterministic_id("callback-promise", row.tenant_id, row.contact_id),
                    customer=customer,
                    site=row.site,
                    origin=CallbackOrigin.AGENT_PROMISE,
                    contact_id=row.contact_id,
                    intent=Intent(row.intent) if row.intent else None,
                    channel=Channel.VOICE,
                    preferred_window=outcome.callback_window,
                    promised_by_agent_id=agent_id,
                    reason="agent_promise",
                    requested_at=to_datetime(tx.now),
                )
            )
        self.goodwill.record(outcome.goodwill_amount, tx.now, role)
        self.engine.sales.record_completion(outcome.sold, tx.now)
        await tx.bump("completed", 1)
        if outcome.sold:
            await tx.bump("sold", 1)
        if outcome.goodwill_amount:
            await tx.bump("goodwill_spent", outcome.goodwill_amount)
        await tx.note(
            row.contact_id,
            "completed",
            agent_id=agent_id,
            handled_seconds=round(handled, 3) if handled is not None else None,
            outcome=outcome_doc,
        )
        metrics.COMPLETIONS.labels(row.channel, "sold" if outcome.sold else "not_sold").inc()
        if handled is not None:
            metrics.HANDLING_TIME.labels(row.channel).observe(max(0.0, handled))
        tx.push(agent_id, "assignment_completed", {"contact_id": row.contact_id, "outcome": outcome_doc})
        # Wrap-up starts when the agent's last contact ends (and only if the router made it busy).
        agent = await agent_row(tx.session, agent_id)
        # Only assignments keep the agent on a contact: an open offer alongside may still time out, and
        # an agent left "busy on_contact" with nothing assigned would never be released again.
        still_on_contact = await has_assignment(tx.session, agent_id)
        if agent.status == AgentStatus.BUSY and agent.status_reason == ON_CONTACT and not still_on_contact:
            wrap = self.strategy.wrap_up_seconds(Channel(row.channel))
            if wrap > 0:
                await set_status(self, tx, agent, AgentStatus.WRAP_UP, "after_contact", wrap_until=tx.now + wrap)
            else:
                await set_status(self, tx, agent, AgentStatus.AVAILABLE, "after_contact")

    # ------------------------------------------------------------------------------------------
    # Strategy
    # ------------------------------------------------------------------------------------------

    async def reload_strategy(self, path: Path | None) -> Strategy:
        """Load, validate and activate a strategy file; on error the active one stays (raises)."""
        strategy = await asyncio.to_thread(load_strategy, path)
        async with self.writer.locked():
            self.engine.replace_strategy(strategy)
            self.strategy = strategy
            self.goodwill.policy = strategy.goodwill
        log.info("router.strategy_reloaded", version=strategy.version, path=str(path) if path else None)
        self.wake()
        return strategy

