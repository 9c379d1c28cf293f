"""An agent accepts an offer: the contact is assigned to it (``offer.accepted``, the agent on a contact),
unless the lease ran out first; then it is timed out, offered again, and the agent hears 409.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NoReturn

from sqlalchemy import update

from services.router import metrics
from services.router.auth import Principal
from services.router.errors import Conflict, NotFound, NotOwnedHere
from services.router.leeway import leeway_for, role_of
from services.router.open_offers import PendingOffer
from services.router.reach import reach_of
from services.router.responses import Assignment
from services.router.rows import (
    assign_contact,
    offer_for,
    take_offer,
    take_offer_and_assign,
    to_datetime,
    waiting_contact,
)
from services.router.store import OfferState, agents
from services.router.unit_of_work import UnitOfWork
from services.router.use_cases.offer_timeout import time_out
from services.router.use_cases.settle_work import end_wrap_up
from shared.events import OfferAccepted

if TYPE_CHECKING:
    from services.router.service import RouterService


async def accept(router: RouterService, offer_id: str, who: Principal) -> dict[str, Any]:
    async def accept(tx: UnitOfWork) -> dict[str, Any] | None:
        pending = router.open_offers.get(offer_id)
        if pending is None or not who.may_act_for(pending.agent_id):
            await _refuse(router, tx, offer_id, who, pending)
        assert pending is not None
        if pending.expires_at <= tx.now:
            await time_out(router, tx, pending)  # committed: the contact goes to the next agent
            return None
        if tx.dialect == "postgresql":  # one round trip for both changes (each is one the writer waits for)
            taken = await take_offer_and_assign(tx.session, offer_id, pending.contact_id, pending.agent_id, tx.now)
            assigned = taken
        else:
            taken = await take_offer(tx.session, offer_id, tx.now)
            assigned = None
        if taken is None:  # the database disagrees with the open offers (its agent is gone): say why
            await _refuse(router, tx, offer_id, who, pending)
        return await _assign(router, tx, pending, taken, assigned)

    assignment = await router.writes.run(accept)
    if assignment is None:
        router.wake()
        raise Conflict("offer expired before it was accepted; the contact was offered again")
    return assignment


async def _refuse(
    router: RouterService, tx: UnitOfWork, offer_id: str, who: Principal, pending: PendingOffer | None
) -> NoReturn:
    """Why the offer cannot be accepted, read from its row (nothing was changed)."""
    row = await offer_for(tx.session, offer_id, who)  # 404 unknown, 403 another agent's
    if pending is None and row.state == OfferState.PENDING and not router.domains.whole:
        raise NotOwnedHere("this offer's routing domain is owned by another router now; retry")
    if row.state != OfferState.PENDING or pending is None:
        raise Conflict(f"offer is {row.state}, it can no longer be accepted")
    raise NotFound(f"agent {row.agent_id!r} not found")


async def _assign(
    router: RouterService, tx: UnitOfWork, offer: PendingOffer, row: Any, assigned: Any | None
) -> dict[str, Any]:
    """``row``: what ``take_offer`` returned (the offer's explanation, with the role it was offered under,
    and its agent's misses and contact addresses); the offer row is accepted already. ``assigned``: the
    contact's row if it was assigned in the same statement, else it is assigned here."""
    explanation = row.explanation
    router.open_offers.untrack(offer.offer_id)
    router.engine.accept(offer.contact_id)
    contact = (
        assigned if assigned is not None else await assign_contact(tx.session, offer.contact_id, offer.agent_id, tx.now)
    )
    if row.agent_missed_offers:
        await tx.session.execute(update(agents).where(agents.c.agent_id == offer.agent_id).values(missed_offers=0))
    # An offer made before the last contact ended may be taken in wrap-up: that ends the wrap-up.
    await end_wrap_up(router, tx, offer.agent_id)
    await tx.emit(
        OfferAccepted(
            tenant_id=contact.tenant_id,
            offer_id=offer.offer_id,
            contact_id=offer.contact_id,
            agent_id=offer.agent_id,
            site=contact.site,
            at=to_datetime(tx.now),
            is_callback=contact.callback_id is not None,
            **reach_of(row.agent_contact_uris, contact),
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
    role = role_of(explanation)
    view = router.views.assignment_view(contact, role)
    leeway = leeway_for(router.strategy, router.strategy.plan(waiting_contact(contact)), role)
    router.handling.watch(offer.contact_id, offer.agent_id, leeway, tx.now)
    tx.push(offer.agent_id, "assignment", Assignment.model_validate(view))
    return view
