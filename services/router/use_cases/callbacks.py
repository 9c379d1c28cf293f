"""Callbacks from the callback service. ``callback.due`` queues (or updates) the work item whose id is
the ``callback_id``; an attempt made elsewhere, a fulfilment or a breach drops a queued one.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any, TypedDict

from sqlalchemy import update

from services.router.rows import contact_row, to_datetime, to_ts, waiting_contact
from services.router.store import ContactState, OfferState, contacts
from services.router.unit_of_work import UnitOfWork
from services.router.use_cases.offers import close_offer
from shared.events import CallbackAttempted, CallbackBreached, CallbackDue, CallbackFulfilled

if TYPE_CHECKING:
    from services.router.service import RouterService


class _Terms(TypedDict):
    """A ``callback.due``'s terms as the timeline records them (``UnitOfWork.note`` details)."""

    attempt: int
    virtual_start: str
    priority_boost: float
    preferred_agent_id: str | None
    widen_roles: bool
    at_risk: bool


async def on_callback_due(router: RouterService, tx: UnitOfWork, event: CallbackDue) -> None:
    """A callback to make now. Its work item's id is the ``callback_id`` (the callback service's
    contract): a later ``callback.due`` for it replaces the earlier one (new boost, preferred agent,
    widening), and one after the previous attempt ended is the next attempt on the same item."""
    work_id = event.callback_id
    row = await contact_row(tx.session, work_id)
    virtual = min(to_ts(event.virtual_start_time), tx.now) if event.virtual_start_time else tx.now
    values: dict[str, Any] = dict(
        tenant_id=event.tenant_id,
        site=event.site,
        channel=event.channel.value,
        customer=event.customer.model_dump(mode="json"),
        intent=event.intent.value if event.intent else None,
        virtual_start=virtual,
        priority_boost=event.priority_boost,
        preferred_agent_id=event.preferred_agent_id,
        widen_roles=event.widen_roles,
        callback_id=event.callback_id,
        callback_attempt=event.attempt,
    )
    details = _Terms(
        attempt=event.attempt,
        virtual_start=to_datetime(virtual).isoformat(),
        priority_boost=event.priority_boost,
        preferred_agent_id=event.preferred_agent_id,
        widen_roles=event.widen_roles,
        at_risk=event.at_risk,
    )
    if row is not None and row.state == ContactState.ASSIGNED:
        await tx.note(work_id, "callback_due_ignored", reason="call in progress", **details)
        return
    if row is not None and row.state == ContactState.OFFERED:
        # The offer stands; if it is declined or expires, the contact returns with the new terms.
        await tx.session.execute(update(contacts).where(contacts.c.contact_id == work_id).values(**values))
        router.refresh_on_release.add(work_id)
        await tx.note(work_id, "callback_updated", **details)
        return
    if row is not None and row.state == ContactState.WAITING:
        declined = router.engine.declined_by(work_id)  # the new terms do not change who said no
        router.engine.withdraw(work_id)
        await tx.session.execute(update(contacts).where(contacts.c.contact_id == work_id).values(**values))
        router.engine.enqueue(waiting_contact(await contact_row(tx.session, work_id)), declined=declined)
        await tx.note(work_id, "callback_updated", **details)
        return
    fresh = dict(
        state=ContactState.WAITING,
        summary=None,
        expected_handling_seconds=None,
        within_business_hours=None,
        received_at=tx.now,
        agent_id=None,
        offers_made=0,
        answered_at=None,
        ended_at=None,
        outcome=None,
    )
    if row is None:
        await tx.session.execute(contacts.insert().values(contact_id=work_id, **values, **fresh))
    else:  # the previous attempt ended: this is the next one, on the same audit trail
        await tx.session.execute(update(contacts).where(contacts.c.contact_id == work_id).values(**values, **fresh))
    router.engine.enqueue(waiting_contact(await contact_row(tx.session, work_id)))
    await tx.note(
        work_id,
        "received",
        callback_id=event.callback_id,
        original_contact_id=event.contact_id,
        deadline=event.deadline.isoformat(),
        attempt=event.attempt,
    )
    await tx.note(work_id, "queued", **details)


async def on_callback_closed(
    router: RouterService, tx: UnitOfWork, callback_id: str, reason: str, at: datetime
) -> None:
    """The callback was attempted elsewhere, fulfilled or breached: a queued call is dropped (a new
    ``callback.due`` brings it back if another try is needed). A call in progress is left alone, and
    so is an attempt queued after the closing event happened (``callbacks`` and ``contacts`` are
    different topics: a newer ``callback.due`` may overtake an older closure)."""
    row = await contact_row(tx.session, callback_id)
    if row is None or row.state not in ContactState.OPEN:
        return
    if to_ts(at) < row.received_at:
        await tx.note(callback_id, "callback_close_ignored", reason=reason, stale=True)
        return
    offer = router.open_offers.for_contact(callback_id)
    if offer is not None:
        await close_offer(router, tx, offer, OfferState.WITHDRAWN, reason=reason, requeue=False)
    else:
        router.engine.withdraw(callback_id)
    router.refresh_on_release.discard(callback_id)
    await tx.session.execute(
        update(contacts)
        .where(contacts.c.contact_id == callback_id)
        .values(state=ContactState.CANCELLED, agent_id=None, ended_at=tx.now)
    )
    await tx.note(callback_id, "callback_closed", reason=reason)


async def on_callback_attempted(router: RouterService, tx: UnitOfWork, event: CallbackAttempted) -> None:
    await on_callback_closed(router, tx, event.callback_id, f"attempted:{event.result.value}", event.at)


async def on_callback_fulfilled(router: RouterService, tx: UnitOfWork, event: CallbackFulfilled) -> None:
    await on_callback_closed(router, tx, event.callback_id, "fulfilled", event.at)


async def on_callback_breached(router: RouterService, tx: UnitOfWork, event: CallbackBreached) -> None:
    await on_callback_closed(router, tx, event.callback_id, f"breached:{event.reason}", event.at)
