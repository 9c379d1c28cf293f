"""The production store: the same router on PostgreSQL (migrations, transactions, rebuild on restart).

Skipped with a reason unless SWITCHBOARD_TEST_POSTGRES_URL points at a server; each test gets its own
database, dropped afterwards, so parallel runs never clash."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import delete

from services.router.leeway import role_of
from services.router.rows import agent_row, contact_to_complete, offered_role, take_offer
from services.router.store import agents
from shared.events import Role
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


async def test_the_merged_statements_answer_as_the_lookups_they_replace(tmp_path: Path, postgres_url: str) -> None:
    """An accept takes the offer and reads its agent's columns in one UPDATE, a completion reads the
    contact with the accepted offer's explanation in one SELECT (a round trip less each on PostgreSQL):
    on asyncpg the correlated columns come back decoded, as the separate lookups return them."""
    async with running_router(tmp_path / "data", database_url=postgres_url) as router:
        _, alice = await router.register("alice", contact_uris={"voice": "client:alice"})
        c = contact("pg-merged")
        await router.emit(c)
        offer = await router.wait_offer("alice", alice)
        sessionmaker = router.app.state.runtime.sessionmaker
        async with sessionmaker() as session:  # never committed: rolled back when it closes
            before = await contact_to_complete(session, c.contact_id)
            assert before.accepted_explanation is None  # offered, not accepted yet
            taken = await take_offer(session, offer["offer_id"], 1.0)
            agent = await agent_row(session, "alice")
            assert taken.explanation == offer["explanation"]
            assert (taken.agent_missed_offers, taken.agent_contact_uris) == (agent.missed_offers, agent.contact_uris)
            assert taken.agent_contact_uris == {"voice": "client:alice"}
            assert await take_offer(session, offer["offer_id"], 2.0) is None  # accepted: not pending any more
            assert await take_offer(session, "no-such-offer", 2.0) is None
        async with sessionmaker() as session:
            await session.execute(delete(agents).where(agents.c.agent_id == "alice"))
            assert await take_offer(session, offer["offer_id"], 1.0) is None  # its agent is gone: not taken
        r = await router.client.post(f"/v1/offers/{offer['offer_id']}/accept", headers=alice)
        assert r.status_code == 200, r.text
        async with sessionmaker() as session:
            row = await contact_to_complete(session, c.contact_id)
            assert row.state == "assigned" and row.agent_id == "alice"
            assert row.accepted_explanation == offer["explanation"]
            assert role_of(row.accepted_explanation) == await offered_role(session, c.contact_id, "alice")
            assert role_of(row.accepted_explanation) is Role.SERVICE
        r = await router.client.post(f"/v1/contacts/{c.contact_id}/complete", json={}, headers=alice)
        assert r.status_code == 200, r.text
