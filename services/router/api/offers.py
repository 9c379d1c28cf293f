"""Offers: an agent accepts or declines its own offers (leases that expire by themselves)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from services.router.api.deps import PrincipalDep, ServiceDep
from services.router.schemas import DeclineIn

router = APIRouter(prefix="/v1/offers", tags=["offers"])


@router.get("/{offer_id}", summary="An offer (its agent or admin)")
async def get_offer(offer_id: str, service: ServiceDep, who: PrincipalDep) -> dict[str, Any]:
    return await service.views.get_offer(offer_id, who)


@router.post("/{offer_id}/accept", summary="Accept an offer: the contact becomes your assignment")
async def accept(offer_id: str, service: ServiceDep, who: PrincipalDep) -> dict[str, Any]:
    """409 if the offer was already answered, withdrawn or has expired (it went to the next agent)."""
    return await service.accept(offer_id, who)


@router.post("/{offer_id}/decline", summary="Decline an offer: the contact goes to the next agent")
async def decline(
    offer_id: str, service: ServiceDep, who: PrincipalDep, body: DeclineIn | None = None
) -> dict[str, Any]:
    return await service.decline(offer_id, who, body.reason if body else None)
