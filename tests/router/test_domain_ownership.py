"""Several active routers on one database (``ownership=partitions``): each acts only on the routing
domains of the partitions whose leases it holds, waits for a partition another router still holds, and
cannot commit anything once it lost one (fencing per domain) until it has dropped that domain.

In-process routers on one SQLite database, driven through the same calls the bus makes
(``domain_ownership.take`` / ``give_up`` on assignment and revocation); the real processes on Kafka
are in ``tests/e2e/test_active_routers.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import zlib
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from sqlalchemy import delete, func, select, update
from starlette.types import Scope

from services.router import callback_closures, domain_ownership, goodwill, rebuild
from services.router.app import MIGRATIONS
from services.router.auth import Principal
from services.router.errors import Invalid, NotOwnedHere
from services.router.forwarding import ForwardingUnavailable
from services.router.ownership import OwnershipLost
from services.router.request_owner import owner_url
from services.router.service import RouterService
from services.router.settings import RouterSettings
from services.router.store import agents, goodwill_grants, leases, offers
from services.router.strategy import GoodwillPolicy, Strategy, load_strategy
from services.router.use_cases import tick
from shared import db
from shared.bus.embedded import EmbeddedBus
from shared.events import (
    AgentStatus,
    AttemptResult,
    CallbackAttempted,
    CallbackFulfilled,
    Customer,
    Intent,
    Outcome,
    Role,
    decode_record,
    make_event,
)
from shared.topics import CONTACTS, routing_domain
from tests.router.conftest import chat_agent, contact, eventually

PARTITIONS = 4


async def partition_of(domain: str) -> int:
    return zlib.crc32(domain.encode()) % PARTITIONS


def site_in(partition: int, n: int = 0) -> str:
    """The n-th site (of s0, s1, ...) whose routing domain lands in ``partition``."""
    found = [
        s for s in (f"s{i}" for i in range(200)) if zlib.crc32(routing_domain("default", s).encode()) % 4 == partition
    ]
    return found[n]


@contextlib.asynccontextmanager
async def routers(
    url: str, count: int, strategy: Strategy | None = None, **settings: object
) -> AsyncIterator[list[RouterService]]:
    await db.migrate(MIGRATIONS, url)
    engine = db.make_engine(url)
    made = []
    for i in range(count):
        svc = RouterService(
            sessionmaker=db.make_sessionmaker(engine),
            settings=RouterSettings(
                **{"presence_grace_seconds": 1e9, **settings},  # type: ignore[arg-type]
                ownership="partitions",
                advertise_url=f"http://router{i}",
            ),
            strategy=strategy or load_strategy(None),
        )
        svc.domains.use(partition_of)
        made.append(svc)
    try:
        yield made
    finally:
        for svc in made:
            await svc.writes.stop()
            await svc.presence_record.stop()
        await engine.dispose()


async def register(router: RouterService, agent_id: str, site: str) -> None:
    profile = replace(chat_agent(agent_id), site=site)
    await router.register_agent(agent_id, profile, AgentStatus.OFFLINE)


async def test_each_router_acts_only_on_the_domains_of_its_partitions(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path}/router.sqlite3"
    async with routers(url, 2) as (a, b):
        await domain_ownership.take(a, {0, 1})
        await domain_ownership.take(b, {2, 3})
        assert a.domains.partitions == {0, 1} and b.domains.partitions == {2, 3}
        await register(a, "ann", site_in(0))
        await register(b, "bob", site_in(2))
        with pytest.raises(NotOwnedHere):
            await register(a, "cid", site_in(3))  # b's domain: a refuses (requests are forwarded to b)
        await a.handle_events([make_event(contact("c0", site=site_in(1)), source="t")], {1})
        await b.handle_events([make_event(contact("c2", site=site_in(3)), source="t")], {3})
        assert a.engine.agent("ann") is not None and a.engine.agent("bob") is None
        assert b.engine.agent("bob") is not None and b.engine.agent("ann") is None
        assert a.engine.waiting_count() == 1 and b.engine.waiting_count() == 1
        # b hands partition 3 over: a takes it at once (released, not left to expire) with its queue.
        await domain_ownership.give_up(b, {3})
        started = time.monotonic()
        await asyncio.wait_for(domain_ownership.take(a, {3}), timeout=5)
        assert time.monotonic() - started < 1.0
        assert a.engine.waiting_count() == 2 and b.engine.waiting_count() == 0
        assert sorted(a.domains.owned()) == sorted(
            routing_domain("default", s) for s in {site_in(0), site_in(1), site_in(3)}
        )


async def test_a_partition_held_by_another_router_is_waited_for_until_released(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path}/router.sqlite3"
    async with routers(url, 2, ownership_ttl_seconds=30.0) as (a, b):
        await domain_ownership.take(a, {0})
        await register(a, "ann", site_in(0))
        taking = asyncio.create_task(domain_ownership.take(b, {0}))
        await asyncio.sleep(1.0)
        assert not taking.done() and b.domains.partitions == set()  # a still holds it: b waits
        await domain_ownership.give_up(a, {0})
        await asyncio.wait_for(taking, timeout=5)
        assert b.domains.partitions == {0} and b.engine.agent("ann") is not None
        assert a.engine.agent("ann") is None and a.domains.partitions == set()


async def test_a_router_that_lost_one_partition_commits_nothing_until_it_dropped_that_domain(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path}/router.sqlite3"
    async with routers(url, 1) as (a,):
        await domain_ownership.take(a, {0, 1})
        await register(a, "ann", site_in(1))
        async with a.sessionmaker() as session, session.begin():
            await session.execute(  # another router took partition 1 (a was paused past its lease)
                update(leases)
                .where(leases.c.name == a.ownership.partition_lease(1))
                .values(owner="intruder", expires_at=time.time() + 60)
            )
        with pytest.raises(OwnershipLost):
            await register(a, "bea", site_in(0))  # fenced, though partition 0 is still a's
        assert a.domains.partitions == {0}
        await register(a, "bea", site_in(0))  # dropped partition 1's domains: a may act on 0 again
        assert a.engine.agent("bea") is not None
        assert a.engine.agent("ann") is None  # partition 1's agent left the engine with its domain
        with pytest.raises(NotOwnedHere):
            await a.change_status("ann", AgentStatus.AVAILABLE, None)


async def test_the_two_modes_exclude_each_other_on_one_database(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path}/router.sqlite3"
    async with routers(url, 1) as (sharing,):
        whole = RouterService(
            sessionmaker=sharing.sessionmaker, settings=RouterSettings(), strategy=load_strategy(None)
        )
        from services.router import leadership

        assert await leadership.try_acquire(whole)
        taking = asyncio.create_task(domain_ownership.take(sharing, {0}))
        await asyncio.sleep(1.0)
        assert not taking.done() and not sharing.ownership.held
        await leadership.hand_over(whole)
        await asyncio.wait_for(taking, timeout=5)
        assert sharing.domains.partitions == {0}
        assert not await leadership.try_acquire(whole)  # and back: no whole lease while a partition is held


async def test_a_callback_closure_is_passed_on_to_contacts_under_its_domain_for_the_owner(tmp_path: Path) -> None:
    """``callbacks`` is keyed by customer, so its consumer is not the domain's owner in general: a closure
    goes on to ``contacts`` (same event id) under the domain's key, where the owner handles it; the
    router's own attempts and other callback events are not passed on."""
    url = f"sqlite+aiosqlite:///{tmp_path}/router.sqlite3"
    bus = EmbeddedBus(tmp_path / "bus.sqlite3", partitions=PARTITIONS)
    await bus.start()
    try:
        async with routers(url, 1) as (a,):
            site = site_in(2)
            customer = Customer(id="cust-1")
            closure = make_event(
                CallbackFulfilled(tenant_id="default", callback_id="cb-1", customer=customer, site=site),
                source="switchboard/callback",
            )
            ours = make_event(
                CallbackAttempted(
                    tenant_id="default", callback_id="cb-2", customer=customer, site=site, result=AttemptResult.REACHED
                ),
                source=a.source,
            )
            elsewhere = make_event(
                CallbackFulfilled(tenant_id="default", callback_id="cb-4", customer=customer, site=site_in(3)),
                source="switchboard/callback",
            )
            for envelope in (closure, ours, elsewhere):
                await callback_closures.pass_on(bus, a, envelope)
            records = await bus.read_topic(CONTACTS)
            passed = {decode_record(r.value, r.headers).id: r for r in records}
            assert set(passed) == {closure.id, elsewhere.id}  # not the router's own attempt
            record = passed[closure.id]
            assert record.key == routing_domain("default", site)
            assert record.partition == await bus.partition_of(CONTACTS, routing_domain("default", site))
    finally:
        await bus.stop()


