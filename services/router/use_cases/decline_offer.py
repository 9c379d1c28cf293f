"""An agent declines an offer: the contact goes back to its place in line and on to the next agent, and
the decliner is skipped for it a while. A decline is an answer, so the run of missed offers starts over.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlalchemy import update

from services.router.auth import Principal
from services.router.errors import Conflict, NotOwnedHere
from services.router.rows import offer_for
from services.router.store import OfferState, agents
from services.router.unit_of_work import UnitOfWork
from services.router.use_cases.offers import close_offer
from services.router.views import offer_view

if TYPE_CHECKING:
    from services.router.service import RouterService


async def decline(router: RouterService, offer_id: str, who: Principal, reason: str | None) -> dict[str, Any]:
    async def decline(tx: UnitOfWork) -> dict[str, Any]:
        row = await offer_for(tx.session, offer_id, who)
        pending = router.open_offers.get(offer_id)
        if pending is None and row.state == OfferState.PENDING and not router.domains.whole:
            raise NotOwnedHere("this offer's routing domain is owned by another router now; retry")
        if row.state != OfferState.PENDING or pending is None:
            raise Conflict(f"offer is {row.state}, it can no longer be declined")
        await close_offer(router, tx, pending, OfferState.DECLINED, reason=reason or "declined")
        await tx.session.execute(update(agents).where(agents.c.agent_id == pending.agent_id).values(missed_offers=0))
        return offer_view(await offer_for(tx.session, offer_id, who))

    view = await router.writes.run(decline)
    router.wake()
    return view
