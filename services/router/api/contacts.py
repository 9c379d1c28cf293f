"""Contacts: the queue, completing an assignment with its outcome, and the audit timeline."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from services.router.api.deps import PrincipalDep, ServiceDep
from services.router.schemas import CompleteIn

router = APIRouter(prefix="/v1", tags=["contacts"])


@router.get("/queue", summary="Waiting contacts in the order they will be served")
async def get_queue(service: ServiceDep) -> dict[str, Any]:
    items = await service.queue()
    return {"items": items, "count": len(items)}


@router.post("/contacts/{contact_id}/complete", summary="Complete an assignment with its outcome")
async def complete(contact_id: str, body: CompleteIn, service: ServiceDep, who: PrincipalDep) -> dict[str, Any]:
    """Feeds the strategy counters (sales share, goodwill). ``callback_promised`` emits
    ``callback.requested``; for a callback assignment ``attempt_result`` is required and emits
    ``callback.attempted``. The agent goes to wrap-up for the channel's configured seconds."""
    return await service.complete(contact_id, who, body.outcome(), body.attempt_result)


@router.get("/contacts/{contact_id}/timeline", summary="Audit trail of one contact")
async def get_timeline(contact_id: str, service: ServiceDep, who: PrincipalDep) -> dict[str, Any]:
    """received, queued, offered (to whom, rule, score, explanation), declined / timed out, accepted,
    completed. Admin, or an agent the contact was offered to."""
    return await service.timeline(contact_id, who)