async def test_a_request_is_answered_by_the_owner_of_its_domain(tmp_path: Path) -> None:
    """Which router answers (``request_owner.py``): the owner of the agent's, offer's or contact's domain,
    of a registration's site, of a queue's site; anything else where it arrives; nobody while a domain
    is between owners (503, retry)."""
    url = f"sqlite+aiosqlite:///{tmp_path}/router.sqlite3"
    async with routers(url, 2) as (a, b):
        await domain_ownership.take(a, {0, 1})
        await domain_ownership.take(b, {2, 3})
        await register(b, "bob", site_in(2))

        def scope(method: str, path: str, query: str = "") -> Scope:
            return {"type": "http", "method": method, "path": path, "query_string": query.encode()}

        assert await owner_url(a, scope("GET", "/v1/agents/bob/stream"), b"") == "http://router1"
        assert await owner_url(b, scope("GET", "/v1/agents/bob/stream"), b"") is None
        registration = json.dumps({"name": "x", "site": site_in(3)}).encode()
        assert await owner_url(a, scope("POST", "/v1/agents"), registration) == "http://router1"
        assert await owner_url(a, scope("GET", "/v1/queue", f"site={site_in(2)}"), b"") == "http://router1"
        assert await owner_url(a, scope("GET", "/v1/queue"), b"") is None  # its own domains
        assert await owner_url(a, scope("GET", "/v1/agents"), b"") is None  # the list: the database
        assert await owner_url(a, scope("GET", "/v1/agents/nobody"), b"") is None  # unknown: 404 here
        assert await owner_url(a, scope("POST", "/v1/agents"), b"{not json") is None  # 422 here
        await domain_ownership.give_up(b, {2})  # nobody took it yet
        with pytest.raises(ForwardingUnavailable):
            await owner_url(a, scope("GET", "/v1/agents/bob"), b"")


