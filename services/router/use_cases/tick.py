"""The tick: one round of housekeeping and routing, every ``TICK_INTERVAL_SECONDS`` and at once on a change.

Expired offers are timed out, offers to agents gone beyond the presence grace handed on, ended wrap-ups
made available and handling overruns noted; then the engine's decisions are offered, all in one
transaction. What a group commit queued or freed is offered at its end, in its own transaction
(:func:`route`); a group that fails there commits without it and the tick offers instead, so a failing
offer never holds back consumed events or answers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import structlog

from services.router import leadership, metrics, rebuild
from services.router.handling import HANDLING_OVERRUN, Watched
from services.router.rows import contact_row
from services.router.store import ContactState, OfferState
from services.router.stream_events import HandlingOverrunEvent
from services.router.unit_of_work import UnitOfWork
from services.router.use_cases.agent_presence import apply_presence
from services.router.use_cases.offer_timeout import time_out
from services.router.use_cases.offers import close_offer, make_offers
from services.router.use_cases.settle_work import end_wrap_up

if TYPE_CHECKING:
    from services.router.service import RouterService

log = structlog.get_logger(__name__)


async def run(router: RouterService) -> int:
    """One round of housekeeping and routing; returns how many offers were made."""
    if not router.ownership.held:
        if not router.domains.whole:
            return 0  # owns no partition (yet): nothing to route
        if not await leadership.try_acquire(router):
            return 0
        log.info("router.owner_again", lease=router.ownership.name)
        async with router.writer.lock:
            await rebuild.from_database(router)
    async with router.writer.locked():
        now = router.clock()
        gone = apply_presence(router, now)
        expired = [o for o in router.open_offers.values() if o.expires_at <= now]
        # Offers to an agent whose stream stayed away beyond the grace go to the next agent now,
        # rather than when their lease runs out.
        orphaned = [o for o in router.open_offers.values() if o.agent_id in gone and o.expires_at > now]
        wrapped = [a for a, until in router.work.wrap_until.items() if until <= now]
        decisions = router.engine.decide(now)
        overrun = router.handling.due(now)
        unsettled = router.engine.work_changed or router.open_offers.changed or router.work.changed
        if not (expired or orphaned or wrapped or decisions or overrun or unsettled):
            if now - router.writer.renewed_at > router.ownership.ttl / 3:
                async with router.writer.transaction():
                    pass  # keep the lease while idle
            return 0
        async with router.writer.transaction() as tx:
            for offer in expired:
                await time_out(router, tx, offer)
            for offer in orphaned:
                await close_offer(router, tx, offer, OfferState.DECLINED, reason="agent_disconnected")
            for agent_id in wrapped:
                await end_wrap_up(router, tx, agent_id)
            for watched in overrun:
                await _handling_overrun(router, tx, watched)
            if expired or orphaned or wrapped:
                decisions += router.engine.decide(tx.now)
            await make_offers(router, tx, decisions)
        return len(decisions)


async def route(router: RouterService, tx: UnitOfWork) -> None:
    """Offer what the engine decides now, in the caller's transaction: the end of every group commit,
    so a contact consumed while an agent is free is recorded and offered in one commit."""
    await make_offers(router, tx, router.engine.decide(tx.now))


async def _handling_overrun(router: RouterService, tx: UnitOfWork, watched: Watched) -> None:
    """The allowed handling time ran out: a gentle notice to the agent and a trace for supervisors
    (timeline, today's counter, metric). Nothing is forced: the contact stays with the agent."""
    router.handling.forget(watched.contact_id)
    row = await contact_row(tx.session, watched.contact_id)
    if row is None or row.state != ContactState.ASSIGNED or row.agent_id != watched.agent_id:
        return  # ended or moved meanwhile
    held = round(tx.now - watched.since, 3)
    detail = {
        "role": watched.role.value,
        "allowed_handling_seconds": watched.allowed_seconds,
        "held_seconds": held,
    }
    await tx.note(watched.contact_id, HANDLING_OVERRUN, agent_id=watched.agent_id, **detail)
    await tx.bump("handling_overruns", 1)
    metrics.HANDLING_OVERRUNS.labels(watched.role.value, row.channel).inc()
    notice = HandlingOverrunEvent(
        contact_id=watched.contact_id,
        role=watched.role,
        allowed_handling_seconds=watched.allowed_seconds,
        held_seconds=held,
    )
    tx.push(watched.agent_id, HANDLING_OVERRUN, notice)
