"""Agents: registration (admin), profile and status, the agent's own offers and assignments, its stream."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, status

from services.router.api.deps import (
    AdminDep,
    PrincipalDep,
    ServiceDep,
    TrustedDep,
    check_agent,
    check_may_see,
    get_stream_principal,
)
from services.router.auth import Principal
from services.router.responses import (
    COMMON_ERRORS,
    NOT_FOUND,
    AgentList,
    AgentOut,
    AgentRegistered,
    AgentToken,
    AssignmentList,
    OpenOfferList,
    as_json,
    errors,
)
from services.router.schemas import AgentCreate, AgentProfileIn, StatusChange
from services.router.stream_events import AGENT_STREAM_EVENTS, EventStreamResponse, HelloEvent, sse_data, sse_responses

router = APIRouter(prefix="/v1/agents", tags=["agents"], responses=COMMON_ERRORS)


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=AgentRegistered,
    summary="Register an agent (admin)",
    responses=errors(e409="an agent with this id exists"),
)
async def register_agent(body: AgentCreate, service: ServiceDep, _: AdminDep) -> dict[str, Any]:
    """Returns the agent and its bearer token. The token is shown only here; store it in the client."""
    agent, token = await service.register_agent(body.agent_id, body.profile(), body.status.as_status())
    return {**agent, "token": token}


@router.get("", response_model=AgentList, summary="List agents (supervisor or admin)")
async def list_agents(service: ServiceDep, _: TrustedDep) -> dict[str, Any]:
    items = await service.views.list_agents()
    return {"items": items, "count": len(items)}


@router.get(
    "/{agent_id}",
    response_model=AgentOut,
    summary="An agent (the agent itself, a supervisor or admin)",
    responses=NOT_FOUND,
)
async def get_agent(agent_id: str, service: ServiceDep, who: PrincipalDep) -> dict[str, Any]:
    check_may_see(who, agent_id)
    return await service.views.get_agent(agent_id)


@router.put(
    "/{agent_id}",
    response_model=AgentOut,
    summary="Update an agent's profile (admin)",
    responses={**NOT_FOUND, **errors(e409="a change of site while the agent has offers or assignments")},
)
async def update_agent(agent_id: str, body: AgentProfileIn, service: ServiceDep, _: AdminDep) -> dict[str, Any]:
    return await service.update_agent(agent_id, body.profile())


@router.post(
    "/{agent_id}/token",
    response_model=AgentToken,
    summary="Issue a new token for an agent (admin); the old one stops working",
    responses=NOT_FOUND,
)
async def rotate_token(agent_id: str, service: ServiceDep, _: AdminDep) -> dict[str, str]:
    return {"agent_id": agent_id, "token": await service.rotate_token(agent_id)}


@router.put(
    "/{agent_id}/status",
    response_model=AgentOut,
    summary="Change the agent's own status: available, break, offline",
    responses=NOT_FOUND,
)
async def change_status(agent_id: str, body: StatusChange, service: ServiceDep, who: PrincipalDep) -> dict[str, Any]:
    """The agent's own choice only: ``busy`` and ``wrap_up`` answer 422, they are the router's view of the
    work (the agent's ``activity``). Saying ``available`` in wrap-up ends it. Going to break or offline
    withdraws open offers (they go to the next agent); work in progress stays assigned until completed.
    The agent itself, a supervisor or the admin."""
    check_may_see(who, agent_id)
    return await service.change_status(agent_id, body.status.as_status(), body.reason)


@router.get("/{agent_id}/offers", response_model=OpenOfferList, summary="The agent's open offers")
async def agent_offers(agent_id: str, service: ServiceDep, who: PrincipalDep) -> dict[str, Any]:
    check_may_see(who, agent_id)
    items = await service.views.agent_offers(agent_id)
    return {"items": items, "count": len(items)}


@router.get("/{agent_id}/assignments", response_model=AssignmentList, summary="The agent's contacts in progress")
async def agent_assignments(agent_id: str, service: ServiceDep, who: PrincipalDep) -> dict[str, Any]:
    check_may_see(who, agent_id)
    items = await service.views.agent_assignments(agent_id)
    return {"items": items, "count": len(items)}


@router.get(
    "/{agent_id}/stream",
    summary="Server-Sent Events: offers and assignments in real time",
    response_class=EventStreamResponse,
    responses={
        **sse_responses(
            AGENT_STREAM_EVENTS,
            "An event stream: each event's `data` is the JSON of its model (`x-sse-events`: event name → schema); "
            "comments as heartbeats.",
        ),
        **as_json({**COMMON_ERRORS, **NOT_FOUND}),
    },
)
async def stream(
    agent_id: str,
    request: Request,
    service: ServiceDep,
    who: Annotated[Principal, Depends(get_stream_principal)],
) -> EventStreamResponse:
    """Events: ``hello`` (snapshot: agent, open offers, assignments), ``offer``, ``offer_closed``,
    ``assignment``, ``assignment_completed``, ``assignment_withdrawn``, ``status`` (the agent's own choice),
    ``work`` (the router's view of the work), ``handling_overrun``; comments as heartbeats. An open stream is the
    agent's presence: disconnected longer than the grace period, it gets no offers. After a reconnect the
    ``hello`` snapshot replaces whatever the client missed."""
    check_agent(who, agent_id)
    await service.views.get_agent(agent_id)  # 404 before the stream starts
    queue = service.hub.open(agent_id)  # subscribe before the snapshot: nothing falls in between
    service.stream_opened(agent_id)

    async def events() -> AsyncIterator[dict[str, str]]:
        try:
            hello = HelloEvent.model_validate(
                {
                    "agent": await service.views.get_agent(agent_id),
                    "offers": await service.views.agent_offers(agent_id),
                    "assignments": await service.views.agent_assignments(agent_id),
                }
            )
            yield sse_data(AGENT_STREAM_EVENTS, "hello", hello)
            while True:
                message = await queue.get()
                if message is None:
                    return
                yield sse_data(AGENT_STREAM_EVENTS, message.event, message.data)
        finally:
            service.hub.close(agent_id, queue)
            service.stream_closed(agent_id)

    return EventStreamResponse(events(), ping=service.settings.heartbeat_seconds)
