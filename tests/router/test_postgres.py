"""The production store: the same router on PostgreSQL (migrations, transactions, rebuild on restart).

Skipped with a reason unless SWITCHBOARD_TEST_POSTGRES_URL points at a server; each test gets its own
database, dropped afterwards, so parallel runs never clash."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.router.conftest import ADMIN, contact, eventually, running_router

pytestmark = pytest.mark.postgres


async def test_routing_on_postgres_survives_a_restart(tmp_path: Path, postgres_url: str) -> None:
    data = tmp_path / "data"
    async with running_router(data, database_url=postgres_url) as router:
        _, alice = await router.register("alice", capacity={"chat": 1})
        _, bob = await router.register("bob", capacity={"chat": 1})
        first, second, third = contact("pg1"), contact("pg2"), contact("pg3")
        for c in (first, second, third):
            await router.emit(c)
        offer_a = await router.wait_offer("alice", alice)
        offer_b = await router.wait_offer("bob", bob)
        r = await router.client.post(f"/v1/offers/{offer_a['offer_id']}/accept", headers=alice)
        assert r.status_code == 200
        r = await router.client.post(f"/v1/offers/{offer_b['offer_id']}/decline", headers=bob)
        assert r.status_code == 200
        reoffer = await router.wait_offer("bob", bob)
        assert reoffer["contact_id"] != offer_b["contact_id"]  # bob is not offered what he declined
        waiting = await router.queue_ids()
        assert waiting == [offer_b["contact_id"]]

    # a new process on the same database: the queue, the open offer and the assignment are all back
    async with running_router(data, database_url=postgres_url) as router:
        assert await router.queue_ids() == waiting
        assert [o["offer_id"] for o in await router.offers_of("bob", bob)] == [reoffer["offer_id"]]
        assigned = (await router.client.get("/v1/agents/alice/assignments", headers=alice)).json()["items"]
        assert [a["contact_id"] for a in assigned] == [offer_a["contact_id"]]
        r = await router.client.post(
            f"/v1/contacts/{offer_a['contact_id']}/complete", json={"sold": True}, headers=alice
        )
        assert r.status_code == 200, r.text
        await router.client.put("/v1/agents/alice/status", json={"status": "available"}, headers=alice)
        last = await router.wait_offer("alice", alice)
        assert last["contact_id"] == offer_b["contact_id"]
        stats = (await router.client.get("/v1/stats", headers=ADMIN)).json()
        assert stats["today"]["sold"] == 1 and stats["offers_outstanding"] == 2
        agents = (await router.client.get("/v1/agents", headers=ADMIN)).json()["items"]
        assert {a["agent_id"]: a["load"] for a in agents} == {"alice": {"chat": 1}, "bob": {"chat": 1}}

        async def events_on_timeline() -> bool:
            kinds = [e["kind"] for e in await router.timeline(offer_b["contact_id"])]
            return kinds == ["received", "queued", "offered", "declined", "requeued", "offered"]

        await eventually(events_on_timeline)
