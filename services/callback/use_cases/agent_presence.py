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
import functools
from collections.abc import Mapping
from typing import TYPE_CHECKING, NamedTuple, cast

from sqlalchemy import Table, case, select
from sqlalchemy.dialects.postgresql import Insert as PgInsert
from sqlalchemy.dialects.sqlite import Insert as SqliteInsert
from sqlalchemy.ext.asyncio import AsyncSession

from services.callback.store import AgentPresence
from services.callback.unit_of_work import UnitOfWork
from shared.db import dialect_insert
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

Insert = PgInsert | SqliteInsert


class Presence(NamedTuple):
    status: str | None  # the agent's own choice; None: not heard yet
    activity: str | None  # the router's view of their work; None: not heard yet (idle)


async def on_agent_status_changed(callbacks: CallbackService, tx: UnitOfWork, env: Envelope) -> None:
    assert isinstance(env.payload, AgentStatusChanged)
    await record_status(tx.session, env.payload)


async def on_agent_work_changed(callbacks: CallbackService, tx: UnitOfWork, env: Envelope) -> None:
    assert isinstance(env.payload, AgentWorkChanged)
    await record_work(tx.session, env.payload)


async def record_status(s: AsyncSession, ev: AgentStatusChanged) -> None:
    """Remember the agent's latest status (and, from a router before the split, its work)."""
    status, activity = legacy_activity(ev.status)
    if activity is None and ev.previous in (AgentStatus.BUSY, AgentStatus.WRAP_UP):
        activity = AgentActivity.IDLE  # a router from before the split: "available" after work meant idle
    await s.execute(
        _status_upsert(_dialect(s)),
        {
            "tenant_id": ev.tenant_id,
            "agent_id": ev.agent_id,
            "site": ev.site,
            "status": status.value,
            "changed_at": ev.at,
            "activity": activity.value if activity is not None else None,
            "activity_at": ev.at if activity is not None else None,
        },
    )


async def record_work(s: AsyncSession, ev: AgentWorkChanged) -> None:
    """Remember the router's latest view of the agent's work."""
    await s.execute(
        _work_upsert(_dialect(s)),
        {
            "tenant_id": ev.tenant_id,
            "agent_id": ev.agent_id,
            "site": ev.site,
            # Heard of by its work first: no status yet (not free until it says available).
            "status": "",
            "changed_at": ev.at,
            "activity": ev.activity.value,
            "activity_at": ev.at,
        },
    )


# Each report is one conditional upsert, built once per dialect. An ORM read and flush per report was
# nearly half of the service's CPU under load (every offer, accept and completion moves an agent's work).
# The conditions are the rule above: for the status and for the work apart, an older report never wins.
_presence = cast(Table, AgentPresence.__table__)


def _dialect(s: AsyncSession) -> str:
    return s.get_bind().dialect.name


@functools.cache
def _status_upsert(dialect: str) -> Insert:
    insert = dialect_insert(_presence, dialect)
    new, kept = insert.excluded, _presence.c
    # The work a legacy status carries counts only if it is not older than the work already known.
    takes_work = new.activity.is_not(None) & (kept.activity_at.is_(None) | (new.activity_at >= kept.activity_at))
    return insert.on_conflict_do_update(
        index_elements=[kept.tenant_id, kept.agent_id],
        set_={
            "site": new.site,
            "status": new.status,
            "changed_at": new.changed_at,
            "activity": case((takes_work, new.activity), else_=kept.activity),
            "activity_at": case((takes_work, new.activity_at), else_=kept.activity_at),
        },
        where=(kept.status == "") | (new.changed_at >= kept.changed_at),
    )


@functools.cache
def _work_upsert(dialect: str) -> Insert:
    insert = dialect_insert(_presence, dialect)
    new, kept = insert.excluded, _presence.c
    return insert.on_conflict_do_update(
        index_elements=[kept.tenant_id, kept.agent_id],
        set_={"site": new.site, "activity": new.activity, "activity_at": new.activity_at},
        where=kept.activity_at.is_(None) | (new.activity_at >= kept.activity_at),
    )


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
