"""Agent presence: what the callback service knows of agents, and which of them count as free.

Everything the service decides from an agent's status is here, and only here. The router reports two
things apart: the agent's own status (``agent.status_changed``: available, break, offline) and its view
of their work (``agent.work_changed``: idle, offered, on_contact, wrap_up). A free agent is available
*and* idle: the release capacity of a routing domain counts them (``release_due``). A callback promised
by an agent who is available but working waits for them; on a break or offline it goes to the pool.
For each of the two, an older report arriving late never wins. Status events from before the two were
apart (``busy``, ``wrap_up``) read as available plus that work (``legacy_activity``).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from datetime import datetime
from typing import TYPE_CHECKING, NamedTuple

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from services.callback.store import AgentPresence
from services.callback.unit_of_work import UnitOfWork
from shared.events import (
    AgentActivity,
    AgentStatus,
    AgentStatusChanged,
    AgentWorkChanged,
    Envelope,
    legacy_activity,
)

if TYPE_CHECKING:
    from services.callback.service import CallbackService


class Presence(NamedTuple):
    status: str | None  # the agent's own choice; None: not heard yet
    activity: str | None  # the router's view of their work; None: not heard yet (idle)


async def on_agent_status_changed(callbacks: CallbackService, tx: UnitOfWork, env: Envelope) -> None:
    assert isinstance(env.payload, AgentStatusChanged)
    await record_status(tx.session, env.payload)


async def on_agent_work_changed(callbacks: CallbackService, tx: UnitOfWork, env: Envelope) -> None:
    assert isinstance(env.payload, AgentWorkChanged)
    await record_work(tx.session, env.payload)


async def _row(s: AsyncSession, tenant_id: str, agent_id: str, site: str, at: datetime) -> AgentPresence:
    row = await s.get(AgentPresence, (tenant_id, agent_id), with_for_update=True)
    if row is None:
        # Heard of by its work first: no status yet (not free until it says available).
        row = AgentPresence(tenant_id=tenant_id, agent_id=agent_id, site=site, status="", changed_at=at)
        s.add(row)
    return row


async def record_status(s: AsyncSession, ev: AgentStatusChanged) -> bool:
    """Remember the agent's latest status; True when it changed (a release may now be possible)."""
    status, activity = legacy_activity(ev.status)
    if activity is None and ev.previous in (AgentStatus.BUSY, AgentStatus.WRAP_UP):
        activity = AgentActivity.IDLE  # a router from before the split: "available" after work meant idle
    row = await _row(s, ev.tenant_id, ev.agent_id, ev.site, ev.at)
    if row.status and ev.at < row.changed_at:  # an older status arriving late must not win
        return False
    row.site, row.status, row.changed_at = ev.site, status.value, ev.at
    if activity is not None and (row.activity_at is None or ev.at >= row.activity_at):
        row.activity, row.activity_at = activity.value, ev.at
    return True


async def record_work(s: AsyncSession, ev: AgentWorkChanged) -> bool:
    """Remember the router's latest view of the agent's work; True when it changed."""
    row = await _row(s, ev.tenant_id, ev.agent_id, ev.site, ev.at)
    if row.activity_at is not None and ev.at < row.activity_at:
        return False
    row.site, row.activity, row.activity_at = ev.site, ev.activity.value, ev.at
    return True


async def presence_in(s: AsyncSession, tenant_id: str, site: str) -> dict[str, Presence]:
    """What is known of every agent of a routing domain: agent id -> status and work."""
    rows = await s.execute(
        select(AgentPresence.agent_id, AgentPresence.status, AgentPresence.activity).where(
            AgentPresence.tenant_id == tenant_id, AgentPresence.site == site
        )
    )
    return {agent: Presence(status or None, activity) for agent, status, activity in rows.all()}


def is_free(presence: Presence | None) -> bool:
    """An agent who could take a callback now: available by their own choice, and doing nothing."""
    return (
        presence is not None
        and presence.status == AgentStatus.AVAILABLE.value
        and presence.activity in (None, AgentActivity.IDLE.value)
    )


def free_agents(presence: Mapping[str, Presence]) -> list[str]:
    """The agents who could take a callback now: the release capacity of their routing domain."""
    return [agent for agent, p in presence.items() if is_free(p)]


class ForPromisingAgent(enum.Enum):
    """What a release does with a callback while the agent who promised it still has it first."""

    OFFER = "offer"  # free now: released to that agent
    WAIT = "wait"  # available but working (offered, on a contact, wrap-up), free soon: kept for them
    POOL = "pool"  # offline, on break or unknown: straight to the pool


def for_promising_agent(presence: Presence | None) -> ForPromisingAgent:
    if is_free(presence):
        return ForPromisingAgent.OFFER
    if presence is not None and presence.status == AgentStatus.AVAILABLE.value:
        return ForPromisingAgent.WAIT
    return ForPromisingAgent.POOL
