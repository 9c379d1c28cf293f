"""An offer nobody answered in time: the contact goes to the next agent and the agent is counted a miss;
``max_missed_offers`` in a row put it on break (a decline is an answer, not a miss).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import structlog
from sqlalchemy import update

from services.router.open_offers import PendingOffer
from services.router.rows import agent_row
from services.router.store import OfferState, agents
from services.router.unit_of_work import UnitOfWork
from services.router.use_cases.agent_status import MISSED_OFFERS, set_status
from services.router.use_cases.offers import close_offer
from shared.events import AgentStatus

if TYPE_CHECKING:
    from services.router.service import RouterService

log = structlog.get_logger(__name__)


async def time_out(router: RouterService, tx: UnitOfWork, offer: PendingOffer) -> None:
    await close_offer(router, tx, offer, OfferState.TIMED_OUT, reason="no_answer")
    row = await agent_row(tx.session, offer.agent_id)
    missed = row.missed_offers + 1
    await tx.session.execute(update(agents).where(agents.c.agent_id == offer.agent_id).values(missed_offers=missed))
    if missed >= router.strategy.max_missed_offers and row.status == AgentStatus.AVAILABLE:
        row = await agent_row(tx.session, offer.agent_id)
        await set_status(router, tx, row, AgentStatus.BREAK, MISSED_OFFERS)
        log.info("router.agent_to_break", agent_id=offer.agent_id, missed=missed)
