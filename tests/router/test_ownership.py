"""One active router per routing state: a standby waits for the lease, and a router that lost it cannot
change anything (fencing) until it owns the state again and has rebuilt it from the database."""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path

import httpx
from sqlalchemy import update

from services.router.store import leases
from tests.router.conftest import ADMIN, contact, eventually, running_router


async def test_a_router_that_lost_its_lease_changes_nothing_until_it_owns_again(tmp_path: Path) -> None:
    async with running_router(tmp_path / "data", ownership_ttl_seconds=1.0) as router:
        await router.register("alice", status="offline")
        async with router.service.sessionmaker() as session, session.begin():
            await session.execute(
                update(leases).values(owner="intruder", expires_at=time.time() + 3.0)  # someone else took over
            )
        body = {"agent_id": "bob", "name": "Bob", "roles": ["service"]}
        r = await router.client.post("/v1/agents", json=body, headers=ADMIN)
        assert r.status_code == 503, r.text  # fenced: the write was rolled back
        assert (await router.client.get("/readyz")).status_code == 503
        assert (await router.client.get("/v1/agents/bob", headers=ADMIN)).status_code == 404

        async def owner_again() -> bool:
            return (await router.client.get("/readyz")).status_code == 200

        await eventually(owner_again)  # the intruder stopped renewing: the lease comes back
        r = await router.client.post("/v1/agents", json=body, headers=ADMIN)
        assert r.status_code == 201, r.text


async def test_a_standby_takes_over_when_the_owner_stops(tmp_path: Path) -> None:
    data = tmp_path / "data"
    async with running_router(data, ownership_ttl_seconds=2.0) as first:
        await first.register("alice", status="offline")
        c = contact("standby")
        await first.emit(c)
        await eventually(first.queue_ids)
        started = asyncio.Event()
        release = asyncio.Event()
        seen: list[list[str]] = []

        async def second() -> None:
            async with running_router(data, ownership_ttl_seconds=2.0) as standby:
                seen.append(await standby.queue_ids())
                started.set()
                await release.wait()

        task = asyncio.create_task(second())
        await asyncio.sleep(1.5)
        assert not started.is_set()  # still waiting: the first router renews its lease
        assert (await first.client.get("/readyz")).status_code == 200
    # the first router stopped and released its lease: the standby starts with the whole state
    await asyncio.wait_for(started.wait(), timeout=20)
    assert seen == [[c.contact_id]]
    release.set()
    with contextlib.suppress(httpx.HTTPError):
        await asyncio.wait_for(task, timeout=20)
