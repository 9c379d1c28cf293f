"""Dependencies shared by the API routers: the service and the caller's identity."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Request

from services.router.auth import Principal, bearer_token, forbidden, unauthorized
from services.router.service import RouterService


def get_service(request: Request) -> RouterService:
    return request.app.state.service  # type: ignore[no-any-return]


ServiceDep = Annotated[RouterService, Depends(get_service)]


async def _principal_for(token: str | None, request: Request) -> Principal:
    if token is None:
        raise unauthorized()
    admin_token: str = request.app.state.settings.admin_token
    if hmac.compare_digest(token.encode(), admin_token.encode()):
        return Principal(is_admin=True)
    agent_id = await get_service(request).agent_for_token(token)
    if agent_id is None:
        raise unauthorized()
    return Principal(is_admin=False, agent_id=agent_id)


async def get_principal(request: Request) -> Principal:
    return await _principal_for(bearer_token(request), request)


async def get_stream_principal(request: Request) -> Principal:
    """Streams also take ``?access_token=`` because browsers' EventSource cannot set headers."""
    return await _principal_for(bearer_token(request) or request.query_params.get("access_token"), request)


async def require_admin(principal: Annotated[Principal, Depends(get_principal)]) -> Principal:
    if not principal.is_admin:
        raise forbidden("this endpoint needs the admin token")
    return principal


PrincipalDep = Annotated[Principal, Depends(get_principal)]
AdminDep = Annotated[Principal, Depends(require_admin)]


def check_agent(principal: Principal, agent_id: str) -> None:
    if not principal.may_act_for(agent_id):
        raise forbidden("an agent may only see and act on its own work")