async def test_a_partition_given_up_while_the_database_fails_is_not_routed_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Giving up a partition releases its lease, then rebuilds the engine without its domains. If that
    rebuild fails, the engine still holds them: the next use rebuilds first, or the tick would offer the
    revoked domain's contact under the leases that remain (and the new owner would offer it too)."""
    url = f"sqlite+aiosqlite:///{tmp_path}/router.sqlite3"

    async def tick_routes_only(_router: RouterService, _tx: object) -> None:
        """Groups offer nothing here: the contact waits for the tick, the routing this test is about
        (a group's own offers come after the same rebuild, in ``Writer.locked``)."""

    monkeypatch.setattr(tick, "route", tick_routes_only)
    async with routers(url, 1) as (a,):
        await domain_ownership.take(a, {0, 1})
        await a.register_agent("ann", replace(chat_agent("ann"), site=site_in(1)), AgentStatus.AVAILABLE)
        await a.handle_events([make_event(contact("c1", site=site_in(1)), source="t")], {1})
        real = rebuild.from_database
        failures = [OSError("database unreachable")]

        async def failing_once(router: RouterService) -> None:
            if failures:
                raise failures.pop()
            await real(router)

        monkeypatch.setattr(rebuild, "from_database", failing_once)
        with pytest.raises(OSError):
            await domain_ownership.give_up(a, {1})
        assert a.engine.agent("ann") is not None  # the failed rebuild left the revoked domain in memory
        assert await a.tick() == 0  # rebuilt first: nothing of partition 1 is offered
        assert a.engine.agent("ann") is None
        async with a.sessionmaker() as session:
            assert (await session.execute(select(func.count()).select_from(offers))).scalar() == 0


async def ambassador_serves(router: RouterService, agent_id: str, external_id: str, site: str) -> str:
    """A brand ambassador of ``site`` is offered a complaint there and accepts it: the contact's id."""
    profile = replace(
        chat_agent(agent_id), site=site, roles=[Role.BRAND_AMBASSADOR], primary_role=Role.BRAND_AMBASSADOR
    )
    if router.engine.agent(agent_id) is None:
        await router.register_agent(agent_id, profile, AgentStatus.AVAILABLE)
    complaint = contact(external_id, site=site, intent=Intent.COMPLAINT)
    await router.handle_events(
        [make_event(complaint, source="t")], {await partition_of(routing_domain("default", site))}
    )
    await router.tick()
    async with router.sessionmaker() as session:
        offer_id = (
            await session.execute(
                select(offers.c.offer_id).where(
                    offers.c.contact_id == complaint.contact_id, offers.c.agent_id == agent_id
                )
            )
        ).scalar_one()
    await router.accept(offer_id, Principal.agent(agent_id))
    return complaint.contact_id


