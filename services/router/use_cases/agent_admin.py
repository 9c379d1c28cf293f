"""Agent administration: register, update, rotate the token; and which agent a token belongs to.

The router keeps only the SHA-256 of an agent's current token, so re-issuing one revokes the old one here
at once; the ``agent.token_issued`` event staged in the same transaction tells the other services.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import select, update

from services.router import metrics
from services.router.auth import hash_token
from services.router.errors import Conflict, Invalid
from services.router.reach import contact_uris_values
from services.router.rows import agent_row, agent_state, has_work, loads_by_agent, to_datetime
from services.router.store import agents
from services.router.unit_of_work import UnitOfWork
from shared.events import (
    CHOSEN_STATUSES,
    AgentActivity,
    AgentStatus,
    AgentStatusChanged,
    AgentTokenIssued,
    Channel,
    Role,
)

if TYPE_CHECKING:
    from services.router.service import RouterService


@dataclass
class AgentProfile:
    """What an admin registers or updates about an agent (validated by the API layer)."""

    name: str
    roles: list[Role]
    primary_role: Role
    skills: dict[str, int]
    languages: list[str]
    capacity: dict[Channel, int]
    site: str
    team: str | None = None
    contact_uris: dict[Channel, str] | None = None  # None: keep what is stored


async def register_agent(
    router: RouterService, agent_id: str | None, profile: AgentProfile, status: AgentStatus
) -> tuple[dict[str, Any], str]:
    """Create an agent; returns it and its bearer token (shown once, only its hash is kept)."""
    if status not in CHOSEN_STATUSES:
        raise Invalid("an agent starts as available, break or offline")
    agent_id = agent_id or str(uuid.uuid4())
    issued = router.issue_agent_token(agent_id)
    token = issued.token
    async with router.writer.locked(), router.writer.transaction() as tx:
        await router.domains.require(profile.site)  # under the writer lock: ownership cannot move meanwhile
        exists = await tx.session.execute(select(agents.c.agent_id).where(agents.c.agent_id == agent_id))
        if exists.first() is not None:
            raise Conflict(f"agent {agent_id!r} already exists")
        await tx.session.execute(
            agents.insert().values(
                agent_id=agent_id,
                tenant_id=router.tenant_id,
                site=profile.site,
                team=profile.team,
                name=profile.name,
                roles=[r.value for r in profile.roles],
                primary_role=profile.primary_role.value,
                skills=profile.skills,
                languages=profile.languages,
                capacity={c.value: n for c, n in profile.capacity.items()},
                status=status.value,
                status_since=tx.now,
                status_reason="registered",
                activity=AgentActivity.IDLE.value,
                activity_since=tx.now,
                wrap_up_until=None,
                missed_offers=0,
                contact_uris={c.value: u for c, u in (profile.contact_uris or {}).items()},
                token_hash=hash_token(token),
                created_at=tx.now,
                updated_at=tx.now,
                stream_changed_at=tx.now,  # no stream yet: the grace period to connect starts now
            )
        )
        router.presence.track(agent_id, tx.now)
        router.work.activity[agent_id] = AgentActivity.IDLE
        await _resync_agent(router, tx, agent_id)
        await tx.emit(
            AgentStatusChanged(
                tenant_id=router.tenant_id,
                agent_id=agent_id,
                site=profile.site,
                status=status,
                previous=None,
                reason="registered",
                at=to_datetime(tx.now),
            )
        )
        await tx.emit(
            AgentTokenIssued(tenant_id=router.tenant_id, agent_id=agent_id, site=profile.site, token_id=issued.token_id)
        )
        metrics.AGENT_STATUS_CHANGES.labels(status.value).inc()
    router.wake()
    return await router.views.get_agent(agent_id), token


async def update_agent(router: RouterService, agent_id: str, profile: AgentProfile) -> dict[str, Any]:
    async with router.writer.locked(), router.writer.transaction() as tx:
        row = await agent_row(tx.session, agent_id)
        await router.domains.require(row.site)
        if profile.site != row.site and await has_work(tx.session, agent_id):
            raise Conflict("an agent cannot change site while it has offers or assignments")
        if not await router.domains.owns(profile.site):
            # Its new owner would not hear of the agent before its next rebuild.
            raise Conflict(
                "the new site's routing domain is owned by another router: register the agent there, or move "
                "it while one router owns both domains"
            )
        await tx.session.execute(
            update(agents)
            .where(agents.c.agent_id == agent_id)
            .values(
                name=profile.name,
                roles=[r.value for r in profile.roles],
                primary_role=profile.primary_role.value,
                skills=profile.skills,
                languages=profile.languages,
                capacity={c.value: n for c, n in profile.capacity.items()},
                site=profile.site,
                team=profile.team,
                updated_at=tx.now,
                **contact_uris_values(profile.contact_uris),
            )
        )
        await _resync_agent(router, tx, agent_id)
    router.wake()
    return await router.views.get_agent(agent_id)


async def rotate_token(router: RouterService, agent_id: str) -> str:
    """A new token; the old one stops working here at once, on the other services once they have
    consumed the ``agent.token_issued`` event staged in the same transaction."""
    issued = router.issue_agent_token(agent_id)
    router.tokens.forget()
    async with router.writer.locked(), router.writer.transaction() as tx:
        row = await agent_row(tx.session, agent_id)
        await router.domains.require(row.site)
        await tx.session.execute(
            update(agents)
            .where(agents.c.agent_id == agent_id)
            .values(token_hash=hash_token(issued.token), updated_at=tx.now)
        )
        await tx.emit(
            AgentTokenIssued(tenant_id=router.tenant_id, agent_id=agent_id, site=row.site, token_id=issued.token_id)
        )
    router.tokens.forget()  # also what was looked up while the change committed
    return issued.token


async def agent_for_token(router: RouterService, token: str) -> str | None:
    """The agent a bearer token belongs to (lookup by the token's hash; the token is never stored)."""
    digest = hash_token(token)
    if (known := router.tokens.get(digest)) is not None:
        return known
    generation = router.tokens.generation
    async with router.sessionmaker() as session:
        agent_id = (
            await session.execute(select(agents.c.agent_id).where(agents.c.token_hash == digest))
        ).scalar_one_or_none()
    if agent_id is not None:
        router.tokens.remember(digest, agent_id, generation)  # not if a token changed meanwhile
    return agent_id


async def _resync_agent(router: RouterService, tx: UnitOfWork, agent_id: str) -> None:
    """Give the engine the agent as the database has it (profile, status, load)."""
    row = (await tx.session.execute(select(agents).where(agents.c.agent_id == agent_id))).first()
    if row is None:
        return
    loads = await loads_by_agent(tx.session, agent_id)
    router.engine.upsert_agent(agent_state(row, loads.get(agent_id, {}), connected=agent_id not in router.absent))
