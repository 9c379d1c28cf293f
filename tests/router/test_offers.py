"""Offers as leases: accept, decline and time out, re-offer to the next agent, misses -> break,
abandonment during an offer, and the invariants under a random workload."""

from __future__ import annotations

import asyncio
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import func, select

from services.router.store import ContactState, OfferState, contacts, offers
from shared import topics
from shared.events import CallbackDue, Channel, ContactAbandoned, Customer, OfferMade, OfferTimedOut
from tests.router.conftest import (
    ADMIN,
    Router,
    collect_events,
    contact,
    eventually,
    running_router,
    write_strategy,
)


def kinds(events: list[dict]) -> list[str]:
    return [e["kind"] for e in events]


async def test_offer_accept_makes_an_assignment_with_an_explained_decision(router: Router) -> None:
    _, alice = await router.register("alice")
    c = contact("c1")
    await router.emit(c)
    offer = await router.wait_offer("alice", alice)
    assert offer["contact_id"] == c.contact_id
    assert offer["rule"] == "general" and offer["explanation"]["role"] == "service"
    assert offer["contact"]["customer"]["id"] == "cust-c1"
    r = await router.client.post(f"/v1/offers/{offer['offer_id']}/accept", headers=alice)
    assert r.status_code == 200, r.text
    assert r.json()["contact_id"] == c.contact_id
    assigned = await router.client.get("/v1/agents/alice/assignments", headers=alice)
    assert [a["contact_id"] for a in assigned.json()["items"]] == [c.contact_id]
    me = (await router.client.get("/v1/agents/alice", headers=alice)).json()
    assert me["status"] == "available" and me["activity"] == "on_contact" and me["load"] == {"chat": 1}
    again = await router.client.post(f"/v1/offers/{offer['offer_id']}/accept", headers=alice)
    assert again.status_code == 409
    assert await router.queue_ids() == []
    timeline = await router.timeline(c.contact_id)
    assert kinds(timeline) == ["received", "queued", "offered", "accepted"]
    offered = timeline[2]
    assert offered["agent_id"] == "alice" and offered["rule"] == "general" and "score" in offered
    assert offered["explanation"]["tie_break"] == "longest_idle"


async def test_decline_reoffers_to_the_next_agent(router: Router) -> None:
    _, alice = await router.register("alice")
    _, bob = await router.register("bob")
    c = contact("c1")
    await router.emit(c)
    first = await router.wait_offer("alice", alice)  # alice has been idle longest
    r = await router.client.post(
        f"/v1/offers/{first['offer_id']}/decline", json={"reason": "on a break soon"}, headers=alice
    )
    assert r.status_code == 200 and r.json()["state"] == "declined"
    second = await router.wait_offer("bob", bob)
    assert second["contact_id"] == c.contact_id
    assert await router.offers_of("alice", alice) == []  # not offered back to the one who declined
    timeline = await router.timeline(c.contact_id)
    assert kinds(timeline) == ["received", "queued", "offered", "declined", "requeued", "offered"]
    assert timeline[3]["reason"] == "on a break soon"
    assert [e["agent_id"] for e in timeline if e["kind"] == "offered"] == ["alice", "bob"]
    assert (await router.client.post(f"/v1/offers/{first['offer_id']}/accept", headers=alice)).status_code == 409


async def test_the_only_agent_who_declined_gets_it_back_after_the_short_pause(tmp_path: Path) -> None:
    """Nobody else could take it: the customer waits reoffer_alone_after_seconds, not reoffer_after_seconds."""
    strategy = write_strategy(tmp_path / "s.yaml", reoffer_after_seconds=300, reoffer_alone_after_seconds=1)
    async with running_router(tmp_path / "data", strategy_path=strategy) as router:
        _, alice = await router.register("alice")
        c = contact("alone")
        await router.emit(c)
        first = await router.wait_offer("alice", alice)
        declined = await router.client.post(f"/v1/offers/{first['offer_id']}/decline", headers=alice)
        assert declined.status_code == 200
        assert await router.offers_of("alice", alice) == []  # not at once: she just said no
        again = await router.wait_offer("alice", alice)
        assert again["contact_id"] == c.contact_id and again["offer_id"] != first["offer_id"]
        assert again["explanation"]["asked_again"] is True and first["explanation"]["asked_again"] is False
        me = (await router.client.get("/v1/agents/alice", headers=alice)).json()
        assert me["missed_offers"] == 0  # a decline is an answer, not a miss
        timeline = await router.timeline(c.contact_id)
        assert kinds(timeline) == ["received", "queued", "offered", "declined", "requeued", "offered"]
        declined_at, offered_again_at = (datetime.fromisoformat(timeline[i]["at"]) for i in (3, 5))
        assert (offered_again_at - declined_at).total_seconds() >= 1.0  # the pause was kept