async def check_goodwill_budget_across_routers(url: str) -> None:
    strategy = load_strategy(None).model_copy(update={"goodwill": GoodwillPolicy(period_budget=60)})
    async with routers(url, 2, strategy=strategy) as (a, b):
        await domain_ownership.take(a, {0, 1})
        await domain_ownership.take(b, {2, 3})
        on_a = await ambassador_serves(a, "amb-a", "ca1", site_in(0))
        on_b = await ambassador_serves(b, "amb-b", "cb1", site_in(2))
        await a.complete(on_a, Principal.agent("amb-a"), Outcome(goodwill_amount=50), None)
        # b's own ledger knows nothing of a's grant; the budget is the tenant's, so b must refuse.
        with pytest.raises(Invalid, match=r"10\.0 of 60\.0 left"):
            await b.complete(on_b, Principal.agent("amb-b"), Outcome(goodwill_amount=50), None)
        await b.complete(on_b, Principal.agent("amb-b"), Outcome(goodwill_amount=10), None)
        assert (await b.views.stats())["goodwill"] == (await a.views.stats())["goodwill"]
        assert (await a.views.stats())["goodwill"]["spent"] == 60
        # Concurrent grants on both routers that fit alone but not together: exactly one is granted.
        c = await ambassador_serves(a, "amb-a2", "ca2", site_in(1))  # amb-a and amb-b are in wrap-up
        d = await ambassador_serves(b, "amb-b2", "cb2", site_in(3))
        async with a.sessionmaker.begin() as session:  # a fresh period: the grants so far are gone
            await session.execute(delete(goodwill_grants))
        both = await asyncio.gather(
            a.complete(c, Principal.agent("amb-a2"), Outcome(goodwill_amount=40), None),
            b.complete(d, Principal.agent("amb-b2"), Outcome(goodwill_amount=40), None),
            return_exceptions=True,
        )
        refused = [r for r in both if isinstance(r, BaseException)]
        assert len(refused) == 1 and isinstance(refused[0], Invalid), both
        assert "20.0 of 60.0 left" in str(refused[0])
        async with a.sessionmaker() as session:
            now = time.time()
            assert (await goodwill.ledger(session, strategy.goodwill, now)).spent(now) == 40


async def test_the_goodwill_period_budget_holds_across_routers(tmp_path: Path) -> None:
    """The goodwill period budget is the tenant's: each router checks a grant against every router's
    grants (``goodwill.py``), not its own ledger, or N routers could grant N times the budget."""
    await check_goodwill_budget_across_routers(f"sqlite+aiosqlite:///{tmp_path}/router.sqlite3")


@pytest.mark.postgres
async def test_the_goodwill_period_budget_holds_across_routers_on_postgres(postgres_url: str) -> None:
    """The same on PostgreSQL, where two routers' transactions really run at once: the grant lock makes
    the second check wait for the first grant."""
    await check_goodwill_budget_across_routers(postgres_url)


async def test_grants_made_before_their_table_existed_are_copied_into_it(tmp_path: Path) -> None:
    """Migration 0007 fills ``router_goodwill_grants`` from the completed contacts' outcomes, with the role
    each was offered under, so an upgrade in the middle of a period keeps what the period has spent."""
    url = f"sqlite+aiosqlite:///{tmp_path}/router.sqlite3"
    strategy = load_strategy(None).model_copy(update={"goodwill": GoodwillPolicy(period_budget=60)})
    async with routers(url, 1, strategy=strategy) as (a,):
        await domain_ownership.take(a, {0, 1, 2, 3})
        granted = await ambassador_serves(a, "amb", "c1", site_in(0))
        await a.complete(granted, Principal.agent("amb"), Outcome(goodwill_amount=35), None)
        plain = await ambassador_serves(a, "amb2", "c2", site_in(1))
        await a.complete(plain, Principal.agent("amb2"), Outcome(resolved=True), None)
        async with a.sessionmaker() as session:
            before = (await session.execute(select(goodwill_grants))).all()
    assert [(r.contact_id, r.amount, r.role) for r in before] == [(granted, 35.0, "brand_ambassador")]
    config = db.alembic_config(MIGRATIONS, url)
    await asyncio.to_thread(command.downgrade, config, "0006_router_lease_address")
    await asyncio.to_thread(command.upgrade, config, "head")
    engine = db.make_engine(url)
    try:
        async with engine.connect() as conn:
            after = (await conn.execute(select(goodwill_grants))).all()
    finally:
        await engine.dispose()
    assert [(r.contact_id, r.granted_at, r.amount, r.role) for r in after] == [
        (r.contact_id, r.granted_at, r.amount, r.role) for r in before
    ]


