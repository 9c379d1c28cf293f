"""A callback is requested (``POST /v1/callbacks``, or ``callback.requested`` on the bus): a commitment is
created, or the request merges into the customer's open one; either way the answer is ``callback.scheduled``
(the promise and its text). A request id seen before has no effect.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import structlog
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from services.callback.lifecycle import Plan, Status, customer_zone, plan_commitment
from services.callback.metrics import PROMISE_DRIFT
from services.callback.rows import customer_of
from services.callback.store import Commitment, Request
from services.callback.unit_of_work import UnitOfWork
from shared.business_hours import SiteCalendar
from shared.events import CallbackRequested, CallbackScheduled, Envelope, TimeWindow, deterministic_id
from shared.promise import WhenNoOverlap

if TYPE_CHECKING:
    from services.callback.service import CallbackService

log = structlog.get_logger(__name__)


async def request(
    callbacks: CallbackService, req: CallbackRequested, *, accepted: bool = True
) -> tuple[Commitment, bool]:
    """Create (or merge) a commitment in a transaction of its own; True when a new one was created.

    ``accepted=False`` (the API): a request with no callable moment within the promise bound is
    refused with :class:`NoCallbackPossible` instead of being promised anyway."""
    for attempt in range(3):
        try:
            async with callbacks.transaction() as tx:
                result = await request_in(callbacks, tx, req, accepted=accepted)
            callbacks.committed()
            return result
        except IntegrityError:
            # Another replica opened a commitment for this customer at the same moment: merge.
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


async def on_callback_requested(callbacks: CallbackService, tx: UnitOfWork, env: Envelope) -> None:
    """``callback.requested`` from the bus: already accepted elsewhere, so never refused."""
    assert isinstance(env.payload, CallbackRequested)
    await request_in(callbacks, tx, env.payload)


async def request_in(
    callbacks: CallbackService, tx: UnitOfWork, req: CallbackRequested, *, accepted: bool = True
) -> tuple[Commitment, bool]:
    s = tx.session
    now = callbacks.now()
    requested_at = req.requested_at.astimezone(UTC)
    known = await s.get(Request, (req.tenant_id, req.request_id))
    if known is not None:  # the same request again: no effect
        existing = await s.get(Commitment, known.commitment_id)
        assert existing is not None
        return existing, False
    open_c = (
        await s.execute(
            select(Commitment)
            .where(Commitment.tenant_id == req.tenant_id, Commitment.open_customer_id == req.customer.id)
            .with_for_update()
        )
    ).scalar_one_or_none()
    calendars, policy = callbacks.calendars, callbacks.policy
    if not calendars.is_configured(req.site):
        # Refused at every API; one on the bus is kept (never lost) on the default calendar.
        log.warning("callback.unknown_site", site=req.site, using=calendars.default.name)
    # A merged request is planned with the open commitment's site: one promise, one calendar.
    cal = calendars.for_site(open_c.site if open_c is not None else req.site)
    window = (req.preferred_window.start, req.preferred_window.end) if req.preferred_window else None
    plan = plan_commitment(
        cal,
        policy,
        requested_at=requested_at,
        customer_tz=req.customer.timezone or (open_c.customer_timezone if open_c is not None else None),
        preferred_window=window,
        promised_by_agent=req.promised_by_agent_id is not None,
        accepted=accepted,
    )
    plan = _as_told(callbacks, req, plan, cal)
    if open_c is not None:
        _merge(callbacks, open_c, req, plan)
        c, created = open_c, False
    else:
        c = Commitment(
            id=deterministic_id("callback", req.tenant_id, req.request_id),
            tenant_id=req.tenant_id,
            site=req.site,
            customer_id=req.customer.id,
            open_customer_id=req.customer.id,
            customer=req.customer.model_dump(mode="json"),
            customer_timezone=req.customer.timezone,
            contact_id=req.contact_id,
            intent=req.intent.value if req.intent else None,
            channel=req.channel.value,
            origin=req.origin.value,
            reason=req.reason,
            status=Status.PENDING.value,
            requested_at=requested_at,
            virtual_start_time=(req.virtual_start_time or requested_at).astimezone(UTC),
            deadline=plan.deadline,
            deadline_day=plan.deadline.astimezone(cal.tz).date(),
            promise_day=plan.promise_day,
            next_business_day=plan.next_business_day,
            promise_text=plan.promise_text,
            window_start=plan.window[0] if plan.window else None,
            window_end=plan.window[1] if plan.window else None,
            initial_slack_seconds=plan.initial_slack_seconds,
            not_before=plan.not_before,
            at_risk=False,
            promised_by_agent_id=req.promised_by_agent_id,
            preferred_until=plan.preferred_until,
            due_emissions=0,
            attempts=0,
            merged_requests=1,
            created_at=now,
            updated_at=now,
        )
        s.add(c)
        created = True
    callbacks.refresh(c, now)
    s.add(
        Request(
            tenant_id=req.tenant_id,
            request_id=req.request_id,
            commitment_id=c.id,
            origin=req.origin.value,
            promised_by_agent_id=req.promised_by_agent_id,
            received_at=now,
        )
    )
    await s.flush()
    # Every request gets its answer (the promise), merged or not; consumers upsert by callback_id.
    await tx.emit(scheduled_event(c, now), deterministic_id("callback.scheduled", c.id, req.request_id))
    log.info(
        "callback.requested",
        callback_id=c.id,
        created=created,
        deadline=c.deadline.isoformat(),
        next_business_day=c.next_business_day,
    )
    return c, created


def _as_told(callbacks: CallbackService, req: CallbackRequested, plan: Plan, cal: SiteCalendar) -> Plan:
    """The customer was told ``req.promised_deadline``: that is the promise to track. Both sides
    compute it with :func:`shared.promise.decide_promise`, so a difference means the deployments'
    settings or calendars differ: flagged (log + metric), and the told deadline wins."""
    if plan.basis == "unbounded" or (
        plan.basis == "site_hours" and callbacks.policy.when_no_overlap != WhenNoOverlap.SITE_HOURS
    ):
        PROMISE_DRIFT.labels(req.site, plan.basis).inc()
        log.warning("callback.promise_outside_bound", request_id=req.request_id, basis=plan.basis)
    told = req.promised_deadline
    if told is None or told.astimezone(UTC) == plan.deadline:
        return plan
    told = told.astimezone(UTC)
    PROMISE_DRIFT.labels(req.site, "deadline_differs").inc()
    log.warning(
        "callback.promise_drift",
        request_id=req.request_id,
        told=told.isoformat(),
        computed=plan.deadline.isoformat(),
        site=req.site,
    )
    ctz = customer_zone(cal, req.customer.timezone)
    return replace(
        plan,
        deadline=told,
        promise_day=(told - timedelta(microseconds=1)).astimezone(ctz).date(),
        next_business_day=(told - timedelta(microseconds=1)).astimezone(ctz).date()
        > req.requested_at.astimezone(ctz).date(),
        promise_text=req.promise_text or plan.promise_text,
    )


def _merge(callbacks: CallbackService, c: Commitment, req: CallbackRequested, plan: Plan) -> None:
    """A second request for a customer with an open promise: one commitment, the stricter promise."""
    c.merged_requests += 1
    if plan.deadline <= c.deadline:
        # The newest promise is at least as strict: it is what the customer was just told (an
        # evening "tomorrow" becomes "today" when the customer asks again the next morning).
        cal = callbacks.calendars.for_site(c.site)
        c.deadline = plan.deadline
        c.deadline_day = plan.deadline.astimezone(cal.tz).date()
        c.promise_day = plan.promise_day
        c.next_business_day = plan.next_business_day
        c.promise_text = plan.promise_text
    vst = (req.virtual_start_time or req.requested_at).astimezone(UTC)
    if vst < c.virtual_start_time:
        c.virtual_start_time = vst
    if c.promised_by_agent_id is None and req.promised_by_agent_id is not None:
        c.promised_by_agent_id = req.promised_by_agent_id
        c.preferred_until = plan.preferred_until
    if c.window_start is None and plan.window is not None and plan.window[1] <= c.deadline:
        c.window_start, c.window_end = plan.window
        if c.status == Status.PENDING.value and c.attempts == 0:
            c.not_before = plan.window[0]
    if c.contact_id is None:
        c.contact_id = req.contact_id
    if c.intent is None and req.intent is not None:
        c.intent = req.intent.value


def scheduled_event(c: Commitment, now: datetime) -> CallbackScheduled:
    window = (
        TimeWindow(start=c.window_start, end=c.window_end)
        if c.window_start is not None and c.window_end is not None
        else None
    )
    return CallbackScheduled(
        tenant_id=c.tenant_id,
        callback_id=c.id,
        customer=customer_of(c),
        site=c.site,
        deadline=c.deadline,
        window=window,
        next_business_day=c.next_business_day,
        promise_text=c.promise_text,
        at=now,
    )
