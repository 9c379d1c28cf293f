"""An offer is a lease on an agent's capacity: made when the engine decides, closed without an assignment
when it is declined, times out or is withdrawn. Accepting one is ``accept_offer.py``.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

from sqlalchemy import update

from services.router import metrics
from services.router.leeway import role_of
from services.router.matching import Decision
from services.router.open_offers import PendingOffer
from services.router.responses import OpenOffer
from services.router.rows import agent_row, contact_row, offer_contact, to_datetime, waiting_contact
from services.router.store import ContactState, OfferState, contacts, offers
from services.router.stream_events import OfferClosedEvent
from services.router.unit_of_work import UnitOfWork
from shared.events import OfferDeclined, OfferMade, OfferTimedOut, Role, deterministic_id

if TYPE_CHECKING:
    from services.router.service import RouterService


async def make_offers(router: RouterService, tx: UnitOfWork, decisions: list[Decision]) -> None:
    """Offer each decision; their offer rows are inserted together, after the contacts' updates.

    Not one statement per offer: on PostgreSQL each is a round trip the writer waits for, and there the
    rows go with the transaction's closing statement (``closing_statement.py``). Offers are the last
    thing a transaction makes (the end of a group, the end of a tick): nothing after them reads
    ``router_offers``, and all of it is one transaction.
    """
    await tx.insert_offers([await _make_offer(router, tx, decision) for decision in decisions])


async def _make_offer(router: RouterService, tx: UnitOfWork, decision: Decision) -> dict[str, object]:
    """The offer's contact, events, timeline and stream message; returns the offer row to insert."""
    offer_id = str(uuid.uuid4())
    expires = tx.now + router.offer_timeout
    explanation = dict(decision.explanation)
    offer = dict(
        offer_id=offer_id,
        contact_id=decision.contact_id,
        agent_id=decision.agent_id,
        state=OfferState.PENDING,
        made_at=tx.now,
        expires_at=expires,
        resolved_at=None,
        rule=decision.rule,
        score=float(decision.score),
        explanation=explanation,
        reason=None,
    )
    row = await offer_contact(tx.session, decision.contact_id, decision.agent_id)
    router.open_offers.track(PendingOffer(offer_id, decision.contact_id, decision.agent_id, expires))
    # The role the engine counted it under for the sales cap; the agent's primary one if it named none.
    role = role_of(explanation) or Role((await agent_row(tx.session, decision.agent_id)).primary_role)
    await tx.bump("offered", 1)
    if role is Role.SALES:
        await tx.bump("offered_to_sales", 1)
    await tx.emit(
        OfferMade(
            tenant_id=row.tenant_id,
            offer_id=offer_id,
            contact_id=decision.contact_id,
            agent_id=decision.agent_id,
            site=row.site,
            expires_at=to_datetime(expires),
            rule=decision.rule,
            score=float(decision.score),
            explanation=explanation,
            at=to_datetime(tx.now),
        ),
        event_id=deterministic_id("offer-made", offer_id),
    )
    await tx.note(
        decision.contact_id,
        "offered",
        agent_id=decision.agent_id,
        offer_id=offer_id,
        rule=decision.rule,
        score=float(decision.score),
        explanation=explanation,
        expires_at=to_datetime(expires).isoformat(),
    )
    metrics.OFFERS.labels("made").inc()
    tx.push(
        decision.agent_id,
        "offer",
        OpenOffer.model_validate(router.views.offer_payload(offer_id, row, decision, expires)),
    )
    return offer


async def close_offer(
    router: RouterService,
    tx: UnitOfWork,
    offer: PendingOffer,
    state: str,
    *,
    reason: str | None = None,
    requeue: bool = True,
) -> None:
    """End a lease without an assignment: release the agent's capacity, requeue the contact."""
    router.open_offers.untrack(offer.offer_id)
    await tx.session.execute(
        update(offers).where(offers.c.offer_id == offer.offer_id).values(state=state, resolved_at=tx.now, reason=reason)
    )
    await tx.session.execute(
        update(contacts)
        .where(contacts.c.contact_id == offer.contact_id)
        .values(state=ContactState.WAITING if requeue else ContactState.ABANDONED, agent_id=None)
    )
    if requeue and offer.contact_id in router.refresh_on_release:
        router.refresh_on_release.discard(offer.contact_id)
        declined = {**router.engine.declined_by(offer.contact_id), offer.agent_id: tx.now}
        router.engine.release(offer.contact_id, tx.now, requeue=False, missed=state == OfferState.TIMED_OUT)
        router.engine.enqueue(waiting_contact(await contact_row(tx.session, offer.contact_id)), declined=declined)
    elif requeue:
        # Back to its original place in line; this agent is skipped for a while (reoffer_after).
        router.engine.release(offer.contact_id, tx.now, requeue=True, missed=state == OfferState.TIMED_OUT)
    else:
        router.engine.withdraw(offer.contact_id)
    row = await contact_row(tx.session, offer.contact_id)
    common = dict(
        tenant_id=row.tenant_id,
        offer_id=offer.offer_id,
        contact_id=offer.contact_id,
        agent_id=offer.agent_id,
        site=row.site,
        at=to_datetime(tx.now),
    )
    if state == OfferState.TIMED_OUT:
        await tx.emit(OfferTimedOut(**common))
    else:
        await tx.emit(OfferDeclined(**common, reason=reason))
    kind = {OfferState.TIMED_OUT: "timed_out", OfferState.DECLINED: "declined"}.get(state, "offer_withdrawn")
    await tx.note(offer.contact_id, kind, agent_id=offer.agent_id, offer_id=offer.offer_id, reason=reason)
    if requeue:
        await tx.note(offer.contact_id, "requeued", previous_agent_id=offer.agent_id)
    metrics.OFFERS.labels(kind).inc()
    tx.push(
        offer.agent_id,
        "offer_closed",
        OfferClosedEvent(offer_id=offer.offer_id, contact_id=offer.contact_id, state=state, reason=reason),
    )
