"""``offer.accepted`` for a released callback (contact id = callback id): an agent took it, in progress."""

from __future__ import annotations

from typing import TYPE_CHECKING

from services.callback.lifecycle import Status
from services.callback.rows import open_for_contact
from services.callback.unit_of_work import UnitOfWork
from shared.events import Envelope, OfferAccepted

if TYPE_CHECKING:
    from services.callback.service import CallbackService


async def on_offer_accepted(callbacks: CallbackService, tx: UnitOfWork, env: Envelope) -> None:
    ev = env.payload
    assert isinstance(ev, OfferAccepted)
    c = await open_for_contact(tx.session, ev.contact_id)
    if c is None or c.status != Status.RELEASED.value:
        return
    c.status = Status.IN_PROGRESS.value
    c.accepted_by_agent_id = ev.agent_id
    c.accepted_at = ev.at
    callbacks.refresh(c, callbacks.now())
