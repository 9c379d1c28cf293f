"""An agent's status: chosen by the agent, or set by the router (busy on a contact, wrap-up after it,
break after missed offers).

Every change goes through :func:`set_status`, so the database, the engine, the event and the agent's
stream agree; leaving work (break, offline, a busy of its own) hands the agent's open offers back.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlalchemy import update

from services.router import metrics
from services.router.errors import Invalid
from services.router.rows import ON_CONTACT, agent_row, engine_status, to_datetime
from services.router.store import OfferState, agents
from services.router.unit_of_work import UnitOfWork
from services.router.use_cases.offers import close_offer
from shared.events import AgentStatus, AgentStatusChanged

if TYPE_CHECKING:
    from services.router.service import RouterService

MISSED_OFFERS = "missed_offers"  # status reason: too many offers in a row went unanswered


async def change_status(
    router: RouterService, agent_id: str, status: AgentStatus, reason: str | None
) -> dict[str, Any]:
    """An agent (or the admin) changes its status. ``wrap_up`` is only ever set by the router."""
    if status is AgentStatus.WRAP_UP:
        raise Invalid("wrap_up is set automatically after a contact; it cannot be chosen")

    async def change(tx: UnitOfWork) -> None:
        row = await agent_row(tx.session, agent_id)
        if status is AgentStatus.AVAILABLE and row.status == AgentStatus.BUSY and row.status_reason == ON_CONTACT:
            return  # already taking work
        if row.status == status.value and reason is None and not row.missed_offers:
            return  # said again (clients do after every contact): no write, no event, no stream message
        await set_status(router, tx, row, status, reason or "requested")

    await router.writes.run(change)
    router.wake()
    return await router.views.get_agent(agent_id)


async def set_status(
    router: RouterService,
    tx: UnitOfWork,
    row: Any,
    status: AgentStatus,
    reason: str,
    *,
    wrap_until: float | None = None,
) -> None:
    """Change an agent's status: database, engine, event, stream; leaving work releases offers."""
    previous = AgentStatus(row.status)
    if previous is status and row.status_reason == reason:
        return
    if status is AgentStatus.WRAP_UP and wrap_until is None:
        raise ValueError("wrap_up needs its end time")
    values: dict[str, Any] = {
        "status": status.value,
        "status_since": tx.now,
        "status_reason": reason,
        "wrap_up_until": wrap_until if status is AgentStatus.WRAP_UP else None,
        "updated_at": tx.now,
    }
    if status is AgentStatus.AVAILABLE:
        values["missed_offers"] = 0
    await tx.session.execute(update(agents).where(agents.c.agent_id == row.agent_id).values(**values))
    if status is AgentStatus.WRAP_UP:
        router.wrap_until[row.agent_id] = values["wrap_up_until"]
    else:
        router.wrap_until.pop(row.agent_id, None)
    router.engine.set_status(row.agent_id, engine_status(status.value, reason), tx.now)
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
        {
            "agent_id": row.agent_id,
            "status": status.value,
            "previous": previous.value,
            "reason": reason,
            "wrap_up_until": values["wrap_up_until"],
        },
    )
    if status in (AgentStatus.BREAK, AgentStatus.OFFLINE, AgentStatus.BUSY) and reason != ON_CONTACT:
        for offer in [o for o in router.open_offers.values() if o.agent_id == row.agent_id]:
            await close_offer(router, tx, offer, OfferState.DECLINED, reason=f"agent_{status.value}")
