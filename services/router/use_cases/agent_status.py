"""An agent's own status: available, on a break, or offline. Chosen by the agent (or an admin); the router
sets it only to put an agent who let offers pass on a break.

What the agent is doing (offered, on a contact, wrap-up) is apart from it: ``settle_work.py``. Every
change of status goes through :func:`set_status`, so the database, the engine, the event and the agent's
stream agree; leaving work (break, offline) hands the agent's open offers back.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlalchemy import update

from services.router import metrics
from services.router.agent_work import routable_status
from services.router.errors import Invalid
from services.router.rows import agent_row, to_datetime
from services.router.store import OfferState, agents
from services.router.stream_events import StatusEvent
from services.router.unit_of_work import UnitOfWork
from services.router.use_cases.offers import close_offer
from services.router.use_cases.settle_work import end_wrap_up
from shared.events import CHOSEN_STATUSES, AgentStatus, AgentStatusChanged

if TYPE_CHECKING:
    from services.router.service import RouterService

MISSED_OFFERS = "missed_offers"  # status reason: too many offers in a row went unanswered
NOT_CHOSEN = (
    "busy and wrap_up are not chosen: they are the router's view of your work (see activity); "
    "choose available, break or offline"
)


async def change_status(
    router: RouterService, agent_id: str, status: AgentStatus, reason: str | None
) -> dict[str, Any]:
    """An agent (or the admin) changes its status. Saying ``available`` in wrap-up ends the wrap-up:
    "I am ready for the next contact"."""
    if status not in CHOSEN_STATUSES:
        raise Invalid(NOT_CHOSEN)

    async def change(tx: UnitOfWork) -> None:
        row = await agent_row(tx.session, agent_id)
        await router.domains.require(row.site)
        if status is AgentStatus.AVAILABLE:
            await end_wrap_up(router, tx, agent_id)
        if row.status == status.value and reason is None and not row.missed_offers:
            return  # said again (clients do after every contact): no write, no event, no stream message
        await set_status(router, tx, row, status, reason or "requested")

    await router.writes.run(change)
    router.wake()
    return await router.views.get_agent(agent_id)


async def set_status(router: RouterService, tx: UnitOfWork, row: Any, status: AgentStatus, reason: str) -> None:
    """Change an agent's status: database, engine, event, stream; leaving work releases offers."""
    if status not in CHOSEN_STATUSES:
        raise ValueError(f"{status} is not a status an agent chooses")
    previous = AgentStatus(row.status)
    if previous is status and row.status_reason == reason:
        return
    values: dict[str, Any] = {
        "status": status.value,
        "status_since": tx.now,
        "status_reason": reason,
        "updated_at": tx.now,
    }
    if status is AgentStatus.AVAILABLE:
        values["missed_offers"] = 0
    await tx.session.execute(update(agents).where(agents.c.agent_id == row.agent_id).values(**values))
    wrapping = router.work.wrapping(row.agent_id)
    router.engine.set_status(row.agent_id, routable_status(status, wrapping=wrapping), tx.now)
    await tx.emit(
        AgentStatusChanged(
            tenant_id=router.tenant_id,
            agent_id=row.agent_id,
            site=row.site,
            status=status,
            previous=previous,
            reason=reason,
            at=to_datetime(tx.now),
        )
    )
    metrics.AGENT_STATUS_CHANGES.labels(status.value).inc()
    tx.push(
        row.agent_id,
        "status",
        StatusEvent(agent_id=row.agent_id, status=status, previous=previous, reason=reason),
    )
    if status is not AgentStatus.AVAILABLE:
        for offer in router.open_offers.of(row.agent_id):
            await close_offer(router, tx, offer, OfferState.DECLINED, reason=f"agent_{status.value}")
