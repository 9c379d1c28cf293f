"""Timeline entries, counters and outbox rows are buffered in the unit of work and written at its end, one
statement per table for a whole group (issue 14: router CPU per contact). What must still hold: every
entry lands, in order; counters add up across groups; a rolled-back group writes none of them; and a read
of the timeline inside a group sees what the group noted before it."""

from __future__ import annotations

from collections import Counter

import pytest
from sqlalchemy import event, select

from services.router import metrics
from services.router.service import RouterService
from services.router.store import agents, counters, timeline
from shared.events import AgentStatus, Channel, ContactRequested, Customer, make_event
from shared.outbox import outbox
from tests.router.conftest import chat_agent


def requested(n: int) -> ContactRequested:
    return ContactRequested(
        contact_id=f"c{n:03d}", source="t", external_id=str(n), channel=Channel.CHAT, customer=Customer(id=f"x{n}")
    )


def statements_on(service: RouterService, verb: str = "INSERT") -> Counter[str]:
    """INSERT (or UPDATE) statements by table, as the driver receives them (an executemany counts once)."""
    seen: Counter[str] = Counter()
    engine = service.write_engine

    @event.listens_for(engine, "before_cursor_execute")
    def count(_conn, _cursor, statement, _params, _context, _many):  # type: ignore[no-untyped-def]
        words = statement.split()
        if words[:2] == ["WITH", "renewed"]:
            seen["closing statement"] += 1  # PostgreSQL: lease, timeline, counters, outbox in one
        elif verb == "INSERT" and words[:2] == ["INSERT", "INTO"]:
            seen[words[2].strip('"')] += 1
        elif verb == "UPDATE" and words[0] == "UPDATE":
            seen[words[1].strip('"')] += 1

    return seen


async def test_the_work_of_a_groups_agents_is_written_in_one_update_each_row_its_own(service: RouterService) -> None:
    for n in range(12):
        await service.register_agent(f"a{n:02d}", chat_agent(f"a{n}"), AgentStatus.AVAILABLE)
    updates = statements_on(service, "UPDATE")
    # 8 contacts consumed and offered in one transaction (the group ends with its offers): 8 agents
    # move from idle to offered in one statement.
    await service.handle_events([make_event(requested(n), source="t") for n in range(8)])
    if service.write_engine.dialect.name == "postgresql":  # in the transaction's closing statement
        assert updates["closing statement"] == 1 and not updates["router_agents"]
    else:
        assert updates["router_agents"] == 1
    offered = {o.agent_id for o in service.open_offers.values()}
    assert len(offered) == 8
    async with service.sessionmaker() as s:
        rows = (await s.execute(select(agents.c.agent_id, agents.c.activity))).all()
    assert {a for a, activity in rows if activity == "offered"} == offered  # each row its own value
    assert all(activity == "idle" for a, activity in rows if a not in offered)


async def test_a_group_writes_its_timeline_and_outbox_in_one_statement_each(service: RouterService) -> None:
    seen = statements_on(service)
    await service.handle_events([make_event(requested(n), source="t") for n in range(40)])  # one group
    if service.write_engine.dialect.name == "postgresql":  # closing_statement.py
        assert seen["closing statement"] == 1 and not seen["router_timeline"] and not seen["outbox"]
    else:
        assert seen["router_timeline"] == 1 and seen["outbox"] <= 1
    async with service.sessionmaker() as s:
        rows = (await s.execute(select(timeline.c.contact_id, timeline.c.kind).order_by(timeline.c.seq))).all()
        received = [c for c, kind in rows if kind == "received"]
    assert received == [f"c{n:03d}" for n in range(40)]  # every entry, in arrival order


async def test_counters_add_up_across_groups_and_a_rolled_back_group_writes_nothing(service: RouterService) -> None:
    async with service.writer.transaction() as tx:
        await tx.bump("sold", 1)
        await tx.bump("sold", 2)
        await tx.bump("goodwill", 5.5)
    async with service.writer.transaction() as tx:
        await tx.bump("sold", 4)
    with pytest.raises(RuntimeError):
        async with service.writer.transaction() as tx:
            await tx.bump("sold", 100)
            await tx.note("cX", "received")
            raise RuntimeError("the group fails before its commit")
    async with service.sessionmaker() as s:
        values = dict((await s.execute(select(counters.c.name, counters.c.value))).all())
        notes = (await s.execute(select(timeline))).all()
        staged = (await s.execute(select(outbox))).all()
    assert values == {"sold": 7, "goodwill": 5.5}
    assert notes == [] and staged == []


async def test_a_timeline_read_inside_a_group_sees_what_the_group_noted(service: RouterService) -> None:
    from services.router.use_cases.dialing_outcomes import dialled_attempt

    class Row:
        contact_id, agent_id, answered_at = "c1", "alice", 0.0

    async with service.writer.transaction() as tx:
        await tx.note("c1", "customer_dialed", agent_id="alice", result="no_answer")
        assert (await dialled_attempt(tx, Row())) == "no_answer"


async def test_a_batch_is_deduplicated_in_one_inbox_statement_repeats_within_and_across_batches(
    service: RouterService,
) -> None:
    seen = statements_on(service)
    duplicates = metrics.EVENTS_DUPLICATE._value.get()
    first = [make_event(requested(n), source="t") for n in range(5)]
    await service.handle_events([*first, first[2], first[0]])  # a repeat inside the batch
    assert seen["processed_events"] == 1  # the whole batch's inbox check is one statement
    assert metrics.EVENTS_DUPLICATE._value.get() - duplicates == 2  # both repeats skipped by the inbox
    await service.handle_events([first[1], make_event(requested(9), source="t"), first[4]])  # redelivered
    assert metrics.EVENTS_DUPLICATE._value.get() - duplicates == 4
    async with service.sessionmaker() as s:
        rows = (await s.execute(select(timeline.c.contact_id).where(timeline.c.kind == "received"))).scalars()
        received = list(rows)
    assert sorted(received) == ["c000", "c001", "c002", "c003", "c004", "c009"]  # each applied once


async def test_a_contact_requested_again_under_a_new_event_id_is_one_contact(service: RouterService) -> None:
    """The contact's own insert finds it known (``ON CONFLICT DO NOTHING``, row count 0 on both dialects):
    a retried webhook that intake published twice queues it once, with one timeline entry."""
    await service.handle_events([make_event(requested(1), source="t")])
    await service.handle_events([make_event(requested(1), source="t"), make_event(requested(2), source="t")])
    async with service.sessionmaker() as s:
        received = list((await s.execute(select(timeline.c.contact_id).where(timeline.c.kind == "received"))).scalars())
    assert sorted(received) == ["c001", "c002"]
    assert service.engine.waiting_count() == 2
