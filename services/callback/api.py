"""HTTP API of the callback service, under ``/v1``.

* ``POST /v1/callbacks``: create a commitment (or merge into the customer's open one). 201 created,
  200 merged or the same request again (``Idempotency-Key`` header or ``request_id`` field).
* ``GET /v1/callbacks``: list and filter (status, date, agent, customer, site, at_risk).
* ``GET /v1/callbacks/{id}``: one commitment with its attempt history.
* ``POST /v1/callbacks/{id}/attempts``: record an attempt (``Idempotency-Key`` dedupes retries).
* ``GET /v1/summary/today``: promised, fulfilled, open, at risk, breached, closed, same-day rate.

Every route needs a bearer token (``shared.auth``). Customer data (the list, the summary) needs a
supervisor or the admin; an agent sees and records attempts only on callbacks that are its own work
(promised by, released to, accepted or fulfilled by it) and may not set scheduling fields
(``virtual_start_time``, a customer tier above standard): those come from trusted callers only (403).
"""

from __future__ import annotations

import math
import uuid
from datetime import date
from typing import Annotated

from fastapi import APIRouter, Depends, Header, HTTPException, Query, Request, Response, status

from services.callback.errors import AttemptBeforeRequest, AttemptTooSoon, CommitmentClosed, CommitmentNotFound
from services.callback.lifecycle import NoCallbackPossible, Status
from services.callback.schemas import (
    COMMON_ERRORS,
    AttemptConflict,
    AttemptCreate,
    AttemptOut,
    CallbackCreate,
    CallbackDetail,
    CallbackOut,
    Problem,
    SummaryCounts,
    SummaryOut,
    ValidationProblem,
)
from services.callback.service import CallbackService
from services.callback.store import Commitment
from services.callback.views import ListFilter
from shared.auth import Authenticated, Principal, Trusted, forbidden
from shared.events import CallbackRequested, Tier, TimeWindow, deterministic_id

router = APIRouter(prefix="/v1", tags=["callbacks"], responses=COMMON_ERRORS)


async def get_service(request: Request) -> CallbackService:
    """``async``: FastAPI runs a plain ``def`` dependency in its thread pool, a thread hop per request."""
    return request.app.state.service  # type: ignore[no-any-return]


ServiceDep = Annotated[CallbackService, Depends(get_service)]


# --------------------------------------------------------------------------------------------------
# Who may do what (beyond the scope checks of shared.auth)
# --------------------------------------------------------------------------------------------------


def _agents_of(c: Commitment) -> set[str]:
    """The agents whose work a commitment is."""
    ids = (c.promised_by_agent_id, c.released_to_agent_id, c.accepted_by_agent_id, c.fulfilled_by_agent_id)
    return {i for i in ids if i}


def check_untrusted_create(who: Principal, body: CallbackCreate) -> None:
    """Scheduling fields move a customer ahead of others: only a supervisor or the admin may set them.
    Refused (403), not silently dropped, so a client learns its request was not what it asked for."""
    if who.is_trusted:
        return
    if body.virtual_start_time is not None or body.customer.tier is not Tier.STANDARD:
        raise forbidden("scheduling fields (virtual_start_time, customer.tier) need a supervisor or admin token")
    if body.promised_by_agent_id not in (None, who.agent_id):
        raise forbidden("an agent promises callbacks only in its own name")


# --------------------------------------------------------------------------------------------------
# Routes
# --------------------------------------------------------------------------------------------------


@router.post(
    "/callbacks",
    response_model=CallbackOut,
    status_code=status.HTTP_201_CREATED,
    summary="Create a callback commitment (merges into the customer's open one)",
    responses={
        200: {"model": CallbackOut, "description": "merged into an open commitment, or the same request again"},
        422: {
            "model": ValidationProblem,
            "description": "invalid body, a site nobody configured, or no callback possible within the bound",
        },
    },
)
async def create_callback(
    body: CallbackCreate,
    service: ServiceDep,
    response: Response,
    who: Authenticated,
    idempotency_key: Annotated[str | None, Header(max_length=200)] = None,
) -> CallbackOut:
    """Any token. An agent may promise only in its own name and may not set scheduling fields."""
    check_untrusted_create(who, body)
    if not service.calendars.is_configured(body.site):
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            [{"loc": ["body", "site"], "msg": service.calendars.unknown_site_error(body.site), "type": "value_error"}],
        )
    now = service.clock.now()
    key = body.request_id or idempotency_key
    request_id = deterministic_id("api", body.tenant_id, key) if key else str(uuid.uuid4())
    req = CallbackRequested(
        tenant_id=body.tenant_id,
        request_id=request_id,
        customer=body.customer.to_customer(),
        site=body.site,
        origin=body.origin,
        contact_id=body.contact_id,
        intent=body.intent,
        channel=body.channel,
        preferred_window=TimeWindow(start=body.preferred_window.start, end=body.preferred_window.end)
        if body.preferred_window
        else None,
        promised_by_agent_id=body.promised_by_agent_id,
        reason=body.reason,
        virtual_start_time=body.virtual_start_time,
        requested_at=now,
    )
    try:
        commitment, created = await service.request(req, accepted=False)
    except NoCallbackPossible as exc:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            [
                {
                    "loc": ["body", "customer", "timezone"],
                    "msg": "no callback possible: no callable moment (site open and within the customer's "
                    f"calling hours) within the promise bound; {exc}",
                    "type": "no_callback_possible",
                    "next_open": exc.refusal.next_open.isoformat() if exc.refusal.next_open else None,
                }
            ],
        ) from None
    if not created:
        response.status_code = status.HTTP_200_OK
    return CallbackOut.of(commitment)