async def still_not_offered(router: Router, agent_id: str, headers: dict[str, str], seconds: float = 1.0) -> None:
    """Many ticks (50 ms each) pass without an offer to this agent."""
    deadline = asyncio.get_running_loop().time() + seconds
    while asyncio.get_running_loop().time() < deadline:
        assert await router.offers_of(agent_id, headers) == []
        await asyncio.sleep(0.1)


async def test_a_restart_still_skips_the_agent_who_declined(tmp_path: Path) -> None:
    strategy = write_strategy(tmp_path / "s.yaml", reoffer_after_seconds=300, reoffer_alone_after_seconds=300)
    async with running_router(tmp_path / "data", strategy_path=strategy) as router:
        _, alice = await router.register("alice")
        c = contact("restart")
        await router.emit(c)
        first = await router.wait_offer("alice", alice)
        assert (await router.client.post(f"/v1/offers/{first['offer_id']}/decline", headers=alice)).status_code == 200
    async with running_router(tmp_path / "data", strategy_path=strategy) as router:  # a new process
        await still_not_offered(router, "alice", alice)  # the engine was rebuilt knowing she said no
        assert await router.queue_ids() == [c.contact_id]
        _, bob = await router.register("bob")
        assert (await router.wait_offer("bob", bob))["contact_id"] == c.contact_id


async def test_a_callback_escalated_during_its_offer_keeps_who_declined_it(tmp_path: Path) -> None:
    """callback.due again while offered: the offer stands, and when it is declined the callback returns
    with the new terms, still skipping everyone who declined it before."""
    strategy = write_strategy(tmp_path / "s.yaml", reoffer_after_seconds=300, reoffer_alone_after_seconds=300)
    async with running_router(tmp_path / "data", strategy_path=strategy) as router:
        _, alice = await router.register("alice")
        _, bob = await router.register("bob")

        def due(boost: float) -> CallbackDue:
            now = datetime.now(UTC)
            return CallbackDue(
                callback_id="cb-escalated",
                customer=Customer(id="cust-cb"),
                channel=Channel.VOICE,
                deadline=now + timedelta(hours=1),
                attempt=1,
                priority_boost=boost,
                virtual_start_time=now,
            )

        await router.bus.emit(due(0.0), source="switchboard/callback")
        first = await router.wait_offer("alice", alice)  # alice has been idle longest
        await router.client.post(f"/v1/offers/{first['offer_id']}/decline", headers=alice)
        second = await router.wait_offer("bob", bob)
        await router.bus.emit(due(50.0), source="switchboard/callback")  # escalated while bob has it

        async def noted() -> bool:
            return "callback_updated" in kinds(await router.timeline("cb-escalated"))

        await eventually(noted)
        await router.client.post(f"/v1/offers/{second['offer_id']}/decline", headers=bob)
        await still_not_offered(router, "alice", alice)
        await still_not_offered(router, "bob", bob, seconds=0.3)
        _, carol = await router.register("carol")
        third = await router.wait_offer("carol", carol)
        assert third["contact_id"] == "cb-escalated"
        assert third["explanation"]["priority"] > second["explanation"]["priority"]  # with the new terms


async def test_agents_only_touch_their_own_offers(router: Router) -> None:
    _, alice = await router.register("alice")
    _, bob = await router.register("bob", status="offline")
    c = contact("c1")
    await router.emit(c)
    offer = await router.wait_offer("alice", alice)
    for action in ("accept", "decline"):
        assert (await router.client.post(f"/v1/offers/{offer['offer_id']}/{action}", headers=bob)).status_code == 403
    assert (await router.client.get(f"/v1/offers/{offer['offer_id']}", headers=bob)).status_code == 403
    assert (await router.client.post(f"/v1/offers/{offer['offer_id']}/accept")).status_code == 401
    assert (await router.client.post("/v1/offers/nope/accept", headers=alice)).status_code == 404
    assert (await router.client.get(f"/v1/contacts/{c.contact_id}/timeline", headers=bob)).status_code == 403
    # The timeline is customer data: not even the agent it was offered to reads it (supervisor or admin).
    assert (await router.client.get(f"/v1/contacts/{c.contact_id}/timeline", headers=alice)).status_code == 403
    assert (await router.client.get(f"/v1/contacts/{c.contact_id}/timeline", headers=ADMIN)).status_code == 200
    r = await router.client.post(f"/v1/contacts/{c.contact_id}/complete", json={}, headers=bob)
    assert r.status_code == 403


