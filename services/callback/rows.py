"""Small helpers over commitment rows that several use cases share."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from services.callback.lifecycle import OPEN_STATUSES
from services.callback.store import Commitment
from shared.events import Customer

OPEN = [s.value for s in OPEN_STATUSES]


def customer_of(c: Commitment) -> Customer:
    return Customer.model_validate(c.customer)


def end(c: Commitment, now: datetime) -> None:
    """The promise ended (fulfilled, closed or breached): the customer may open a new one."""
    c.open_customer_id = None
    c.ended_at = now
    c.next_check_at = None


async def open_for_contact(s: AsyncSession, contact_id: str) -> Commitment | None:
    """Offers for a callback carry the callback id as their contact id (see the README)."""
    return (
        await s.execute(
            select(Commitment).where(Commitment.id == contact_id, Commitment.status.in_(OPEN)).with_for_update()
        )
    ).scalar_one_or_none()