@router.get("/callbacks", response_model=list[CallbackOut], summary="List and filter commitments (supervisor or admin)")
async def list_callbacks(
    service: ServiceDep,
    _: Trusted,
    status_: Annotated[list[Status] | None, Query(alias="status")] = None,
    day: Annotated[date | None, Query(alias="date", description="site-local deadline date")] = None,
    agent_id: Annotated[
        str | None, Query(max_length=100, description="promised by, offered to, accepted or fulfilled by")
    ] = None,
    customer_id: Annotated[str | None, Query(max_length=200)] = None,
    site: Annotated[str | None, Query(max_length=100)] = None,
    at_risk: bool | None = None,
    tenant_id: Annotated[str | None, Query(max_length=100)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=2**31 - 1)] = 0,  # within every database's integer
) -> list[CallbackOut]:
    rows = await service.views.list(
        ListFilter(
            status=[s.value for s in status_ or []],
            day=day,
            agent_id=agent_id,
            customer_id=customer_id,
            site=site,
            at_risk=at_risk,
            tenant_id=tenant_id,
            limit=limit,
            offset=offset,
        )
    )
    return [CallbackOut.of(c) for c in rows]


async def _commitment(callback_id: str, service: CallbackService) -> Commitment:
    try:
        return await service.views.get(callback_id)
    except CommitmentNotFound:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no callback {callback_id}") from None


def _detail(c: Commitment) -> CallbackDetail:
    return CallbackDetail(
        **CallbackOut.of(c).model_dump(), attempt_history=[AttemptOut.of(a) for a in c.attempt_history]
    )


@router.get(
    "/callbacks/{callback_id}",
    response_model=CallbackDetail,
    summary="One commitment with its attempts (supervisor, admin, or the agent whose work it is)",
    responses={404: {"model": Problem, "description": "no such callback"}},
)
async def get_callback(callback_id: str, service: ServiceDep, who: Authenticated) -> CallbackDetail:
    c = await _commitment(callback_id, service)
    if not who.is_trusted and who.agent_id not in _agents_of(c):
        raise forbidden("an agent sees only the callbacks that are its own work")
    return _detail(c)


@router.post(
    "/callbacks/{callback_id}/attempts",
    response_model=CallbackDetail,
    summary="Record an attempt (reached, no_answer, busy, voicemail, wrong_number)",
    responses={
        404: {"model": Problem, "description": "no such callback"},
        409: {
            "model": AttemptConflict,
            "description": "the callback has ended, or the attempt is inside the retry spacing (`retry_at`)",
        },
        422: {"model": ValidationProblem, "description": "invalid body, or an attempt dated before the request"},
    },
)
async def record_attempt(
    callback_id: str,
    body: AttemptCreate,
    service: ServiceDep,
    who: Authenticated,
    idempotency_key: Annotated[str | None, Header(max_length=200)] = None,
) -> CallbackDetail:
    """Supervisor or admin; an agent only on a callback released to or accepted by it, in its own name."""
    if not who.is_trusted:
        c = await _commitment(callback_id, service)
        if who.agent_id not in (c.released_to_agent_id, c.accepted_by_agent_id):
            raise forbidden("an agent records attempts only on the callbacks it is handling")
        if body.agent_id not in (None, who.agent_id):
            raise forbidden("an agent records attempts only in its own name")
        body = body.model_copy(update={"agent_id": who.agent_id})
    try:
        await service.record_attempt(
            callback_id,
            body.result,
            agent_id=body.agent_id,
            notes=body.notes,
            at=body.at,
            attempt_key=deterministic_id("api-attempt", callback_id, idempotency_key) if idempotency_key else None,
        )
    except CommitmentNotFound:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no callback {callback_id}") from None
    except CommitmentClosed as exc:
        raise HTTPException(
            status.HTTP_409_CONFLICT,
            {"msg": str(exc), "reason": "callback_closed", "status": exc.status, "close_reason": exc.close_reason},
        ) from None
    except AttemptTooSoon as exc:
        wait = max(1, math.ceil((exc.retry_at - service.clock.now()).total_seconds()))
        raise HTTPException(
            status.HTTP_409_CONFLICT,
            {"msg": str(exc), "reason": "retry_spacing", "retry_at": exc.retry_at.isoformat()},
            headers={"Retry-After": str(wait)},
        ) from None
    except AttemptBeforeRequest as exc:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            [{"loc": ["body", "at"], "msg": str(exc), "type": "value_error"}],
        ) from None
    return _detail(await _commitment(callback_id, service))


@router.get(
    "/summary/today", response_model=SummaryOut, summary="Today's promises per site and overall (supervisor or admin)"
)
async def summary_today(service: ServiceDep, _: Trusted) -> SummaryOut:
    s = await service.views.summary_today()
    return SummaryOut(at=s.at, overall=SummaryCounts.of(s.overall), sites=[SummaryCounts.of(x) for x in s.sites])
