"""The scheduler's releases: pending callbacks whose time came are handed to the router (``callback.due``),
never more than agents are free to take them.

Per routing domain (tenant, site), under its dispatch-lock row (``SKIP LOCKED``: two replicas never count
the same free agent twice): the capacity is the free agents (``agent_presence.free_agents``) minus the
callbacks released within the hold and not yet accepted. At-risk callbacks go first, then by the
customer's place in line. A callback promised by an agent goes to that agent while they have it first,
waits for them while they are busy, or goes to the pool (``agent_presence.for_promising_agent``).
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from services.callback.lifecycle import Status, is_callable
from services.callback.store import Commitment, DispatchLock
from services.callback.unit_of_work import UnitOfWork
from services.callback.use_cases.agent_presence import ForPromisingAgent, for_promising_agent, free_agents, presence_in
from services.callback.use_cases.due import emit_due

if TYPE_CHECKING:
    from services.callback.service import CallbackService
    from services.callback.use_cases.tick import TickReport


async def run(callbacks: CallbackService, now: datetime, report: TickReport) -> None:
    """Release what is due in every routing domain that has something pending, one transaction each."""
    async with callbacks.sessionmaker() as s:
        domains = (
            await s.execute(
                select(Commitment.tenant_id, Commitment.site)
                .where(Commitment.status == Status.PENDING.value, Commitment.not_before <= now)
                .distinct()
            )
        ).all()
    for tenant_id, site in domains:
        async with callbacks.transaction() as tx:
            await release_domain(callbacks, tx, tenant_id, site, now, report)


async def _lock_domain(tx: UnitOfWork, tenant_id: str, site: str) -> DispatchLock | None:
    s = tx.session
    stmt = (
        select(DispatchLock)
        .where(DispatchLock.tenant_id == tenant_id, DispatchLock.site == site)
        .with_for_update(skip_locked=True)
    )
    lock = (await s.execute(stmt)).scalar_one_or_none()
    if lock is not None:
        return lock
    exists = await s.get(DispatchLock, (tenant_id, site))
    if exists is not None:
        return None  # another replica holds it right now
    try:
        async with s.begin_nested():
            s.add(DispatchLock(tenant_id=tenant_id, site=site))
    except IntegrityError:
        return None
    return (await s.execute(stmt)).scalar_one_or_none()


async def release_domain(
    callbacks: CallbackService, tx: UnitOfWork, tenant_id: str, site: str, now: datetime, report: TickReport
) -> None:
    lock = await _lock_domain(tx, tenant_id, site)
    if lock is None:
        return
    s, policy = tx.session, callbacks.policy
    presence = await presence_in(s, tenant_id, site)
    free = free_agents(presence)
    outstanding = (
        await s.execute(
            select(func.count())
            .select_from(Commitment)
            .where(
                Commitment.tenant_id == tenant_id,
                Commitment.site == site,
                Commitment.status == Status.RELEASED.value,
                # One nobody took within the hold (no free agent fits it, say) waits in the router's
                # line on its own; counting it for ever would starve the callbacks those agents fit.
                Commitment.released_at > now - policy.release_hold,
            )
        )
    ).scalar_one()
    capacity = callbacks.batch_size if callbacks.release_without_presence else len(free) - outstanding
    if capacity <= 0:
        return
    candidates = (
        (
            await s.execute(
                select(Commitment)
                .where(
                    Commitment.tenant_id == tenant_id,
                    Commitment.site == site,
                    Commitment.status == Status.PENDING.value,
                    Commitment.not_before <= now,
                )
                .order_by(Commitment.at_risk.desc(), Commitment.virtual_start_time, Commitment.deadline)
                .limit(callbacks.batch_size)
                .with_for_update(skip_locked=True)
            )
        )
        .scalars()
        .all()
    )
    taken: set[str] = set()
    released = 0
    for c in candidates:
        if released >= capacity:
            break
        if not is_callable(callbacks.windows(c), now):
            continue  # e.g. outside the customer's calling hours: wait, it stays in line
        preferred: str | None = None
        if (
            c.promised_by_agent_id is not None
            and c.preferred_until is not None
            and now < c.preferred_until
            and not c.at_risk
        ):
            choice = for_promising_agent(presence.get(c.promised_by_agent_id))
            if choice is ForPromisingAgent.OFFER and c.promised_by_agent_id not in taken:
                preferred = c.promised_by_agent_id
                taken.add(preferred)
            elif choice is ForPromisingAgent.WAIT:
                continue  # the promising agent will be free soon: keep it for them until the fallback
            # away (offline, on break, unknown), or already given a callback this pass: to the pool
        c.status = Status.RELEASED.value
        c.released_at = now
        c.released_to_agent_id = preferred
        await emit_due(callbacks, tx, c, now)
        callbacks.refresh(c, now)
        report.released.append(c.id)
        released += 1
    lock.last_dispatch_at = now
