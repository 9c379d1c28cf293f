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

import pytest
from sqlalchemy import func, select, update
from starlette.types import Scope

from services.router import callback_closures, domain_ownership, rebuild
from services.router.app import MIGRATIONS
from services.router.errors import NotOwnedHere
from services.router.forwarding import ForwardingUnavailable
from services.router.ownership import OwnershipLost
from services.router.request_owner import owner_url
from services.router.service import RouterService
from services.router.settings import RouterSettings
from services.router.store import leases, offers
from services.router.strategy import load_strategy
from shared import db
from shared.bus.embedded import EmbeddedBus
from shared.events import (
    AgentStatus,
    AttemptResult,
    CallbackAttempted,
    CallbackFulfilled,
    Customer,
    decode_record,
    make_event,
)
from shared.topics import CONTACTS, routing_domain
from tests.router.conftest import chat_agent, contact

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
async def routers(url: str, count: int, **settings: object) -> AsyncIterator[list[RouterService]]:
    await db.migrate(MIGRATIONS, url)
    engine = db.make_engine(url)
    made = []
    for i in range(count):
        svc = RouterService(
            sessionmaker=db.make_sessionmaker(engine),
            settings=RouterSettings(
                presence_grace_seconds=1e9,
                ownership="partitions",
                advertise_url=f"http://router{i}",
                **settings,  # type: ignore[arg-type]
            ),
            strategy=load_strategy(None),
        )
        svc.domains.use(partition_of)
        made.append(svc)
    try:
        yield made
    finally:
        for svc in made:
            await svc.writes.stop()
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
