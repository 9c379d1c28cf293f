"""Agent presence: what the callback service knows of agents, and which of them count as free.

Everything the service decides from an agent's status is here, and only here: the last status each
agent reported (``agent.status_changed``, an older one arriving late never wins), the free agents of a
routing domain (the release capacity, see ``release_due``), and what to do with a callback promised by
an agent in a given status (keep it for them, or hand it to the pool).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import TYPE_CHECKING

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from services.callback.store import AgentPresence
from services.callback.unit_of_work import UnitOfWork
from shared.events import AgentStatus, AgentStatusChanged, Envelope

if TYPE_CHECKING:
    from services.callback.service import CallbackService


async def on_agent_status_changed(callbacks: CallbackService, tx: UnitOfWork, env: Envelope) -> None:
    assert isinstance(env.payload, AgentStatusChanged)
    await record_status(tx.session, env.payload)


async def record_status(s: AsyncSession, ev: AgentStatusChanged) -> bool:
    """Remember the agent's latest status; True when it changed (a release may now be possible)."""
    row = await s.get(AgentPresence, (ev.tenant_id, ev.agent_id), with_for_update=True)
    if row is None:
        s.add(
            AgentPresence(
                tenant_id=ev.tenant_id,
                agent_id=ev.agent_id,
                site=ev.site,
                status=ev.status.value,
                changed_at=ev.at,
            )
        )
        return True
    if ev.at < row.changed_at:  # an older status arriving late must not win
        return False
    row.site, row.status, row.changed_at = ev.site, ev.status.value, ev.at
    return True


async def presence_in(s: AsyncSession, tenant_id: str, site: str) -> dict[str, str]:
    """The last known status of every agent of a routing domain: agent id -> status."""
    rows = await s.execute(
        select(AgentPresence.agent_id, AgentPresence.status).where(
            AgentPresence.tenant_id == tenant_id, AgentPresence.site == site
        )
    )
    return {agent: status for agent, status in rows.all()}


def is_free(status: str | None) -> bool:
    """An agent who could take a callback now."""
    return status == AgentStatus.AVAILABLE.value


def free_agents(presence: Mapping[str, str]) -> list[str]:
    """The agents who could take a callback now: the release capacity of their routing domain."""
    return [agent for agent, status in presence.items() if is_free(status)]


class ForPromisingAgent(enum.Enum):
    """What a release does with a callback while the agent who promised it still has it first."""

    OFFER = "offer"  # free now: released to that agent
    WAIT = "wait"  # busy or in wrap-up, free soon: kept for them until the fallback
    POOL = "pool"  # offline, on break or unknown: straight to the pool


def for_promising_agent(status: str | None) -> ForPromisingAgent:
    if is_free(status):
        return ForPromisingAgent.OFFER
    if status in (AgentStatus.BUSY.value, AgentStatus.WRAP_UP.value):
        return ForPromisingAgent.WAIT
    return ForPromisingAgent.POOL
