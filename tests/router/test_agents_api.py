"""Agents API: registration, profiles, status, auth (401/403) and input validation (422)."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from services.router.store import agents
from tests.router.conftest import ADMIN, Router


async def test_register_returns_a_token_once_and_stores_only_its_hash(router: Router) -> None:
    agent, headers = await router.register(
        "alice", roles=["sales", "service"], primary_role="service", skills={"billing": 4}, team="red"
    )
    assert agent["agent_id"] == "alice"
    assert agent["roles"] == ["service", "sales"]  # primary first
    assert agent["primary_role"] == "service"
    assert agent["status"] == "available"
    assert agent["team"] == "red"
    token = agent["token"]
    async with router.service.sessionmaker() as session:
        stored = (await session.execute(select(agents.c.token_hash).where(agents.c.agent_id == "alice"))).scalar_one()
    assert token not in stored and len(stored) == 64
    me = await router.client.get("/v1/agents/alice", headers=headers)
    assert me.status_code == 200 and "token" not in me.json()


async def test_generated_id_and_listing(router: Router) -> None:
    r = await router.client.post(
        "/v1/agents", json={"name": "Bob", "roles": ["brand_ambassador"], "capacity": {"chat": 3}}, headers=ADMIN
    )
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["agent_id"] and body["status"] == "offline" and body["capacity"] == {"chat": 3}
    listing = await router.client.get("/v1/agents", headers=ADMIN)
    assert [a["agent_id"] for a in listing.json()["items"]] == [body["agent_id"]]


async def test_duplicate_agent_is_a_conflict(router: Router) -> None:
    await router.register("alice")
    r = await router.client.post(
        "/v1/agents", json={"agent_id": "alice", "name": "A", "roles": ["service"]}, headers=ADMIN
    )
    assert r.status_code == 409


async def test_auth_401_without_or_with_a_wrong_token(router: Router) -> None:
    await router.register("alice")
    for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": "Basic abc"}):
        r = await router.client.get("/v1/agents/alice", headers=headers)
        assert r.status_code == 401, headers
        assert r.headers["www-authenticate"] == "Bearer"
    assert (await router.client.post("/v1/agents", json={"name": "x", "roles": ["service"]})).status_code == 401


async def test_auth_403_agent_on_admin_or_other_agents_endpoints(router: Router) -> None:
    _, alice = await router.register("alice")
    await router.register("bob")
    assert (await router.client.get("/v1/agents", headers=alice)).status_code == 403
    assert (
        await router.client.post("/v1/agents", json={"name": "x", "roles": ["service"]}, headers=alice)
    ).status_code == 403
    for path in ("/v1/agents/bob", "/v1/agents/bob/offers", "/v1/agents/bob/assignments"):
        assert (await router.client.get(path, headers=alice)).status_code == 403, path
    r = await router.client.put("/v1/agents/bob/status", json={"status": "break"}, headers=alice)
    assert r.status_code == 403
    assert (await router.client.post("/v1/strategy/reload", headers=alice)).status_code == 403
    # the admin may act for any agent
    assert (await router.client.get("/v1/agents/bob/offers", headers=ADMIN)).status_code == 200


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "x", "roles": ["service"], "skills": {"billing": 7}}, "billing"),
        ({"name": "x", "roles": ["service"], "skills": {"billing": 0}}, "billing"),
        ({"name": "x", "roles": []}, "roles"),
        ({"name": "x", "roles": ["janitor"]}, "roles"),
        ({"name": "x", "roles": ["service", "service"]}, "roles"),
        ({"name": "x", "roles": ["service"], "primary_role": "sales"}, "primary_role"),
        ({"name": "x", "roles": ["service"], "capacity": {"fax": 1}}, "capacity"),
        ({"name": "x", "roles": ["service"], "capacity": {"chat": -1}}, "capacity"),
        ({"name": "x", "roles": ["service"], "capacity": {"chat": 0}}, "capacity"),
        ({"name": "", "roles": ["service"]}, "name"),
        ({"roles": ["service"]}, "name"),
        ({"name": "x", "roles": ["service"], "status": "wrap_up"}, "status"),
        ({"name": "x", "roles": ["service"], "agent_id": "has space"}, "agent_id"),
        ({"name": "x", "roles": ["service"], "unknown": 1}, "unknown"),
    ],
)
async def test_bad_input_is_422_with_field_messages(router: Router, body: dict, field: str) -> None:
    r = await router.client.post("/v1/agents", json=body, headers=ADMIN)
    assert r.status_code == 422, r.text
    errors = r.json()["detail"]
    assert errors and all("msg" in e and "loc" in e for e in errors)
    assert any(field in [str(p) for p in e["loc"]] or field in e["msg"] for e in errors), errors


async def test_update_profile_and_unknown_agent(router: Router) -> None:
    await router.register("alice")
    r = await router.client.put(
        "/v1/agents/alice",
        json={
            "name": "Alice B",
            "roles": ["sales"],
            "skills": {"upsell": 5},
            "languages": ["EN", "de"],
            "capacity": {"chat": 2},
        },
        headers=ADMIN,
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["name"], body["roles"], body["skills"], body["languages"], body["capacity"]) == (
        "Alice B",
        ["sales"],
        {"upsell": 5},
        ["en", "de"],
        {"chat": 2},
    )
    assert (
        await router.client.put("/v1/agents/ghost", json={"name": "g", "roles": ["service"]}, headers=ADMIN)
    ).status_code == 404
    assert (await router.client.get("/v1/agents/ghost", headers=ADMIN)).status_code == 404


async def test_status_changes_and_wrap_up_is_automatic_only(router: Router) -> None:
    _, alice = await router.register("alice", status="offline")
    r = await router.client.put("/v1/agents/alice/status", json={"status": "available"}, headers=alice)
    assert r.status_code == 200 and r.json()["status"] == "available"
    r = await router.client.put("/v1/agents/alice/status", json={"status": "break", "reason": "lunch"}, headers=alice)
    assert r.json()["status"] == "break" and r.json()["status_reason"] == "lunch"
    for not_chosen in ("wrap_up", "busy"):  # the router's view of work, not a status anyone chooses
        r = await router.client.put("/v1/agents/alice/status", json={"status": not_chosen}, headers=alice)
        assert r.status_code == 422 and "'available', 'break' or 'offline'" in r.text, r.text
    r = await router.client.put("/v1/agents/alice/status", json={"status": "asleep"}, headers=alice)
    assert r.status_code == 422


async def test_saying_available_again_changes_nothing_and_emits_nothing(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Clients say "available" after every contact; an agent the completion already made available must
    not cost a write, an agent.status_changed event (that every consumer applies) and a stream message."""
    from shared import topics
    from shared.events import AgentStatusChanged, AgentWorkChanged
    from tests.router.conftest import collect_events, contact, eventually, running_router, write_strategy

    strategy = write_strategy(tmp_path / "s.yaml", channels={"chat": {"wrap_up_seconds": 0}})
    async with running_router(tmp_path / "data", strategy_path=strategy) as router:
        async with collect_events(router.bus, topics.ROUTING, "test-status-again") as routing:
            _, alice = await router.register("alice")
            c = contact("again")
            await router.emit(c)
            offer = await router.wait_offer("alice", alice)
            r = await router.client.post(f"/v1/offers/{offer['offer_id']}/accept", headers=alice)
            assert r.status_code == 200
            r = await router.client.post(f"/v1/contacts/{c.contact_id}/complete", json={}, headers=alice)
            assert r.status_code == 200
            for _ in range(2):
                r = await router.client.put("/v1/agents/alice/status", json={"status": "available"}, headers=alice)
                assert r.status_code == 200 and r.json()["status"] == "available"
            r = await router.client.put(
                "/v1/agents/alice/status", json={"status": "break", "reason": "lunch"}, headers=alice
            )
            assert r.status_code == 200

            async def until_break() -> list:
                changes = [e for e in routing if isinstance(e, AgentStatusChanged) and e.agent_id == "alice"]
                return changes if changes and changes[-1].status == "break" else []

            changes = await eventually(until_break)
            work = [(e.previous, e.activity) for e in routing if isinstance(e, AgentWorkChanged)]
    # The status is the agent's own: taking and finishing a contact does not touch it.
    assert [(c.previous, c.status, c.reason) for c in changes] == [
        (None, "available", "registered"),
        ("available", "break", "lunch"),  # nothing for the two repeated "available"s in between
    ]
    # The work is the router's view, apart: offered, on the contact, idle again (no wrap-up here).
    assert work == [("idle", "offered"), ("offered", "on_contact"), ("on_contact", "idle")]


async def test_token_rotation_invalidates_the_old_token(router: Router) -> None:
    _, old = await router.register("alice")
    r = await router.client.post("/v1/agents/alice/token", headers=ADMIN)
    new = {"Authorization": f"Bearer {r.json()['token']}"}
    assert (await router.client.get("/v1/agents/alice", headers=old)).status_code == 401
    assert (await router.client.get("/v1/agents/alice", headers=new)).status_code == 200
