"""Dependencies shared by the API routers: the service and the caller's identity (``shared.auth``)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials

from services.router.queue_across_routers import QueueAcrossRouters
from services.router.service import RouterService
from shared.auth import AdminOnly, Authenticated, Principal, Trusted, authenticator_of, bearer_scheme, forbidden


async def get_service(request: Request) -> RouterService:
    """``async``: FastAPI runs a plain ``def`` dependency in its thread pool, a thread hop per request."""
    return request.app.state.service  # type: ignore[no-any-return]


ServiceDep = Annotated[RouterService, Depends(get_service)]


async def get_read_side(request: Request) -> QueueAcrossRouters:
    """The views with the queue of every domain (several active routers: the other owners' lines too)."""
    return request.app.state.read_side  # type: ignore[no-any-return]


ReadSideDep = Annotated[QueueAcrossRouters, Depends(get_read_side)]
PrincipalDep = Authenticated
TrustedDep = Trusted
AdminDep = AdminOnly


async def get_stream_principal(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)]
) -> Principal:
    """Streams also take ``?access_token=`` because browsers' EventSource cannot set headers."""
    token = credentials.credentials if credentials else request.query_params.get("access_token")
    return await authenticator_of(request).authenticate(token)


def check_agent(principal: Principal, agent_id: str) -> None:
    """Act on an agent's work: the agent itself or the admin."""
    if not principal.may_act_for(agent_id):
        raise forbidden("an agent may only see and act on its own work")


def check_may_see(principal: Principal, agent_id: str) -> None:
    """Read an agent's work: the agent itself, a supervisor or the admin."""
    if not principal.may_see(agent_id):
        raise forbidden("an agent may only see and act on its own work")
