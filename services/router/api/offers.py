"""Offers: an agent accepts or declines its own offers (leases that expire by themselves)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from services.router.api.deps import PrincipalDep, ServiceDep
from services.router.responses import COMMON_ERRORS, Assignment, OfferOut, errors
from services.router.schemas import DeclineIn

router = APIRouter(prefix="/v1/offers", tags=["offers"], responses=COMMON_ERRORS)
NO_OFFER = errors(e404="no such offer (or not this agent's)")


@router.get("/{offer_id}", response_model=OfferOut, summary="An offer (its agent or admin)", responses=NO_OFFER)
async def get_offer(offer_id: str, service: ServiceDep, who: PrincipalDep) -> dict[str, Any]:
    return await service.views.get_offer(offer_id, who)


@router.post(
    "/{offer_id}/accept",
    response_model=Assignment,
    summary="Accept an offer: the contact becomes your assignment",
    responses={**NO_OFFER, **errors(e409="the offer was already answered, withdrawn or has expired")},
)
async def accept(offer_id: str, service: ServiceDep, who: PrincipalDep) -> dict[str, Any]:
    """409 if the offer was already answered, withdrawn or has expired (it went to the next agent)."""
    return await service.accept(offer_id, who)


@router.post(
    "/{offer_id}/decline",
    response_model=OfferOut,
    summary="Decline an offer: the contact goes to the next agent",
    responses={**NO_OFFER, **errors(e409="the offer was already answered, withdrawn or has expired")},
)
async def decline(
    offer_id: str, service: ServiceDep, who: PrincipalDep, body: DeclineIn | None = None
) -> dict[str, Any]:
    return await service.decline(offer_id, who, body.reason if body else None)
