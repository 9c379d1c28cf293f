"""``callback.due``: the router is handed a released callback to offer, like a contact.

Emitted on release, and again (same ``callback_id``, new terms: boost, preferred agent, wider roles)
when it escalates at risk, falls back from the promising agent to the pool, or that agent refused it.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from services.callback.lifecycle import priority_boost, slack_seconds
from services.callback.rows import customer_of
from services.callback.store import Commitment
from services.callback.unit_of_work import UnitOfWork
from shared.events import CallbackDue, deterministic_id

if TYPE_CHECKING:
    from services.callback.service import CallbackService


async def emit_due(callbacks: CallbackService, tx: UnitOfWork, c: Commitment, now: datetime) -> None:
    slack = slack_seconds(callbacks.windows(c), c.deadline, now, callbacks.policy)
    c.due_emissions += 1
    await tx.emit(
        CallbackDue(
            tenant_id=c.tenant_id,
            callback_id=c.id,
            customer=customer_of(c),
            site=c.site,
            contact_id=c.contact_id,
            intent=c.intent,  # type: ignore[arg-type]
            channel=c.channel,  # type: ignore[arg-type]
            deadline=c.deadline,
            attempt=c.attempts + 1,
            priority_boost=priority_boost(c, slack, callbacks.policy),
            at_risk=c.at_risk,
            widen_roles=c.at_risk,
            preferred_agent_id=c.released_to_agent_id,
            virtual_start_time=c.virtual_start_time,
            at=now,
        ),
        deterministic_id("callback.due", c.id, str(c.due_emissions)),
    )
