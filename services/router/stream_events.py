"""The router's Server-Sent Events: one model per event name, per stream (issue 19).

Every message put on a stream is one of these models, checked where it is made: the unit of work's
``push`` and the hub refuse a payload whose type is not the model of its event name, and the models
forbid undeclared fields. The schemas are published in the router's OpenAPI document: each stream
route's 200 answer lists its events' models (``text/event-stream``, one JSON ``data`` per event) and
maps event name → schema in its ``x-sse-events`` extension (:func:`sse_responses`).

Heartbeats are SSE comments (``: ping``), not events: they carry no data.
"""

from __future__ import annotations

import functools
import operator
from typing import Any

from pydantic import BaseModel, Field
from sse_starlette import EventSourceResponse

from services.router.dashboard import DashboardSnapshot
from services.router.responses import AgentOut, Assignment, OpenOffer, Out
from shared.events import AgentActivity, AgentStatus, Role

SSE_MEDIA_TYPE = "text/event-stream"
SSE_EVENTS_EXTENSION = "x-sse-events"

# --------------------------------------------------------------------------------------------------
# The agent's stream (GET /v1/agents/{agent_id}/stream)
# --------------------------------------------------------------------------------------------------


class HelloEvent(Out):
    """``hello``: the snapshot sent first on every (re)connect; it replaces whatever the client missed."""

    agent: AgentOut
    offers: list[OpenOffer]
    assignments: list[Assignment]


class OfferClosedEvent(Out):
    """``offer_closed``: an open offer ended without an assignment (declined, timed out, withdrawn)."""

    offer_id: str
    contact_id: str
    state: str = Field(description="declined, timed_out or withdrawn")
    reason: str | None


class AssignmentCompletedEvent(Out):
    """``assignment_completed``: the agent completed a contact."""

    contact_id: str
    outcome: dict[str, Any] = Field(description="the outcome as given, with attempt_result for a callback")


class AssignmentWithdrawnEvent(Out):
    """``assignment_withdrawn``: the connector could not reach the agent for an accepted contact."""

    contact_id: str
    reason: str = Field(description="dial_<result>")
    requeued: bool = Field(description="false: the caller is gone (abandoned)")


class StatusEvent(Out):
    """``status``: the agent's own status changed (by the agent, a supervisor, or missed offers)."""

    agent_id: str
    status: AgentStatus
    previous: AgentStatus
    reason: str | None


class WorkEvent(Out):
    """``work``: the router's view of the agent's work changed (offered, on a contact, wrap-up, idle)."""

    agent_id: str
    activity: AgentActivity
    previous: AgentActivity | None
    load: dict[str, int] = Field(description="channel → contacts offered or assigned now")
    wrap_up_until: float | None = Field(description="epoch seconds; set while in wrap-up")


class HandlingOverrunEvent(Out):
    """``handling_overrun``: the contact's allowed handling time ran out (a notice; nothing is forced)."""

    contact_id: str
    role: Role
    allowed_handling_seconds: float
    held_seconds: float


AGENT_STREAM_EVENTS: dict[str, type[BaseModel]] = {
    "hello": HelloEvent,
    "offer": OpenOffer,
    "offer_closed": OfferClosedEvent,
    "assignment": Assignment,
    "assignment_completed": AssignmentCompletedEvent,
    "assignment_withdrawn": AssignmentWithdrawnEvent,
    "status": StatusEvent,
    "work": WorkEvent,
    "handling_overrun": HandlingOverrunEvent,
}

# --------------------------------------------------------------------------------------------------
# The ops dashboard's stream (GET /v1/ops/dashboard/stream)
# --------------------------------------------------------------------------------------------------


class UnauthorizedEvent(Out):
    """``unauthorized``: the token expired while the stream was open; the stream ends."""

    detail: str


class UnavailableEvent(Out):
    """``unavailable``: the snapshot failed this time (database away, ownership lost); the stream goes on."""

    error: str = Field(description="the kind of failure")


DASHBOARD_STREAM_EVENTS: dict[str, type[BaseModel]] = {
    "snapshot": DashboardSnapshot,
    "unauthorized": UnauthorizedEvent,
    "unavailable": UnavailableEvent,
}


class EventStreamResponse(EventSourceResponse):
    """``EventSourceResponse`` that says its media type on the class, where FastAPI's OpenAPI reads it
    (the stream routes' 200 is then ``text/event-stream``, not ``application/json``)."""

    media_type = SSE_MEDIA_TYPE


class WrongStreamEvent(TypeError):
    """A payload that is not the model of its event name: a bug where the message is made."""


def checked(events: dict[str, type[BaseModel]], event: str, data: BaseModel) -> BaseModel:
    """``data`` if it is the model of ``event`` on the stream described by ``events``."""
    model = events.get(event)
    if model is None:
        raise WrongStreamEvent(f"no stream event {event!r}; declare its model in stream_events.py")
    if type(data) is not model:
        raise WrongStreamEvent(f"stream event {event!r} takes {model.__name__}, not {type(data).__name__}")
    return data


def sse_data(events: dict[str, type[BaseModel]], event: str, data: BaseModel) -> dict[str, str]:
    """One SSE message for ``sse_starlette``: the event name and its payload as JSON."""
    return {"event": event, "data": checked(events, event, data).model_dump_json()}


def sse_responses(events: dict[str, type[BaseModel]], description: str) -> dict[int | str, dict[str, Any]]:
    """The 200 answer of a stream route: ``text/event-stream`` whose ``data`` is one of the events'
    models (so they land in components/schemas), and ``x-sse-events``: event name → schema."""
    models = list(dict.fromkeys(events.values()))
    return {
        200: {
            "description": description,
            "model": functools.reduce(operator.or_, models),
            SSE_EVENTS_EXTENSION: {
                name: {"$ref": f"#/components/schemas/{model.__name__}"} for name, model in events.items()
            },
        }
    }
