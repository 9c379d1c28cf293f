"""Builders for the events other services send the callback service."""

from __future__ import annotations

import uuid
from datetime import datetime

from shared.events import (
    AgentActivity,
    AgentStatus,
    AgentStatusChanged,
    AgentWorkChanged,
    AssignmentCompleted,
    AttemptResult,
    CallbackAttempted,
    CallbackOrigin,
    CallbackRequested,
    Customer,
    Envelope,
    OfferAccepted,
    OfferDeclined,
    TimeWindow,
    make_event,
)


def requested(
    customer_id: str,
    at: datetime,
    *,
    request_id: str | None = None,
    site: str = "main",
    timezone: str | None = None,
    origin: CallbackOrigin = CallbackOrigin.WEB_FORM,
    agent: str | None = None,
    window: tuple[datetime, datetime] | None = None,
    virtual_start_time: datetime | None = None,
    promised_deadline: datetime | None = None,
    promise_text: str | None = None,
) -> Envelope:
    return make_event(
        CallbackRequested(
            request_id=request_id or str(uuid.uuid4()),
            customer=Customer(id=customer_id, phone="+4989123456", timezone=timezone),
            site=site,
            origin=origin,
            promised_by_agent_id=agent,
            preferred_window=TimeWindow(start=window[0], end=window[1]) if window else None,
            virtual_start_time=virtual_start_time,
            requested_at=at,
            promised_deadline=promised_deadline,
            promise_text=promise_text,
        ),
        source="switchboard/intake",
    )


def agent_status(
    agent_id: str, status: AgentStatus, at: datetime, site: str = "main", previous: AgentStatus | None = None
) -> Envelope:
    return make_event(
        AgentStatusChanged(agent_id=agent_id, site=site, status=status, previous=previous, at=at),
        source="switchboard/router",
    )


def agent_work(agent_id: str, activity: AgentActivity, at: datetime, site: str = "main") -> Envelope:
    return make_event(
        AgentWorkChanged(agent_id=agent_id, site=site, activity=activity, at=at), source="switchboard/router"
    )


def attempted(callback_id: str, result: AttemptResult, at: datetime, agent_id: str = "a1") -> Envelope:
    return make_event(
        CallbackAttempted(callback_id=callback_id, customer=Customer(id="?"), agent_id=agent_id, result=result, at=at),
        source="switchboard/router",
    )


def accepted(callback_id: str, agent_id: str, at: datetime, is_callback: bool | None = True) -> Envelope:
    """``is_callback=None``: as a router from before the flag wrote it."""
    return make_event(
        OfferAccepted(
            offer_id=str(uuid.uuid4()), contact_id=callback_id, agent_id=agent_id, at=at, is_callback=is_callback
        ),
        source="switchboard/router",
    )


def declined(callback_id: str, agent_id: str, at: datetime) -> Envelope:
    return make_event(
        OfferDeclined(offer_id=str(uuid.uuid4()), contact_id=callback_id, agent_id=agent_id, at=at),
        source="switchboard/router",
    )


def completed(callback_id: str, agent_id: str, at: datetime) -> Envelope:
    return make_event(
        AssignmentCompleted(contact_id=callback_id, callback_id=callback_id, agent_id=agent_id, at=at),
        source="switchboard/router",
    )


__all__ = ["AttemptResult", "accepted", "agent_status", "attempted", "completed", "declined", "requested"]
