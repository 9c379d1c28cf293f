"""Across the real services: intake -> bus -> router -> agent stream -> accept -> complete.

Issue 4's end-to-end promise, plus the architecture's guarantees 1, 2 and 4: a 202 means the contact
will be routed even if the router is killed in between, and a contact is served by exactly one agent.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import httpx

from tests.conftest import TEST_ADMIN_TOKEN
from tests.e2e.conftest import ServiceProcess
from tests.router.conftest import agent_stream

ADMIN = TEST_ADMIN_TOKEN  # the operator token every service gets from service_env
ADMIN_HEADERS = {"Authorization": f"Bearer {ADMIN}"}
ROUTER_ENV = {"SWITCHBOARD_ROUTER_PRESENCE_GRACE_SECONDS": "30"}


def contact(external_id: str, **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "external_id": external_id,
        "source": "twilio",
        "channel": "voice",
        "customer": {"id": f"cust-{external_id}", "phone": "+4930901820", "tier": "standard", "language": "en"},
        "intent": "support",
        "summary": "router keeps dropping the line",
    }
    body.update(overrides)
    return body


async def register(router: ServiceProcess, agent_id: str, roles: list[str]) -> dict[str, str]:
    async with httpx.AsyncClient(base_url=router.url) as client:
        r = await client.post(
            "/v1/agents",
            headers=ADMIN_HEADERS,
            json={
                "agent_id": agent_id,
                "name": agent_id.title(),
                "roles": roles,
                "languages": ["en"],
                "capacity": {"voice": 1},
                "status": "available",
            },
        )
    assert r.status_code == 201, r.text
    return {"Authorization": f"Bearer {r.json()['token']}"}


async def test_contact_posted_to_intake_reaches_the_agent_stream_is_accepted_and_completed(
    services: Callable[..., ServiceProcess],
) -> None:
    intake = services("intake")
    router = services("router", env=ROUTER_ENV)
    alice = await register(router, "alice", ["service"])
    async with agent_stream(router.url, "alice", alice) as stream, httpx.AsyncClient() as http:
        await stream.wait_for("hello")
        accepted = await http.post(f"{intake.url}/v1/contacts", json=contact("CA-100"))
        assert accepted.status_code == 202, accepted.text
        contact_id = accepted.json()["contact_id"]

        offer = await stream.wait_for("offer", lambda d: d["contact_id"] == contact_id)
        assert offer["agent_id"] == "alice"
        assert offer["rule"] == "general" and offer["explanation"]  # explainable: which rule, why this agent

        r = await http.post(f"{router.url}/v1/offers/{offer['offer_id']}/accept", headers=alice)
        assert r.status_code == 200, r.text
        assignment = await stream.wait_for("assignment", lambda d: d["contact_id"] == contact_id)
        assert assignment["contact_id"] == contact_id

        r = await http.post(
            f"{router.url}/v1/contacts/{contact_id}/complete",
            headers=alice,
            json={"resolved": True, "notes": "power-cycled the router, line stable"},
        )
        assert r.status_code == 200, r.text
        done = await stream.wait_for("assignment_completed", lambda d: d["contact_id"] == contact_id)
        assert done["outcome"]["resolved"] is True

        timeline = (await http.get(f"{router.url}/v1/contacts/{contact_id}/timeline", headers=ADMIN_HEADERS)).json()
        kinds = [e["kind"] for e in timeline["events"]]
        for earlier, later in zip(
            ["received", "offered", "accepted", "completed"], ["offered", "accepted", "completed"], strict=False
        ):
            assert earlier in kinds and later in kinds and kinds.index(earlier) < kinds.index(later), kinds
        # The same contact posted again (a telephony retry) is a duplicate: no second routing.
        again = await http.post(f"{intake.url}/v1/contacts", json=contact("CA-100"))
        assert again.status_code == 202 and again.json()["duplicate"] is True
        assert again.json()["contact_id"] == contact_id


async def test_contacts_accepted_while_the_router_is_dead_are_all_served_exactly_once(
    services: Callable[..., ServiceProcess],
) -> None:
    intake = services("intake")
    router = services("router", env=ROUTER_ENV)
    headers = {name: await register(router, name, ["service"]) for name in ("alice", "bob")}
    router.kill()  # SIGKILL: a crash, not a shutdown

    async with httpx.AsyncClient() as http:
        ids = []
        for i in range(4):  # intake keeps accepting: the bus holds what the router has not seen yet
            r = await http.post(f"{intake.url}/v1/contacts", json=contact(f"CA-2{i}"))
            assert r.status_code == 202, r.text
            ids.append(r.json()["contact_id"])

        router.start()  # same data dir: state and the bus offsets come back
        served: dict[str, str] = {}
        async with (
            agent_stream(router.url, "alice", headers["alice"]) as sa,
            agent_stream(router.url, "bob", headers["bob"]) as sb,
        ):
            streams = {"alice": sa, "bob": sb}

            async def work(agent: str) -> None:
                stream = streams[agent]
                while len(served) < len(ids):
                    offer = await stream.wait_for(
                        "offer", lambda d: d["contact_id"] not in served and d["agent_id"] == agent, timeout=30
                    )
                    r = await http.post(f"{router.url}/v1/offers/{offer['offer_id']}/accept", headers=headers[agent])
                    if r.status_code != 200:
                        continue
                    assert offer["contact_id"] not in served, "a contact was assigned twice"
                    served[offer["contact_id"]] = agent
                    r = await http.post(
                        f"{router.url}/v1/contacts/{offer['contact_id']}/complete",
                        headers=headers[agent],
                        json={"resolved": True},
                    )
                    assert r.status_code == 200, r.text
                    # Ready for the next one: end the (30 s voice) wrap-up early, as an agent's client does.
                    r = await http.put(
                        f"{router.url}/v1/agents/{agent}/status", headers=headers[agent], json={"status": "available"}
                    )
                    assert r.status_code == 200, r.text

            workers = [asyncio.create_task(work(a)) for a in streams]
            async with asyncio.timeout(90):
                while len(served) < len(ids):
                    await asyncio.sleep(0.1)
            for w in workers:
                w.cancel()
            await asyncio.gather(*workers, return_exceptions=True)
        assert sorted(served) == sorted(ids)
        queue = (await http.get(f"{router.url}/v1/queue", headers=ADMIN_HEADERS)).json()
        assert queue["count"] == 0
