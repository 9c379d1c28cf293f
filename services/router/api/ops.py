"""Strategy (active version, reload) and operational statistics."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, HTTPException, Request
from sqlalchemy import select

from services.router.api.deps import AdminDep, PrincipalDep, ServiceDep, TrustedDep
from services.router.responses import COMMON_ERRORS, Stats, StrategyOut, StrategyRejected, StrategyReloaded
from services.router.schemas import OwnershipOut
from services.router.standby import serving
from services.router.store import leases
from services.router.strategy import StrategyError

router = APIRouter(prefix="/v1", tags=["operations"], responses=COMMON_ERRORS)


def _strategy_view(request: Request, admin: bool = True) -> dict[str, Any]:
    service = request.app.state.service
    strategy = service.strategy
    path = request.app.state.settings.strategy_path
    # Where the file lives on the server is the admin's business; an agent sees only its name.
    source = (str(path) if admin else path.name) if path else "default"
    return {
        "version": strategy.version,
        "description": strategy.description,
        "source": source,
        "tie_break": strategy.tie_break,
        "offer_timeout_seconds": service.offer_timeout,
        "max_missed_offers": strategy.max_missed_offers,
        "strategy": strategy.model_dump(mode="json"),
    }


@router.get("/strategy", response_model=StrategyOut, summary="The active routing strategy (any token)")
async def get_strategy(request: Request, who: PrincipalDep) -> dict[str, Any]:
    return _strategy_view(request, admin=who.is_admin)


@router.post(
    "/strategy/reload",
    response_model=StrategyReloaded,
    summary="Reload the strategy file without a restart (admin)",
    responses={422: {"model": StrategyRejected, "description": "the file is invalid; the active strategy stays"}},
)
async def reload_strategy(request: Request, service: ServiceDep, _: AdminDep) -> dict[str, Any]:
    """422 with the validation errors if the file is invalid; the active strategy then stays."""
    previous = service.strategy.version
    try:
        await service.reload_strategy(request.app.state.settings.strategy_path)
    except StrategyError as exc:
        raise HTTPException(
            422,
            detail={"message": str(exc), "active_version": previous},
        ) from exc
    return {**_strategy_view(request), "previous_version": previous}


@router.get("/stats", response_model=Stats, summary="Live operational statistics (supervisor or admin)")
async def get_stats(service: ServiceDep, _: TrustedDep) -> dict[str, Any]:
    """Waiting per site/channel and oldest wait, agents by status, offers outstanding, service level per
    channel against its target and abandonment over the recent window, sales share, goodwill spent."""
    return await service.views.stats()


@router.get(
    "/router/ownership",
    response_model=OwnershipOut,
    summary="Which routing state this instance owns, on owners and standbys alike (supervisor or admin)",
)
async def get_ownership(service: ServiceDep, _: TrustedDep) -> OwnershipOut:
    async with service.sessionmaker() as session:
        row = (
            await session.execute(
                select(leases.c.owner, leases.c.expires_at).where(leases.c.name == service.ownership.name)
            )
        ).first()
    serves = serving(service)
    return OwnershipOut(
        instance=service.ownership.owner,
        serving=serves,
        mode=service.settings.ownership,
        lease=service.ownership.name,
        lease_owner=row.owner if row else None,
        lease_expires_at=datetime.fromtimestamp(row.expires_at, UTC) if row else None,
        leases=sorted(service.ownership.names),
        partitions=sorted(service.domains.partitions) if not service.domains.whole else [],
        domains=service.domains.owned() if serves else [],
    )
