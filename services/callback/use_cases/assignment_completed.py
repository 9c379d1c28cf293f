"""``assignment.completed`` with a ``callback_id``: a callback call ended. If no attempt was recorded for
it, it is tried again, after a short wait (``min_retry_spacing``) so that a ``callback.attempted``
travelling on another topic can still arrive and win."""

from __future__ import annotations

from typing import TYPE_CHECKING

from services.callback.lifecycle import Status
from services.callback.rows import open_for_contact
from services.callback.unit_of_work import UnitOfWork
from shared.events import AssignmentCompleted, Envelope

if TYPE_CHECKING:
    from services.callback.service import CallbackService


async def on_assignment_completed(callbacks: CallbackService, tx: UnitOfWork, env: Envelope) -> None:
    ev = env.payload
    assert isinstance(ev, AssignmentCompleted)
    c = await open_for_contact(tx.session, ev.callback_id or ev.contact_id)
    if c is None or c.status != Status.IN_PROGRESS.value:
        return
    now = callbacks.now()
    c.status = Status.PENDING.value
    c.not_before = max(now, ev.at) + callbacks.policy.min_retry_spacing
    c.released_at = c.released_to_agent_id = c.accepted_by_agent_id = c.accepted_at = None
    callbacks.refresh(c, now)