async def test_timeout_reoffers_and_counts_a_miss(tmp_path: Path) -> None:
    async with running_router(tmp_path / "data", offer_timeout_seconds=0.4) as router:
        # Watch the emitted events rather than poll: a 0.4 s lease may come and go between two polls.
        async with collect_events(router.bus, topics.ROUTING, "test-timeouts") as routing:
            _, alice = await router.register("alice")
            await router.register("bob")
            c = contact("c1")
            await router.emit(c)

            async def reoffered() -> list:
                made = [(e.agent_id, e.offer_id) for e in routing if isinstance(e, OfferMade)]
                return made if len(made) >= 2 else []

            made = await eventually(reoffered)
        assert [agent for agent, _ in made[:2]] == ["alice", "bob"]  # alice let it expire: bob is next
        first = made[0][1]
        timed_out = [e for e in routing if isinstance(e, OfferTimedOut)]
        assert timed_out[0].offer_id == first and timed_out[0].agent_id == "alice"
        r = await router.client.get(f"/v1/offers/{first}", headers=alice)
        assert r.json()["state"] == "timed_out"
        assert (await router.client.post(f"/v1/offers/{first}/accept", headers=alice)).status_code == 409
        me = (await router.client.get("/v1/agents/alice", headers=alice)).json()
        assert me["missed_offers"] == 1 and me["status"] == "available" and me["load"] == {}
        assert "timed_out" in kinds(await router.timeline(c.contact_id))


async def test_an_accept_ends_the_run_of_misses(tmp_path: Path) -> None:
    """The accept reads the agent's misses with the offer (one statement) and clears them in the row."""
    async with running_router(tmp_path / "data", offer_timeout_seconds=1.0) as router:
        _, alice = await router.register("alice", capacity={"chat": 2})

        async def counted() -> bool:
            me = (await router.client.get("/v1/agents/alice", headers=alice)).json()
            return bool(me["missed_offers"] == 1)

        await router.emit(contact("c1"))
        missed = await router.wait_offer("alice", alice)
        await eventually(counted)  # the lease ran out: one miss
        await router.emit(contact("c2"))

        async def fresh() -> dict | None:
            return next(
                (o for o in await router.offers_of("alice", alice) if o["offer_id"] != missed["offer_id"]), None
            )

        offer = await eventually(fresh)
        r = await router.client.post(f"/v1/offers/{offer['offer_id']}/accept", headers=alice)
        assert r.status_code == 200, r.text
        me = (await router.client.get("/v1/agents/alice", headers=alice)).json()
        assert me["missed_offers"] == 0


async def test_repeated_misses_send_the_agent_to_break(tmp_path: Path) -> None:
    async with running_router(tmp_path / "data", offer_timeout_seconds=0.4) as router:
        _, alice = await router.register("alice", capacity={"chat": 3})
        ids = []
        for i in range(3):  # max_missed_offers is 3 in the default strategy
            c = contact(f"c{i}")
            ids.append(c.contact_id)
            await router.emit(c)

        async def on_break() -> bool:
            return (await router.client.get("/v1/agents/alice", headers=alice)).json()["status"] == "break"

        await eventually(on_break)
        me = (await router.client.get("/v1/agents/alice", headers=alice)).json()
        assert me["status_reason"] == "missed_offers" and me["load"] == {}
        assert sorted(await router.queue_ids()) == sorted(ids)  # nothing lost: all back in line
        assert await router.offers_of("alice", alice) == []
        # back from break: the misses are forgiven and offers flow again (new work; the missed contacts
        # are not offered back to her for the strategy's reoffer_after_seconds)
        async with collect_events(router.bus, topics.ROUTING, "test-misses") as routing:
            await router.client.put("/v1/agents/alice/status", json={"status": "available"}, headers=alice)
            assert (await router.client.get("/v1/agents/alice", headers=alice)).json()["missed_offers"] == 0
            fresh = contact("fresh")
            await router.emit(fresh)

            async def offered_fresh() -> list:
                return [e for e in routing if isinstance(e, OfferMade) and e.contact_id == fresh.contact_id]

            (made,) = await eventually(offered_fresh)
        assert made.agent_id == "alice"


