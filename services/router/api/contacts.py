"""Contacts: the queue, completing an assignment with its outcome, and the audit timeline."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request

from services.router.api.deps import PrincipalDep, ReadSideDep, ServiceDep, TrustedDep
from services.router.forwarding import FORWARDED_BY
from services.router.responses import COMMON_ERRORS, INVALID, Completed, QueueOut, Timeline, errors
from services.router.schemas import CompleteIn
from shared.events import Channel

router = APIRouter(prefix="/v1", tags=["contacts"], responses=COMMON_ERRORS)


@router.get(
    "/queue",
    response_model=QueueOut,
    summary="Waiting contacts in the order they will be served (supervisor or admin)",
)
async def get_queue(
    request: Request,
    read_side: ReadSideDep,
    _: TrustedDep,
    limit: Annotated[int, Query(ge=1, le=10_000, description="At most this many, best first")] = 1000,
    site: Annotated[str | None, Query(max_length=100)] = None,
    channel: Channel | None = None,
) -> dict[str, Any]:
    """Each with its current priority (aged by waiting time, tier, intent) and waited seconds.
    ``total`` counts every waiting contact (all sites and channels). With several active routers, every
    owner's line (``queue_across_routers.py``); asked by another router, this router's own."""
    local = FORWARDED_BY.decode() in request.headers
    items, total = await read_side.queue(limit=limit, site=site, channel=channel, local=local)
    return {"items": items, "count": len(items), "total": total}


@router.post(
    "/contacts/{contact_id}/complete",
    response_model=Completed,
    summary="Complete an assignment with its outcome",
    responses={
        **errors(e404="no such contact", e409="the contact is not assigned (nothing to complete)"),
        **INVALID("invalid body, or attempt_result missing for a callback / given for anything else"),
    },
)
async def complete(contact_id: str, body: CompleteIn, service: ServiceDep, who: PrincipalDep) -> dict[str, Any]:
    """Feeds the strategy counters (sales share, goodwill). ``callback_promised`` emits
    ``callback.requested``; for a callback assignment ``attempt_result`` is required and emits
    ``callback.attempted``. The agent goes to wrap-up for the channel's configured seconds."""
    return await service.complete(contact_id, who, body.outcome(), body.attempt_result)


@router.get(
    "/contacts/{contact_id}/timeline",
    response_model=Timeline,
    summary="Audit trail of one contact (supervisor or admin)",
    responses=errors(e404="no such contact"),
)
async def get_timeline(contact_id: str, service: ServiceDep, _: TrustedDep) -> dict[str, Any]:
    """received, queued, offered (to whom, rule, score, explanation), declined / timed out, accepted,
    completed. Customer data (who called, what was promised, every decision): a supervisor or the admin
    only; agents see their own offers and assignments on their stream and in ``/v1/agents/{id}/...``."""
    return await service.views.timeline(contact_id)
