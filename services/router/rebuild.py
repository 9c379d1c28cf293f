"""Rebuild the in-memory state from the database: the engine is an index of the database, never more.

Runs on start (before anything is consumed), after ownership was regained (another router changed
things), and whenever a transaction failed after the engine already changed. Waiting contacts come back
in line at their virtual start, offered and assigned ones as reservations of their agent, pending offers
as leases; who declined or missed a contact recently is skipped as before; the rolling sales-share window
is replayed and the goodwill period's grants are read back.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import structlog
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from services.router import goodwill
from services.router.handling import HANDLING_OVERRUN, HandlingWatch
from services.router.leeway import leeway_for, role_of
from services.router.matching import MatchingEngine
from services.router.open_offers import PendingOffer
from services.router.rows import agent_state, offered_role, waiting_contact
from services.router.store import ContactState, OfferState, agents, contacts, offers, timeline
from shared.events import AgentActivity

if TYPE_CHECKING:
    from services.router.service import RouterService

log = structlog.get_logger(__name__)


async def from_database(router: RouterService) -> None:
    """Load the engine and the lease index from the database (the truth)."""
    now = router.clock()
    engine = MatchingEngine(router.strategy)
    router.tokens.forget()  # another owner may have issued tokens meanwhile
    router.open_offers.clear()
    router.work.clear()
    router.refresh_on_release.clear()
    router.handling = HandlingWatch()
    domains = router.domains
    async with router.sessionmaker() as session:
        agent_rows = (await session.execute(select(agents))).all()
        rows = (
            await session.execute(
                select(contacts).where(contacts.c.state.in_(ContactState.LIVE)).order_by(contacts.c.virtual_start)
            )
        ).all()
        # Only the domains this router owns (all of them, unless several routers share the database).
        await domains.learn([r.site for r in agent_rows] + [r.site for r in rows])
        agent_rows = [r for r in agent_rows if domains.owns_known(r.site)]
        rows = [r for r in rows if domains.owns_known(r.site)]
        for row in agent_rows:
            router.presence.track(row.agent_id, now)
            # Load comes back below, one restored reservation per offered or assigned contact.
            engine.upsert_agent(agent_state(row, {}, connected=row.agent_id not in router.absent))
            router.work.activity[row.agent_id] = AgentActivity(row.activity)
            if row.wrap_up_until is not None:
                router.work.wrap_until[row.agent_id] = row.wrap_up_until
                router.work.written_until[row.agent_id] = row.wrap_up_until
        declined = await _declined_offers(router, session, rows, now)
        for row in rows:
            if row.state == ContactState.WAITING or row.agent_id is None:
                engine.enqueue(waiting_contact(row), declined=declined.get(row.contact_id))
            else:
                engine.restore_reservation(
                    waiting_contact(row),
                    row.agent_id,
                    row.answered_at or now,
                    declined=declined.get(row.contact_id),
                )
        await _watch_handling(router, session, [r for r in rows if r.state == ContactState.ASSIGNED])
        pending = (await session.execute(select(offers).where(offers.c.state == OfferState.PENDING))).all()
        live = {r.contact_id for r in rows}
        for o in pending:
            if o.contact_id not in live:
                continue  # another router's domain
            router.open_offers.track(PendingOffer(o.offer_id, o.contact_id, o.agent_id, o.expires_at))
        router.engine = engine
        # Every agent's work is derived again at the next commit: whatever an earlier version or a
        # migration left in the rows, what the router reports follows the loads just restored.
        router.work.changed.update(engine.agent_ids())
        router.writer.stale = False
        await _rebuild_counters(router, session, now)
    log.info(
        "router.rebuilt",
        agents=len(agent_rows),
        live_contacts=len(rows),
        pending_offers=len(router.open_offers),
        strategy=router.strategy.version,
    )


async def _watch_handling(router: RouterService, session: AsyncSession, assigned: Sequence[Any]) -> None:
    """Watch assigned contacts for the end of their allowed handling time, except those already
    flagged (the timeline says so): one notice per contact, across restarts."""
    if not assigned:
        return
    ids = [r.contact_id for r in assigned]
    flagged = set(
        (
            await session.execute(
                select(timeline.c.contact_id).where(timeline.c.contact_id.in_(ids), timeline.c.kind == HANDLING_OVERRUN)
            )
        ).scalars()
    )
    for row in assigned:
        if row.contact_id in flagged or row.answered_at is None:
            continue
        role = await offered_role(session, row.contact_id, row.agent_id)
        leeway = leeway_for(router.strategy, router.strategy.plan(waiting_contact(row)), role)
        router.handling.watch(row.contact_id, row.agent_id, leeway, row.answered_at)


async def _declined_offers(
    router: RouterService, session: AsyncSession, rows: Sequence[Any], now: float
) -> dict[str, dict[str, float]]:
    """Per live contact, the agents who declined or missed it in its current attempt and when, so that
    a restart skips them as the running engine did (recent ones only: older ones are free again)."""
    attempt_start = {r.contact_id: r.received_at for r in rows if r.state != ContactState.ASSIGNED}
    if not attempt_start:
        return {}
    result = await session.execute(
        select(offers.c.contact_id, offers.c.agent_id, offers.c.resolved_at).where(
            offers.c.state.in_((OfferState.DECLINED, OfferState.TIMED_OUT)),
            offers.c.resolved_at >= now - router.strategy.reoffer_after_seconds,
        )
    )
    declined: dict[str, dict[str, float]] = {}
    for contact_id, agent_id, at in result:
        start = attempt_start.get(contact_id)
        if start is not None and at >= start:
            by_agent = declined.setdefault(contact_id, {})
            by_agent[agent_id] = max(at, by_agent.get(agent_id, at))
    return declined


async def _rebuild_counters(router: RouterService, session: AsyncSession, now: float) -> None:
    """Replay the rolling sales-share window from durable offers and completions (of the owned domains:
    each router keeps its own share under the cap, so the tenant's stays under it too), and read the
    goodwill period's grants back (every router's: the budget is the tenant's)."""
    sales = router.engine.sales
    router.goodwill = await goodwill.ledger(session, router.strategy.goodwill, now)
    since = now - router.strategy.sales_share.period_seconds
    rows = (
        await session.execute(
            select(offers.c.contact_id, offers.c.made_at, offers.c.explanation, contacts.c.site)
            .join(contacts, contacts.c.contact_id == offers.c.contact_id)
            .where(offers.c.made_at > since)
            .order_by(offers.c.made_at)
        )
    ).all()
    await router.domains.learn([r.site for r in rows])
    for row in rows:
        if not router.domains.owns_known(row.site):
            continue
        role = role_of(row.explanation)
        if role is not None:
            sales.record_offer(row.contact_id, role, row.made_at, row.site)
    done = (
        await session.execute(
            select(contacts.c.ended_at, contacts.c.outcome, contacts.c.site)
            .where(contacts.c.state == ContactState.COMPLETED, contacts.c.ended_at > since)
            .order_by(contacts.c.ended_at)
        )
    ).all()
    await router.domains.learn([r.site for r in done])
    for completed in done:
        if not router.domains.owns_known(completed.site):
            continue
        outcome = completed.outcome or {}
        sales.record_completion(bool(outcome.get("sold")), completed.ended_at, completed.site)
