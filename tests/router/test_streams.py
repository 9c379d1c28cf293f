"""Agent streams (SSE): real-time offers and assignments, heartbeats, auth; presence with a grace period."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx

from tests.router.conftest import Router, agent_stream, contact, eventually, running_router


async def test_stream_delivers_snapshot_offers_assignments_and_heartbeats(router: Router) -> None:
    _, alice = await router.register("alice")
    async with agent_stream(router.url, "alice", alice) as stream:
        hello = await stream.wait_for("hello")
        assert hello["agent"]["agent_id"] == "alice" and hello["offers"] == [] and hello["assignments"] == []
        c = contact("s1")
        await router.emit(c)
        offer = await stream.wait_for("offer", lambda d: d["contact_id"] == c.contact_id)
        assert offer["agent_id"] == "alice" and offer["expires_at"] and offer["rule"] == "general"
        assert offer["plan"]["upsell"] is offer["explanation"]["upsell"]  # the strategy decides
        r = await router.client.post(f"/v1/offers/{offer['offer_id']}/accept", headers=alice)
        assert r.status_code == 200
        assignment = await stream.wait_for("assignment")
        assert assignment["contact_id"] == c.contact_id
        await stream.wait_for("work", lambda d: d["activity"] == "on_contact" and d["load"] == {"chat": 1})
        await router.client.post(f"/v1/contacts/{c.contact_id}/complete", json={"resolved": True}, headers=alice)
        done = await stream.wait_for("assignment_completed")
        assert done["outcome"]["resolved"] is True
        wrap = await stream.wait_for("work", lambda d: d["activity"] == "wrap_up")
        assert wrap["previous"] == "on_contact" and wrap["wrap_up_until"] and wrap["load"] == {}
        assert not [d for e, d in stream.events if e == "status"]  # the agent's own status never moved

        async def heartbeat() -> bool:
            return stream.comments > 0

        await eventually(heartbeat, timeout=5)  # heartbeat_seconds is 1 in the tests


async def test_reconnect_gets_open_offers_in_the_snapshot(router: Router) -> None:
    _, alice = await router.register("alice")
    c = contact("s2")
    await router.emit(c)
    offer = await router.wait_offer("alice", alice)
    async with agent_stream(router.url, "alice", alice) as stream:
        hello = await stream.wait_for("hello")
        assert [o["offer_id"] for o in hello["offers"]] == [offer["offer_id"]]


async def test_offer_closed_is_pushed_when_an_offer_is_declined(router: Router) -> None:
    _, alice = await router.register("alice")
    async with agent_stream(router.url, "alice", alice) as stream:
        await router.emit(contact("s3"))
        offer = await stream.wait_for("offer")
        await router.client.post(f"/v1/offers/{offer['offer_id']}/decline", headers=alice)
        closed = await stream.wait_for("offer_closed")
        assert closed == {
            "offer_id": offer["offer_id"],
            "contact_id": offer["contact_id"],
            "state": "declined",
            "reason": "declined",
        }


async def test_stream_auth(router: Router) -> None:
    _, alice = await router.register("alice")
    _, bob = await router.register("bob")
    async with httpx.AsyncClient(base_url=router.url) as client:
        assert (await client.get("/v1/agents/alice/stream")).status_code == 401
        assert (await client.get("/v1/agents/alice/stream", headers={"Authorization": "Bearer x"})).status_code == 401
        assert (await client.get("/v1/agents/alice/stream", headers=bob)).status_code == 403
    # browsers' EventSource cannot send headers: the token may come as a query parameter
    token = alice["Authorization"].split()[1]
    async with agent_stream(router.url, "alice", {}, params={"access_token": token}) as s:
        await s.wait_for("hello")


async def test_presence_grace_period(tmp_path: Path) -> None:
    """An agent without an open stream gets offers only during the grace period."""
    async with running_router(tmp_path / "data", presence_grace_seconds=0.5) as router:
        _, alice = await router.register("alice")
        await asyncio.sleep(1.0)  # never connected: the grace since registration ran out
        c = contact("p1")
        await router.emit(c)
        await eventually(router.queue_ids)
        await asyncio.sleep(0.5)  # several ticks: nothing may be offered to an absent agent
        assert await router.offers_of("alice", alice) == []
        assert (await router.client.get("/v1/agents/alice", headers=alice)).json()["present"] is False
        async with agent_stream(router.url, "alice", alice) as stream:
            offer = await stream.wait_for("offer")  # connecting makes her present: the offer follows
            assert offer["contact_id"] == c.contact_id
            await router.client.post(f"/v1/offers/{offer['offer_id']}/accept", headers=alice)
            await router.client.post(f"/v1/contacts/{c.contact_id}/complete", json={}, headers=alice)
            await router.client.put("/v1/agents/alice/status", json={"status": "available"}, headers=alice)
        # the stream closed: during the grace period she still counts as present...
        me = (await router.client.get("/v1/agents/alice", headers=alice)).json()
        assert me["connected"] is False
        await asyncio.sleep(1.0)
        # ...after it, no more offers
        c2 = contact("p2")
        await router.emit(c2)

        async def queued() -> bool:
            return c2.contact_id in await router.queue_ids()

        await eventually(queued)
        await asyncio.sleep(0.5)
        assert await router.offers_of("alice", alice) == []
        assert (await router.client.get("/v1/agents/alice", headers=alice)).json()["present"] is False


async def test_offers_of_an_agent_gone_beyond_the_grace_go_to_the_next_agent(tmp_path: Path) -> None:
    async with running_router(tmp_path / "data", presence_grace_seconds=0.5, offer_timeout_seconds=60) as router:
        _, alice = await router.register("alice")
        _, bob = await router.register("bob")
        async with agent_stream(router.url, "bob", bob) as bob_stream:
            async with agent_stream(router.url, "alice", alice) as alice_stream:
                c = contact("lost")
                await router.emit(c)
                offer = await alice_stream.wait_for("offer")  # alice has been idle longest
            # alice's client vanished with the offer open; bob gets it once her grace has run out,
            # long before the 60 s lease would have expired
            reoffer = await bob_stream.wait_for("offer", timeout=15)
        assert reoffer["contact_id"] == c.contact_id
        closed = (await router.client.get(f"/v1/offers/{offer['offer_id']}", headers=alice)).json()
        assert closed["state"] == "declined" and closed["reason"] == "agent_disconnected"
        me = (await router.client.get("/v1/agents/alice", headers=alice)).json()
        assert me["missed_offers"] == 0 and me["load"] == {} and me["present"] is False