async def test_going_on_break_withdraws_open_offers(router: Router) -> None:
    _, alice = await router.register("alice")
    _, bob = await router.register("bob", status="offline")
    c = contact("c1")
    await router.emit(c)
    offer = await router.wait_offer("alice", alice)
    await router.client.put("/v1/agents/alice/status", json={"status": "break"}, headers=alice)
    assert (await router.client.get(f"/v1/offers/{offer['offer_id']}", headers=alice)).json()["state"] == "declined"
    assert await router.queue_ids() == [c.contact_id]
    await router.client.put("/v1/agents/bob/status", json={"status": "available"}, headers=bob)
    assert (await router.wait_offer("bob", bob))["contact_id"] == c.contact_id


async def test_abandon_while_waiting_and_while_offered(router: Router) -> None:
    _, alice = await router.register("alice", status="offline")
    waiting = contact("w1")
    await router.emit(waiting)
    await eventually(router.queue_ids)
    await router.emit(ContactAbandoned(contact_id=waiting.contact_id))

    async def gone() -> bool:
        return waiting.contact_id not in await router.queue_ids()

    await eventually(gone)
    await router.client.put("/v1/agents/alice/status", json={"status": "available"}, headers=alice)
    offered = contact("o1")
    await router.emit(offered)
    offer = await router.wait_offer("alice", alice)
    assert offer["contact_id"] == offered.contact_id  # the abandoned one is never offered
    await router.emit(ContactAbandoned(contact_id=offered.contact_id))

    async def withdrawn() -> bool:
        r = await router.client.get(f"/v1/offers/{offer['offer_id']}", headers=alice)
        return r.json()["state"] == "withdrawn"

    await eventually(withdrawn)
    assert (await router.client.post(f"/v1/offers/{offer['offer_id']}/accept", headers=alice)).status_code == 409
    me = (await router.client.get("/v1/agents/alice", headers=alice)).json()
    assert me["load"] == {} and me["status"] == "available"
    assert kinds(await router.timeline(offered.contact_id))[-2:] == ["offer_withdrawn", "abandoned"]
    stats = (await router.client.get("/v1/stats", headers=ADMIN)).json()
    assert stats["service_level"]["chat"]["abandoned"] == 2


async def test_redelivered_and_duplicate_contacts_are_routed_once(router: Router) -> None:
    await router.register("alice", status="offline")
    c = contact("dup")
    envelope = await router.bus.emit(c, source="test")
    await router.bus.emit(c, source="test", event_id=envelope.id)  # redelivery: same event id
    await router.bus.emit(c, source="test")  # a retried webhook: new event id, same contact id
    await router.emit(contact("other"))

    async def both() -> list[str]:
        ids = await router.queue_ids()
        return ids if len(ids) >= 2 else []

    ids = await eventually(both)
    assert sorted(ids) == sorted([c.contact_id, contact("other").contact_id])
    # once each (nobody is on duty, so the contact is also flagged unservable, once)
    assert kinds(await router.timeline(c.contact_id)) == ["received", "queued", "unservable"]


async def test_invariants_under_a_random_workload(router: Router) -> None:
    """Agents accept, decline and complete at random; no contact is lost or double-assigned and no
    agent exceeds its capacity at any observed moment."""
    rng = random.Random(4)
    capacity = {f"a{i}": rng.choice([1, 2, 3]) for i in range(5)}
    tokens = {}
    for agent_id, cap in capacity.items():
        _, tokens[agent_id] = await router.register(agent_id, capacity={"chat": cap})
    ids = []
    for i in range(30):
        c = contact(f"r{i}", intent=rng.choice(["support", "billing", "question", None]))
        ids.append(c.contact_id)
        await router.emit(c)

    async def all_received() -> bool:
        async with router.service.sessionmaker() as session:
            return (await session.execute(select(func.count()).select_from(contacts))).scalar_one() == len(ids)

    await eventually(all_received)

    async def check_invariants() -> int:
        async with router.service.sessionmaker() as session:
            accepted = (
                await session.execute(
                    select(offers.c.contact_id, func.count())
                    .where(offers.c.state == OfferState.ACCEPTED)
                    .group_by(offers.c.contact_id)
                )
            ).all()
            assert all(n == 1 for _, n in accepted), accepted
            pending = (
                await session.execute(
                    select(offers.c.contact_id, func.count())
                    .where(offers.c.state == OfferState.PENDING)
                    .group_by(offers.c.contact_id)
                )
            ).all()
            assert all(n == 1 for _, n in pending), pending
            states = dict((await session.execute(select(contacts.c.contact_id, contacts.c.state))).all())
        assert set(states) == set(ids)  # every contact known, none lost
        for agent in (await router.client.get("/v1/agents", headers=ADMIN)).json()["items"]:
            assert sum(agent["load"].values()) <= capacity[agent["agent_id"]], agent
        return sum(1 for s in states.values() if s == ContactState.COMPLETED)

    declined: dict[str, int] = {}
    for _round in range(200):
        for agent_id, headers in tokens.items():
            for offer in await router.offers_of(agent_id, headers):
                # at most two declines per contact: a decliner is skipped for that contact for the
                # strategy's reoffer_after_seconds, and five decliners would park it for minutes
                declines = declined.get(offer["contact_id"], 0)
                action = "accept" if declines >= 2 or rng.random() < 0.7 else "decline"
                declined[offer["contact_id"]] = declines + (action == "decline")
                r = await router.client.post(f"/v1/offers/{offer['offer_id']}/{action}", headers=headers)
                assert r.status_code in (200, 409), r.text
            assignments = (await router.client.get(f"/v1/agents/{agent_id}/assignments", headers=headers)).json()
            for a in assignments["items"]:
                if rng.random() < 0.5:
                    r = await router.client.post(
                        f"/v1/contacts/{a['contact_id']}/complete", json={"resolved": True}, headers=headers
                    )
                    assert r.status_code == 200, r.text
            me = (await router.client.get(f"/v1/agents/{agent_id}", headers=headers)).json()
            if me["activity"] == "wrap_up":  # skip the wait: saying "available" ends the wrap-up
                await router.client.put(f"/v1/agents/{agent_id}/status", json={"status": "available"}, headers=headers)
        if await check_invariants() == len(ids):
            break
    assert await check_invariants() == len(ids)


