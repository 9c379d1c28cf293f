"""Fencing where the lease is renewed: first in the transaction (SQLite), or last, in the closing
statement that also writes the timeline, counters and outbox (PostgreSQL, ``closing_statement.py``).
Either way a router whose lease was taken, before its transaction or while it ran, commits nothing, and
one that still holds it extends it."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from sqlalchemy import select, update

from services.router.auth import Principal
from services.router.ownership import OwnershipLost
from services.router.service import RouterService
from services.router.store import OfferState, agents, counters, leases, offers, timeline
from shared.events import AgentStatus, Channel, ContactRequested, Customer, Outcome, make_event
from shared.outbox import outbox
from tests.postgres import fresh_database
from tests.router.conftest import bare_service, chat_agent, write_strategy


def requested(n: int) -> ContactRequested:
    return ContactRequested(
        contact_id=f"c{n}", source="t", external_id=str(n), channel=Channel.CHAT, customer=Customer(id=f"x{n}")
    )


async def take_lease(service: RouterService, name: str) -> None:
    """Another router takes ``name`` over, in its own committed transaction."""
    async with service.sessionmaker() as s, s.begin():
        await s.execute(update(leases).where(leases.c.name == name).values(owner="intruder", expires_at=1e12))


async def written(service: RouterService) -> tuple[list[str], dict[str, float], int, list[str]]:
    """Timeline kinds, counters, outbox rows and agents, as committed."""
    async with service.sessionmaker() as s:
        kinds = list((await s.execute(select(timeline.c.kind).order_by(timeline.c.seq))).scalars())
        values = {name: value for name, value in (await s.execute(select(counters.c.name, counters.c.value))).all()}
        staged = len((await s.execute(select(outbox.c.seq))).all())
        registered = list((await s.execute(select(agents.c.agent_id))).scalars())
    return kinds, values, staged, registered


async def test_a_transaction_extends_the_lease_and_writes_what_it_buffered_in_order(service: RouterService) -> None:
    (name,) = service.ownership.names
    async with service.sessionmaker() as s:
        before = (await s.execute(select(leases.c.expires_at).where(leases.c.name == name))).scalar_one()
    await asyncio.sleep(0.01)
    async with service.writer.transaction() as tx:
        for kind in ("first", "second", "third"):
            await tx.note("c1", kind, detail={"nested": [1, "two"]})
        await tx.bump("sold", 2)
        await tx.emit(requested(1))
        await tx.emit(requested(2))
    async with service.writer.transaction() as tx:
        await tx.bump("sold", 3)
    async with service.sessionmaker() as s:
        after = (await s.execute(select(leases.c.expires_at).where(leases.c.name == name))).scalar_one()
        details = list((await s.execute(select(timeline.c.detail).order_by(timeline.c.seq))).scalars())
        payloads = list((await s.execute(select(outbox.c.payload).order_by(outbox.c.seq))).scalars())
    assert after > before
    kinds, values, _, _ = await written(service)
    assert kinds == ["first", "second", "third"]
    assert details == [{"detail": {"nested": [1, "two"]}}] * 3
    assert values == {"sold": 5}
    assert [b'"contact_id":"c1"' in p for p in payloads] == [True, False]  # staged order kept


@pytest.mark.postgres
async def test_a_lease_taken_while_the_transaction_ran_commits_none_of_it(tmp_path: Path) -> None:
    """PostgreSQL only: on SQLite the lease is renewed first and the transaction holds the file's one
    write lock, so nobody takes the lease meanwhile."""
    async with fresh_database("sb_closing") as url, bare_service(url) as service:
        (name,) = service.ownership.names
        with pytest.raises(OwnershipLost):
            async with service.writer.transaction() as tx:
                await tx.note("c1", "received")
                await tx.bump("sold", 1)
                await tx.emit(requested(1))
                await tx.insert_offers([offer_row("o1", "c1", "alice")])
                await take_lease(service, name)  # committed while this one runs: its close finds it gone
        assert await written(service) == ([], {}, 0, [])
        async with service.sessionmaker() as s:
            assert (await s.execute(select(offers.c.offer_id))).all() == []
        assert service.writer.stale  # rebuilt before the engine is used again
        assert not service.ownership.held


def offer_row(offer_id: str, contact_id: str, agent_id: str) -> dict[str, object]:
    return {
        "offer_id": offer_id,
        "contact_id": contact_id,
        "agent_id": agent_id,
        "state": OfferState.PENDING,
        "made_at": 1.0,
        "expires_at": 31.0,
        "resolved_at": None,
        "rule": "default",
        "score": 0.5,
        "explanation": {"role": "service"},
        "reason": None,
    }


async def test_the_offers_a_group_makes_are_written_with_it_column_for_column(service: RouterService) -> None:
    """A group's offers are its last writes: on PostgreSQL the closing statement inserts them, on SQLite
    one insert does; either way every column as made, and the agent can take the offer from the row."""
    for name in ("alice", "bob"):
        await service.register_agent(name, chat_agent(name), AgentStatus.AVAILABLE)
    await service.handle_events([make_event(requested(n), source="t") for n in (1, 2)])
    made = {o.offer_id: o for o in service.open_offers.values()}
    assert len(made) == 2
    async with service.sessionmaker() as s:
        rows = {r.offer_id: r for r in await s.execute(select(offers))}
    assert rows.keys() == made.keys()
    for offer_id, pending in made.items():
        row = rows[offer_id]
        assert (row.contact_id, row.agent_id, row.state) == (pending.contact_id, pending.agent_id, "pending")
        assert row.expires_at == pending.expires_at and row.made_at < row.expires_at
        assert row.resolved_at is None and row.reason is None
        assert row.rule and isinstance(row.score, float)
        assert isinstance(row.explanation, dict) and row.explanation  # JSON, not its text
    offer = next(iter(made.values()))
    assignment = await service.accept(offer.offer_id, Principal.agent(offer.agent_id))
    assert assignment["contact_id"] == offer.contact_id


async def test_a_lease_taken_before_the_transaction_fences_a_whole_group(service: RouterService) -> None:
    (name,) = service.ownership.names
    await take_lease(service, name)
    with pytest.raises(Exception, match="group commit failed|held by another|no lease"):
        await service.register_agent("alice", chat_agent("alice"), AgentStatus.AVAILABLE)
    assert await written(service) == ([], {}, 0, [])
    assert not service.ownership.held


async def test_one_lost_lease_of_several_is_named_and_the_others_kept(service: RouterService) -> None:
    (whole,) = service.ownership.names
    other = f"{whole}/contacts/0"
    async with service.sessionmaker() as s, s.begin():
        await s.execute(
            leases.insert().values(name=other, owner=service.ownership.owner, expires_at=1e12, acquired_at=0)
        )
    service.ownership.names.add(other)
    async with service.writer.transaction() as tx:
        await tx.note("c1", "both held")
    await take_lease(service, other)
    with pytest.raises(OwnershipLost, match="contacts/0"):
        async with service.writer.transaction() as tx:
            await tx.note("c1", "one lost")
    assert service.ownership.names == {whole}
    kinds, _, _, _ = await written(service)
    assert kinds == ["both held"]


async def test_each_agents_settled_work_moves_only_the_columns_that_moved(database_url: str, tmp_path: Path) -> None:
    """Settled work is written per agent, some rows with the activity, some with the wrap-up's end, some
    with both (on PostgreSQL in the closing statement): a column a row does not name stays as it was."""
    strategy = write_strategy(tmp_path / "s.yaml", channels={"chat": {"wrap_up_seconds": 600}})
    async with bare_service(database_url, strategy=strategy) as service:
        for name in ("alice", "bob"):
            await service.register_agent(name, chat_agent(name), AgentStatus.AVAILABLE)

        async def row(agent_id: str) -> tuple[str, float | None, float | None]:
            async with service.sessionmaker() as s:
                found = await s.execute(
                    select(agents.c.activity, agents.c.activity_since, agents.c.wrap_up_until).where(
                        agents.c.agent_id == agent_id
                    )
                )
                activity, since, until = found.one()
            return activity, since, until

        bob_before = await row("bob")
        await service.handle_events([make_event(requested(1), source="t")])
        (offer,) = service.open_offers.values()
        agent = offer.agent_id
        other = "bob" if agent == "alice" else "alice"
        await service.accept(offer.offer_id, Principal.agent(agent))
        on_contact = await row(agent)
        assert on_contact[0] == "on_contact" and on_contact[2] is None
        await service.complete("c1", Principal.agent(agent), Outcome(resolved=True), None)
        activity, since, until = await row(agent)  # activity and wrap-up's end in one row
        assert activity == "wrap_up" and until is not None and until > since and since >= on_contact[1]
        await service.change_status(agent, AgentStatus.AVAILABLE, None)  # ends the wrap-up
        assert (await row(agent))[0::2] == ("idle", None)
        if other == "bob":
            assert await row("bob") == bob_before  # never named: untouched


@pytest.mark.postgres
async def test_the_closing_statement_moves_only_the_work_columns_a_row_names(tmp_path: Path) -> None:
    """PostgreSQL's one UPDATE for all of a group's agents (SQLite runs one per set of columns)."""
    async with fresh_database("sb_closing") as url, bare_service(url) as service:
        for name in ("alice", "bob", "carol"):
            await service.register_agent(name, chat_agent(name), AgentStatus.AVAILABLE)
        async with service.sessionmaker() as s, s.begin():
            await s.execute(update(agents).values(activity="wrap_up", activity_since=1.0, wrap_up_until=50.0))
        async with service.writer.transaction() as tx:
            tx.work.extend(
                [
                    {"agent": "alice", "new_activity": "offered", "new_activity_since": 5.0},
                    {"agent": "bob", "new_wrap_up_until": 99.0},
                    {"agent": "carol", "new_activity": "idle", "new_activity_since": 7.0, "new_wrap_up_until": None},
                ]
            )
        async with service.sessionmaker() as s:
            rows = {
                r.agent_id: (r.activity, r.activity_since, r.wrap_up_until)
                for r in await s.execute(
                    select(agents.c.agent_id, agents.c.activity, agents.c.activity_since, agents.c.wrap_up_until)
                )
            }
    assert rows == {"alice": ("offered", 5.0, 50.0), "bob": ("wrap_up", 1.0, 99.0), "carol": ("idle", 7.0, None)}
