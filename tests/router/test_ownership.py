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
        assert (await router.client.get("/v1/agents/bob", headers=ADMIN)).status_code == 503  # a standby now

        async def owner_again() -> bool:
            return (await router.client.get("/readyz")).status_code == 200

        await eventually(owner_again)  # the intruder stopped renewing: the lease comes back
        assert (await router.client.get("/v1/agents/bob", headers=ADMIN)).status_code == 404  # rolled back
        r = await router.client.post("/v1/agents", json=body, headers=ADMIN)
        assert r.status_code == 201, r.text


async def test_a_standby_is_healthy_serves_nothing_and_takes_over_when_the_owner_stops(tmp_path: Path) -> None:
    """A standby answers /healthz at once (a liveness probe must not kill it), says it is not ready, answers
    the API with 503 and who owns, and shows it owns nothing; when the owner stops it takes over with the
    whole state (issue 18)."""
    data = tmp_path / "data"
    async with running_router(data, ownership_ttl_seconds=2.0) as first:
        await first.register("alice", status="offline")
        c = contact("standby")
        await first.emit(c)
        await eventually(first.queue_ids)
        probed = asyncio.Event()
        release = asyncio.Event()
        seen: list[list[str]] = []
        before: dict[str, object] = {}

        async def second() -> None:
            async with running_router(data, wait_serving=False, ownership_ttl_seconds=2.0) as standby:
                before["healthz"] = (await standby.client.get("/healthz")).status_code
                ready = await standby.client.get("/readyz")
                before["readyz"] = (ready.status_code, ready.json()["checks"]["routing_owner"])
                api = await standby.client.get("/v1/agents", headers=ADMIN)
                before["api"] = (api.status_code, api.headers.get("retry-after"), api.json()["detail"])
                before["ownership"] = (await standby.client.get("/v1/router/ownership", headers=ADMIN)).json()
                before["metrics"] = (await standby.client.get("/metrics")).text
                probed.set()

                async def serves() -> bool:
                    return (await standby.client.get("/readyz")).status_code == 200

                await eventually(serves, timeout=20)
                seen.append(await standby.queue_ids())
                release.set()
                await asyncio.sleep(0)  # stay up until the assertions below ran
                await asyncio.sleep(0.1)

        task = asyncio.create_task(second())
        await asyncio.wait_for(probed.wait(), timeout=20)
        assert before["healthz"] == 200
        assert before["readyz"] == (503, False)
        assert before["api"] == (503, "2", "this router is a standby; another instance owns the state")
        mine = (await first.client.get("/v1/router/ownership", headers=ADMIN)).json()
        theirs = before["ownership"]
        assert isinstance(theirs, dict)
        assert mine["serving"] is True and mine["domains"] == ["*"] and mine["lease_owner"] == mine["instance"]
        assert theirs["serving"] is False and theirs["domains"] == [] and theirs["lease_owner"] == mine["instance"]
        assert 'switchboard_router_owns_routing_state{lease="router/default"} 0.0' in str(before["metrics"])
        await asyncio.sleep(1.5)
        assert not release.is_set()  # still waiting: the first router renews its lease
        assert (await first.client.get("/readyz")).status_code == 200
    # the first router stopped and released its lease: the standby starts with the whole state
    await asyncio.wait_for(release.wait(), timeout=20)
    assert seen == [[c.contact_id]]
    with contextlib.suppress(httpx.HTTPError):
        await asyncio.wait_for(task, timeout=20)
