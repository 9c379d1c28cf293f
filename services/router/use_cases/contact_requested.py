"""A contact asks to be served (``contact.requested``): it queues, or the strategy's callback policy
diverts it to a callback (outside business hours, a long estimated wait, nobody on duty able to serve it,
or the customer asked).
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

from services.router import metrics
from services.router.matching import WaitingContact
from services.router.rows import language_key, to_datetime, to_ts, waiting_contact
from services.router.store import ContactState, contacts
from services.router.unit_of_work import UnitOfWork
from shared.db import dialect_insert, rowcount
from shared.events import CallbackOrigin, CallbackRequested, Channel, ContactRequested, deterministic_id

if TYPE_CHECKING:
    from services.router.service import RouterService


def _insert_new_contact(dialect: str) -> Any:
    """``INSERT .. ON CONFLICT DO NOTHING``: a contact already known inserts nothing (row count 0), and
    the check costs no read of its own."""
    return dialect_insert(contacts, dialect).on_conflict_do_nothing(index_elements=[contacts.c.contact_id])


INSERT_NEW_CONTACT = {dialect: _insert_new_contact(dialect) for dialect in ("sqlite", "postgresql")}


async def on_contact_requested(router: RouterService, tx: UnitOfWork, event: ContactRequested) -> None:
    # A clock ahead of ours upstream must not put a contact in line "in the future" (behind later ones).
    received = min(to_ts(event.received_at), tx.now)
    waiting_for = max(0.0, tx.now - received)
    within_hours = True if event.within_business_hours is None else event.within_business_hours
    language = language_key(event.customer.language or "en")
    arriving = WaitingContact(
        contact_id=event.contact_id,
        site=event.site,
        channel=event.channel,
        intent=event.intent,
        tier=event.customer.tier,
        language=language,
        enqueued_at=received,
        expected_handling_seconds=event.expected_handling_seconds,
    )
    # Only agents on duty who could serve this contact (language, skills, roles) count for its wait.
    estimated = router.engine.estimated_wait_for(arriving, tx.now)
    unservable = router.engine.eligibility(arriving).reason
    asked = event.callback_requested
    # With nobody staffing the channel there is no estimate (inf): only the business-hours rule
    # applies, and the contact queues for the first agent to log in, unless the strategy offers a
    # callback when nobody on duty can serve it (callback.when_unservable).
    divert = (
        asked
        or router.strategy.should_offer_callback(
            estimated if estimated != float("inf") else 0.0, within_hours, event.channel
        )
        or (unservable is not None and router.strategy.callback_when_unservable(event.channel))
    )
    values = dict(
        contact_id=event.contact_id,
        tenant_id=event.tenant_id,
        site=event.site,
        channel=event.channel.value,
        state=ContactState.DIVERTED if divert else ContactState.WAITING,
        customer=event.customer.model_dump(mode="json"),
        intent=event.intent.value if event.intent else None,
        summary=event.summary,
        expected_handling_seconds=event.expected_handling_seconds,
        within_business_hours=event.within_business_hours,
        source=event.source,
        external_id=event.external_id,
        received_at=received,
        virtual_start=received,
        priority_boost=0.0,
        preferred_agent_id=None,
        widen_roles=False,
        callback_id=None,
        callback_attempt=None,
        agent_id=None,
        offers_made=0,
        answered_at=None,
        ended_at=tx.now if divert else None,
        outcome=None,
    )
    inserted = await tx.session.execute(INSERT_NEW_CONTACT[tx.dialect], values)
    if rowcount(inserted) == 0:
        return  # the same contact again (a retried webhook with a new event id): one contact
    await tx.note(
        event.contact_id,
        "received",
        channel=event.channel.value,
        intent=values["intent"],
        tier=event.customer.tier.value,
        source=event.source,
        waited_before_router_seconds=round(waiting_for, 3),
    )
    metrics.CONTACTS_RECEIVED.labels(event.channel.value).inc()
    if divert:
        reason = (
            "customer_requested"
            if asked
            else "outside_business_hours"
            if not within_hours
            else f"unservable_{unservable}"
            if unservable is not None
            else f"estimated_wait_{estimated:.0f}s"
        )
        origin = (
            (CallbackOrigin.WEB_FORM if event.channel is Channel.WEB_CALLBACK else CallbackOrigin.CUSTOMER_REQUEST)
            if asked
            else CallbackOrigin.ROUTER_POLICY
        )
        await tx.emit(
            CallbackRequested(
                tenant_id=event.tenant_id,
                request_id=deterministic_id("callback-request", event.tenant_id, event.contact_id),
                customer=event.customer,
                site=event.site,
                origin=origin,
                contact_id=event.contact_id,
                intent=event.intent,
                channel=Channel.VOICE if event.channel is Channel.WEB_CALLBACK else event.channel,
                preferred_window=event.preferred_window,
                reason=reason,
                virtual_start_time=event.received_at,
                requested_at=to_datetime(tx.now),
            )
        )
        await tx.note(event.contact_id, "callback_offered", reason=reason, estimated_wait_seconds=_finite(estimated))
        metrics.CALLBACKS_OFFERED.labels(reason.split("_")[0]).inc()
        return
    contact = waiting_contact(SimpleNamespace(**values))  # the row as just inserted: no read back
    router.engine.enqueue(contact)
    plan = router.strategy.plan(contact)
    await tx.note(
        event.contact_id,
        "queued",
        rule=plan.rule,
        priority=plan.priority,
        roles=[s.role.value for s in plan.steps],
        estimated_wait_seconds=_finite(estimated),
    )
    stuck = router.engine.unservable_reason(event.contact_id)
    if stuck is not None:
        # Flagged at once rather than left waiting silently next to idle agents who cannot take it.
        await tx.note(event.contact_id, "unservable", reason=stuck, rule=plan.rule)
        metrics.UNSERVABLE.labels(stuck, event.channel.value).inc()


def _finite(x: float) -> float | None:
    return round(x, 3) if x == x and x not in (float("inf"), float("-inf")) else None
