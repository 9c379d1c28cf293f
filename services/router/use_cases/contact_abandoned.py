"""The caller left (``contact.abandoned``): an open offer is withdrawn and the contact leaves the line."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlalchemy import update

from services.router import metrics
from services.router.rows import contact_row
from services.router.store import ContactState, OfferState, contacts
from services.router.unit_of_work import UnitOfWork
from services.router.use_cases.offers import close_offer
from shared.events import ContactAbandoned

if TYPE_CHECKING:
    from services.router.service import RouterService


async def on_contact_abandoned(router: RouterService, tx: UnitOfWork, event: ContactAbandoned) -> None:
    row = await contact_row(tx.session, event.contact_id)
    if row is None or row.state not in ContactState.OPEN:
        if row is not None:
            await tx.note(event.contact_id, "abandon_ignored", state=row.state, reason=event.reason)
        return
    offer = router.open_offers.for_contact(event.contact_id)
    if offer is not None:
        await close_offer(router, tx, offer, OfferState.WITHDRAWN, reason=event.reason, requeue=False)
    else:
        router.engine.withdraw(event.contact_id)
    await tx.session.execute(
        update(contacts)
        .where(contacts.c.contact_id == event.contact_id)
        .values(state=ContactState.ABANDONED, agent_id=None, ended_at=tx.now)
    )
    await tx.note(
        event.contact_id, "abandoned", reason=event.reason, waited_seconds=round(tx.now - row.virtual_start, 3)
    )
    metrics.CONTACTS_ABANDONED.labels(row.channel).inc()
