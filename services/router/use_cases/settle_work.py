"""At the end of every transaction, each agent whose offers, assignments or wrap-up changed has its work
settled: the activity the router reports (``agent_work.py``) is derived again from the engine's loads and
the open offers, and where it moved, the row, an ``agent.work_changed`` event and a ``work`` message on
the agent's stream say so, all in that same transaction.

Deriving it here, rather than in each use case, is what keeps it true: an agent whose open offer timed
out after their last contact ended becomes idle whichever path closed the offer.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlalchemy import bindparam, update

from services.router import metrics
from services.router.agent_work import activity_of, routable_status
from services.router.rows import to_datetime
from services.router.store import agents
from services.router.stream_events import WorkEvent
from services.router.unit_of_work import UnitOfWork
from shared.events import AgentActivity, AgentStatus, AgentWorkChanged

if TYPE_CHECKING:
    from services.router.service import RouterService


def changed_agents(router: RouterService) -> set[str]:
    """Who may have moved since the last settle (and forget it: they are settled now)."""
    changed = router.engine.work_changed | router.open_offers.changed | router.work.changed
    router.engine.work_changed.clear()
    router.open_offers.changed.clear()
    router.work.changed.clear()
    return changed


async def settle(router: RouterService, tx: UnitOfWork) -> None:
    """Write the moved activities (runs inside the transaction, just before it commits)."""
    writes: dict[tuple[str, ...], list[dict[str, object]]] = {}  # one UPDATE per set of columns
    for agent_id in sorted(changed_agents(router)):
        state = router.engine.agent(agent_id)
        if state is None:
            router.work.forget(agent_id)  # removed meanwhile
            continue
        load = {ch: n for ch, n in state.load.items() if n}
        activity = activity_of(
            load=sum(load.values()),
            offered=router.open_offers.count_for(agent_id),
            wrapping=router.work.wrapping(agent_id),
        )
        previous = router.work.activity.get(agent_id)
        until = router.work.wrap_until.get(agent_id)
        if until != router.work.written_until.get(agent_id):
            # The wrap-up's end is written here too, with the activity when that moved: one UPDATE.
            values: dict[str, object] = {"wrap_up_until": until}
            if until is None:
                router.work.written_until.pop(agent_id, None)
            else:
                router.work.written_until[agent_id] = until
        else:
            values = {}
        if activity is not previous:
            values.update(activity=activity.value, activity_since=tx.now)
        if values:
            row = {f"new_{column}": value for column, value in values.items()}
            writes.setdefault(tuple(sorted(values)), []).append({"agent": agent_id, **row})
        if activity is previous:
            continue
        router.work.activity[agent_id] = activity
        wrap_until = until if activity is AgentActivity.WRAP_UP else None
        await tx.emit(
            AgentWorkChanged(
                tenant_id=router.tenant_id,
                agent_id=agent_id,
                site=state.site,
                activity=activity,
                previous=previous,
                load=load,
                wrap_up_until=to_datetime(wrap_until) if wrap_until is not None else None,
                at=to_datetime(tx.now),
            )
        )
        metrics.AGENT_ACTIVITY_CHANGES.labels(activity.value).inc()
        tx.push(
            agent_id,
            "work",
            WorkEvent(
                agent_id=agent_id,
                activity=activity,
                previous=previous,
                load={ch.value: n for ch, n in load.items()},
                wrap_up_until=wrap_until,
            ),
        )
    if tx.closes_in_one:  # written by the transaction's closing statement (closing_statement.py)
        tx.work.extend(row for rows in writes.values() for row in rows)
        return
    for columns, rows in writes.items():  # the group's agents in one executemany per set of columns
        await tx.session.execute(_UPDATE_WORK[columns], rows)


def _update_work(columns: tuple[str, ...]) -> Any:
    return (
        update(agents)
        .where(agents.c.agent_id == bindparam("agent"))
        .values({column: bindparam(f"new_{column}") for column in columns})
    )


# Built once (a reused construct keeps its compiled form): the sets of columns settle() writes.
_UPDATE_WORK: dict[tuple[str, ...], Any] = {
    columns: _update_work(columns)
    for columns in (
        ("activity", "activity_since"),
        ("wrap_up_until",),
        ("activity", "activity_since", "wrap_up_until"),
    )
}


def assigned_count(router: RouterService, agent_id: str) -> int:
    """Contacts the agent is on now (its load without the offers it has not answered yet)."""
    return sum(router.engine.load_of(agent_id).values()) - router.open_offers.count_for(agent_id)


def _chosen(router: RouterService, agent_id: str) -> AgentStatus | None:
    """The agent's own status, read back from what the engine routes by (``routable_status``)."""
    status = router.engine.status_of(agent_id)
    return AgentStatus.AVAILABLE if status is AgentStatus.WRAP_UP else status


async def start_wrap_up(router: RouterService, tx: UnitOfWork, agent_id: str, wrap: float) -> None:
    """The agent's last contact ended: after-contact work for ``wrap`` seconds (tick.py ends it)."""
    until = tx.now + wrap
    router.work.start_wrap_up(agent_id, until)  # the row's wrap_up_until is written by settle()
    status = _chosen(router, agent_id)
    if status is not None:
        router.engine.set_status(agent_id, routable_status(status, wrapping=True), tx.now)


async def end_wrap_up(router: RouterService, tx: UnitOfWork, agent_id: str) -> None:
    """Wrap-up ended (its time ran out, the agent said they are ready, or they took an offer)."""
    status = _chosen(router, agent_id)
    if not router.work.end_wrap_up(agent_id):  # the row's wrap_up_until is cleared by settle()
        return
    if status is not None:
        router.engine.set_status(agent_id, routable_status(status, wrapping=False), tx.now)