async def test_any_router_shows_the_stream_of_an_agent_another_router_routes(tmp_path: Path) -> None:
    """Lists and the dashboard are answered by any router, but an agent's stream is open only on the owner
    of its domain: the owner records it in the agent's row (``shared_presence.py``) and the others read
    it from there, so nobody shows an agent on a stream as without one."""
    url = f"sqlite+aiosqlite:///{tmp_path}/router.sqlite3"
    async with routers(url, 2, presence_grace_seconds=60) as (a, b):
        await domain_ownership.take(a, {0, 1})
        await domain_ownership.take(b, {2, 3})
        for svc in (a, b):
            svc.presence_record.start()
        await register(a, "ann", site_in(0))
        await register(b, "bob", site_in(2))

        async def seen_by_a(agent_id: str) -> tuple[bool, bool]:
            view = await a.views.get_agent(agent_id)
            return view["connected"], view["present"]

        assert await seen_by_a("bob") == (False, True)  # registered just now: the grace to connect
        b.stream_opened("bob")
        await eventually(lambda: _is(seen_by_a("bob"), (True, True)))
        listed = {v["agent_id"]: v for v in await a.views.list_agents()}
        assert listed["bob"]["connected"] is True and listed["ann"]["connected"] is False
        b.stream_opened("bob")  # a second tab: closing one of two streams leaves the agent connected
        b.stream_closed("bob")
        await b.presence_record.flush()
        assert await seen_by_a("bob") == (True, True)
        b.stream_closed("bob")
        await eventually(lambda: _is(seen_by_a("bob"), (False, True)))  # gone, within the grace period
        # A write never goes back in time: a change noted late with an older time leaves the row as is.
        b.presence_record.note("bob", True, time.time() - 30)
        await b.presence_record.flush()
        assert await seen_by_a("bob") == (False, True)
        # Past the grace period the others see the agent gone, as its owner does.
        async with a.sessionmaker.begin() as session:
            await session.execute(update(agents).values(stream_changed_at=time.time() - 61))
        assert await seen_by_a("bob") == (False, False)
        # a's own agent is answered from a's streams, whatever the row says.
        a.stream_opened("ann")
        assert (await a.views.get_agent("ann"))["connected"] is True


async def _is(awaitable: Any, expected: Any) -> bool:
    return await awaitable == expected


async def test_a_presence_write_that_fails_is_made_again(tmp_path: Path) -> None:
    """The database refusing a presence write loses nothing: the change is written once it answers
    again, unless a newer one for the same agent was noted meanwhile (then that one is)."""
    url = f"sqlite+aiosqlite:///{tmp_path}/router.sqlite3"
    async with routers(url, 1) as (a,):
        await domain_ownership.take(a, {0, 1, 2, 3})
        await register(a, "ann", site_in(0))
        attempts: list[float] = []

        class DatabaseDown:
            def begin(self) -> Any:
                attempts.append(time.monotonic())
                raise ConnectionRefusedError("database down")

        working = a.presence_record._sessionmaker
        a.presence_record._sessionmaker = DatabaseDown()  # type: ignore[assignment]
        a.presence_record.start()
        a.stream_opened("ann")

        async def retried() -> bool:
            return len(attempts) >= 2

        await eventually(retried, timeout=5)
        a.presence_record._sessionmaker = working  # the database is back

        async def recorded() -> bool:
            async with a.sessionmaker() as session:
                query = select(agents.c.stream_open).where(agents.c.agent_id == "ann")
                return bool((await session.execute(query)).scalar_one())

        await eventually(recorded, timeout=5)
