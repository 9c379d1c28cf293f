"""Today's callback promises for the ops dashboard, read from the callback service through the router.

Why a small proxy and not CORS: the dashboard page's policy is ``connect-src 'self'``, so a same-origin
call keeps that policy, keeps the token on one origin, needs no allowed-origins list on the callback
service, and works when only the router is published to browsers (the callback service may stay on the
internal network). The router forwards the *viewer's own* bearer token, so the callback service still
decides who may see customer data; the router adds no privilege of its own.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import httpx
import structlog
from fastapi import APIRouter, Header, HTTPException, Request, status
from pydantic import BaseModel, Field

from services.router.api.deps import TrustedDep
from services.router.responses import COMMON_ERRORS, Problem

log = structlog.get_logger(__name__)
router = APIRouter(tags=["dashboard"])
OPEN_STATUSES = ("pending", "released", "in_progress")
TIMEOUT = httpx.Timeout(3.0)


class PromiseCounts(BaseModel):
    promised: int
    fulfilled: int
    open: int
    at_risk: int
    breached: int
    closed: int
    exhausted: int
    same_day_fulfilment_rate: float | None = Field(description="fulfilled / promised; null if none promised")


class AtRiskPromise(BaseModel):
    id: str
    site: str
    customer_name: str | None
    customer_id: str
    status: str
    deadline: datetime
    attempts: int
    last_result: str | None
    promise_text: str


class PromisesToday(BaseModel):
    at: datetime
    overall: PromiseCounts
    at_risk: list[AtRiskPromise] = Field(description="open promises flagged at risk, earliest deadline first")


def _client(request: Request) -> httpx.AsyncClient:
    """One pooled client per app (tests may put their own on ``app.state.callback_client``)."""
    client: httpx.AsyncClient | None = getattr(request.app.state, "callback_client", None)
    if client is None:
        base = request.app.state.settings.callback_url.rstrip("/")
        client = request.app.state.callback_client = httpx.AsyncClient(base_url=base, timeout=TIMEOUT)
    return client


async def _get(client: httpx.AsyncClient, path: str, auth: str, params: Any = None) -> Any:
    try:
        r = await client.get(path, params=params, headers={"Authorization": auth})
    except httpx.HTTPError as exc:
        log.warning("router.callback_unreachable", error=type(exc).__name__, base=str(client.base_url))
        raise HTTPException(
            status.HTTP_502_BAD_GATEWAY,
            f"the callback service at {client.base_url} did not answer ({type(exc).__name__}); "
            "check SWITCHBOARD_ROUTER_CALLBACK_URL",
        ) from None
    if r.status_code in (401, 403):
        raise HTTPException(r.status_code, "the callback service refused this token")
    if r.status_code != 200:
        raise HTTPException(status.HTTP_502_BAD_GATEWAY, f"the callback service answered {r.status_code}")
    return r.json()


@router.get(
    "/v1/ops/promises",
    response_model=PromisesToday,
    summary="Today's callback promises and the at-risk list, from the callback service (supervisor or admin)",
    responses={
        **COMMON_ERRORS,
        502: {"model": Problem, "description": "the callback service is unreachable or failed"},
    },
)
async def promises_today(request: Request, _: TrustedDep, authorization: Annotated[str, Header()]) -> PromisesToday:
    client = _client(request)
    summary = await _get(client, "/v1/summary/today", authorization)
    risky = await _get(
        client, "/v1/callbacks", authorization, params={"at_risk": "true", "status": OPEN_STATUSES, "limit": 50}
    )
    items = [
        AtRiskPromise(
            id=c["id"],
            site=c["site"],
            customer_name=c["customer"].get("name"),
            customer_id=c["customer"]["id"],
            status=c["status"],
            deadline=c["deadline"],
            attempts=c["attempts"],
            last_result=c["last_result"],
            promise_text=c["promise_text"],
        )
        for c in risky
    ]
    items.sort(key=lambda p: p.deadline)
    return PromisesToday(at=summary["at"], overall=PromiseCounts.model_validate(summary["overall"]), at_risk=items)
