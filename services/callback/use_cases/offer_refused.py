"""``offer.declined`` / ``offer.timed_out`` by the agent a callback was released to (its promising agent):
the callback goes to the pool now rather than at the fallback time (a new ``callback.due``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from services.callback.lifecycle import Status
from services.callback.rows import open_for_contact
from services.callback.unit_of_work import UnitOfWork
from services.callback.use_cases.due import emit_due
from shared.events import Envelope, OfferDeclined, OfferTimedOut

if TYPE_CHECKING:
    from services.callback.service import CallbackService


async def on_offer_refused(callbacks: CallbackService, tx: UnitOfWork, env: Envelope) -> None:
    ev = env.payload
    assert isinstance(ev, OfferDeclined | OfferTimedOut)
    c = await open_for_contact(tx.session, ev.contact_id)
    if c is None or c.status != Status.RELEASED.value or c.released_to_agent_id != ev.agent_id:
        return
    now = callbacks.now()
    c.released_to_agent_id = None
    c.preferred_until = now
    await emit_due(callbacks, tx, c, now)
    callbacks.refresh(c, now)