async def test_languages_match_on_the_primary_subtag(router: Router) -> None:
    _, german = await router.register("german", languages=["de-DE"])
    _, english = await router.register("english", languages=["EN"])
    c = contact("lang", language="en-US")
    await router.emit(c)
    assert (await router.wait_offer("english", english))["contact_id"] == c.contact_id
    assert await router.offers_of("german", german) == []


async def test_queue_is_in_serving_order_and_filterable(router: Router) -> None:
    await router.register("alice", status="offline")
    standard = contact("std")
    vip = contact("vip", tier="vip")
    voice = contact("voice", channel="voice")
    for c in (standard, vip, voice):
        await router.emit(c)

    async def three() -> bool:
        return len(await router.queue_ids()) == 3

    await eventually(three)
    body = (await router.client.get("/v1/queue", headers=ADMIN)).json()
    assert body["total"] == 3 and body["items"][0]["contact_id"] == vip.contact_id  # higher priority first
    assert body["items"][0]["priority"] > body["items"][-1]["priority"] or len(body["items"]) == 1
    assert all(i["waited_seconds"] >= 0 for i in body["items"])
    chat = (await router.client.get("/v1/queue", params={"channel": "chat", "limit": 1}, headers=ADMIN)).json()
    assert [i["contact_id"] for i in chat["items"]] == [vip.contact_id] and chat["total"] == 3
    assert (await router.client.get("/v1/queue", params={"limit": 0}, headers=ADMIN)).status_code == 422
    assert (await router.client.get("/v1/queue", params={"channel": "fax"}, headers=ADMIN)).status_code == 422


async def test_completing_with_an_open_offer_alongside_releases_the_agent(tmp_path: Path) -> None:
    """An agent on one chat with a second chat offered completes the first and lets the offer run out:
    they must not stay "busy on_contact" with nothing assigned (the callback service releases callbacks
    only to available agents, and the router would count them as working forever)."""
    strategy = write_strategy(tmp_path / "s.yaml", channels={"chat": {"wrap_up_seconds": 0}})
    async with running_router(tmp_path / "data", strategy_path=strategy, offer_timeout_seconds=1.0) as router:
        _, alice = await router.register("alice", capacity={"chat": 2})
        first = contact("c1")
        await router.emit(first)
        offer = await router.wait_offer("alice", alice)
        assert (await router.client.post(f"/v1/offers/{offer['offer_id']}/accept", headers=alice)).status_code == 200
        await router.emit(contact("c2"))
        second = await router.wait_offer("alice", alice)
        assert second["contact_id"] != first.contact_id
        r = await router.client.post(f"/v1/contacts/{first.contact_id}/complete", json={}, headers=alice)
        assert r.status_code == 200, r.text
        me = (await router.client.get("/v1/agents/alice", headers=alice)).json()
        assert me["status"] == "available", me

        async def offer_gone() -> bool:
            r = await router.client.get(f"/v1/offers/{second['offer_id']}", headers=alice)
            return r.json()["state"] == "timed_out"

        await eventually(offer_gone)
        me = (await router.client.get("/v1/agents/alice", headers=alice)).json()
        assert me["status"] == "available" and me["load"] == {}, me
