"""Completion with outcomes, wrap-up, callbacks (policy, promise, due, attempted), counters and the
events the router emits through its outbox."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from shared import topics
from shared.events import (
    AgentStatusChanged,
    AgentWorkChanged,
    AssignmentCompleted,
    CallbackAttempted,
    CallbackDue,
    CallbackOrigin,
    CallbackRequested,
    Channel,
    Customer,
    Intent,
    OfferAccepted,
    OfferDeclined,
    OfferMade,
    utcnow,
)
from tests.router.conftest import (
    ADMIN,
    Router,
    collect_events,
    contact,
    eventually,
    running_router,
    write_strategy,
)


async def serve(router: Router, agent_id: str, headers: dict[str, str]) -> dict:
    offer = await router.wait_offer(agent_id, headers)
    r = await router.client.post(f"/v1/offers/{offer['offer_id']}/accept", headers=headers)
    assert r.status_code == 200, r.text
    return offer


async def test_completion_wrap_up_and_the_emitted_events(tmp_path: Path) -> None:
    strategy = write_strategy(tmp_path / "s.yaml", channels={"chat": {"wrap_up_seconds": 0.3}})
    async with running_router(tmp_path / "data", strategy_path=strategy) as router:
        async with collect_events(router.bus, topics.ROUTING, "test-routing") as routing:
            _, alice = await router.register("alice")
            _, bob = await router.register("bob")
            c = contact("e1")
            await router.emit(c)
            first = await router.wait_offer("alice", alice)
            await router.client.post(f"/v1/offers/{first['offer_id']}/decline", headers=alice)
            await serve(router, "bob", bob)
            r = await router.client.post(
                f"/v1/contacts/{c.contact_id}/complete",
                json={"resolved": True, "notes": "reset the password"},
                headers=bob,
            )
            assert r.status_code == 200, r.text
            assert r.json()["state"] == "completed"

            async def available_again() -> bool:
                me = (await router.client.get("/v1/agents/bob", headers=bob)).json()
                return me["status"] == "available" and me["activity"] == "idle" and me["wrap_up_until"] is None

            await eventually(available_again)
            again = await router.client.post(f"/v1/contacts/{c.contact_id}/complete", json={}, headers=bob)
            assert again.status_code == 409

            def bob_statuses() -> list[str]:
                return [e.status.value for e in routing if isinstance(e, AgentStatusChanged) and e.agent_id == "bob"]

            def bob_work() -> list[str]:
                return [e.activity.value for e in routing if isinstance(e, AgentWorkChanged) and e.agent_id == "bob"]

            async def all_events() -> bool:
                return bob_work()[-1:] == ["idle"] and any(isinstance(e, AssignmentCompleted) for e in routing)

            await eventually(all_events)
        assert bob_statuses() == ["available"]  # registered available; working never changes it
        assert bob_work() == ["offered", "on_contact", "wrap_up", "idle"]
        wrap = next(e for e in routing if isinstance(e, AgentWorkChanged) and e.activity == "wrap_up")
        assert wrap.wrap_up_until is not None and wrap.wrap_up_until > wrap.at and wrap.load == {}
        made = [e for e in routing if isinstance(e, OfferMade)]
        assert [(m.agent_id, m.contact_id) for m in made] == [("alice", c.contact_id), ("bob", c.contact_id)]
        assert made[0].rule == "general" and made[0].explanation["role"] == "service"
        assert made[0].expires_at > made[0].at
        assert [e.agent_id for e in routing if isinstance(e, OfferDeclined)] == ["alice"]
        assert [e.agent_id for e in routing if isinstance(e, OfferAccepted)] == ["bob"]
        (done,) = [e for e in routing if isinstance(e, AssignmentCompleted)]
        assert done.agent_id == "bob" and done.outcome.resolved and done.outcome.notes == "reset the password"
        assert done.customer is not None and done.customer.id == "cust-e1" and done.handled_seconds is not None


async def test_callback_policy_outside_business_hours_and_customer_request(router: Router) -> None:
    async with collect_events(router.bus, topics.CALLBACKS, "test-callbacks") as callbacks:
        await router.register("alice")
        closed = contact("night", channel=Channel.VOICE, within_business_hours=False)
        asked = contact("asked", channel=Channel.WEB_CALLBACK, callback_requested=True)
        await router.emit(closed)
        await router.emit(asked)

        async def both() -> bool:
            return len(callbacks) >= 2

        await eventually(both)
        assert await router.queue_ids() == []
    by_contact = {e.contact_id: e for e in callbacks if isinstance(e, CallbackRequested)}
    night = by_contact[closed.contact_id]
    assert night.origin is CallbackOrigin.ROUTER_POLICY and night.reason == "outside_business_hours"
    assert night.virtual_start_time == closed.received_at  # the customer keeps the place in line
    assert by_contact[asked.contact_id].origin is CallbackOrigin.WEB_FORM
    events = await router.timeline(closed.contact_id)
    assert [e["kind"] for e in events] == ["received", "callback_offered"]


async def test_callback_due_keeps_its_place_and_its_attempt_is_reported(router: Router) -> None:
    _, alice = await router.register("alice", status="offline", capacity={"voice": 1})
    fresh = contact("fresh", channel=Channel.VOICE)
    await router.emit(fresh)
    await eventually(router.queue_ids)
    now = utcnow()
    due = CallbackDue(
        callback_id="cb-1",
        customer=Customer(id="cust-cb", phone="+4930901820"),
        contact_id="orig-1",
        intent=Intent.SUPPORT,
        channel=Channel.VOICE,
        deadline=now + timedelta(hours=2),
        virtual_start_time=now - timedelta(minutes=10),  # waited 10 minutes before the callback was offered
    )
    async with (
        collect_events(router.bus, topics.CALLBACKS, "test-callbacks-due") as callbacks,
        collect_events(router.bus, topics.ROUTING, "test-routing-due") as routing,
    ):
        await router.emit(due)

        async def two_waiting() -> list:
            items = (await router.client.get("/v1/queue", headers=ADMIN)).json()["items"]
            return items if len(items) == 2 else []

        items = await eventually(two_waiting)
        assert items[0]["callback_id"] == "cb-1"  # its original place: ahead of the newer caller
        assert items[0]["waited_seconds"] >= 600 and items[1]["contact_id"] == fresh.contact_id
        await router.client.put("/v1/agents/alice/status", json={"status": "available"}, headers=alice)
        offer = await serve(router, "alice", alice)
        assert offer["contact"]["callback_id"] == "cb-1"
        work_id = offer["contact_id"]
        r = await router.client.post(f"/v1/contacts/{work_id}/complete", json={"resolved": False}, headers=alice)
        assert r.status_code == 422 and "attempt_result" in r.text
        r = await router.client.post(
            f"/v1/contacts/{work_id}/complete",
            json={"attempt_result": "no_answer", "notes": "rang 6 times"},
            headers=alice,
        )
        assert r.status_code == 200, r.text

        async def attempted() -> list:
            return [e for e in callbacks if isinstance(e, CallbackAttempted)]

        (attempt,) = await eventually(attempted)

        async def acceptance() -> list[OfferAccepted]:
            return [e for e in routing if isinstance(e, OfferAccepted)]

        (taken,) = await eventually(acceptance)
    assert attempt.callback_id == "cb-1" and attempt.result.value == "no_answer" and attempt.agent_id == "alice"
    assert taken.contact_id == "cb-1" and taken.is_callback  # the callback service looks up only these
    assert work_id == "cb-1"  # offers for a callback carry the callback id (the callback service's contract)
    assert (await router.timeline(work_id))[-1]["kind"] == "completed"


async def test_callback_due_upserts_and_closed_callbacks_leave_the_queue(router: Router) -> None:
    _, alice = await router.register("alice", status="offline", capacity={"voice": 1})
    now = utcnow()

    def due(**changes: object) -> CallbackDue:
        base = dict(
            callback_id="cb-9",
            customer=Customer(id="cust-9"),
            channel=Channel.VOICE,
            deadline=now + timedelta(hours=2),
            virtual_start_time=now - timedelta(minutes=1),
        )
        return CallbackDue(**{**base, **changes})  # type: ignore[arg-type]

    first = await router.bus.emit(due(), source="switchboard/callback")
    await router.bus.emit(due(), source="switchboard/callback", event_id=first.id)  # redelivery: no effect
    await router.bus.emit(due(priority_boost=30.0, at_risk=True), source="switchboard/callback")  # escalation

    async def updated() -> list:
        r = await router.client.get("/v1/contacts/cb-9/timeline", headers=ADMIN)
        kinds = [e["kind"] for e in r.json()["events"]] if r.status_code == 200 else []
        return kinds if "callback_updated" in kinds else []

    assert await eventually(updated) == ["received", "queued", "callback_updated"]
    items = (await router.client.get("/v1/queue", headers=ADMIN)).json()["items"]
    assert [i["contact_id"] for i in items] == ["cb-9"]  # one work item: replaced, not doubled
    waited = items[0]["waited_seconds"]
    assert items[0]["priority"] >= waited + 30 - 0.01  # aged 1 point/s on voice, plus the new boost of 30

    # an attempt recorded elsewhere (the callback API) drops the queued call
    await router.bus.emit(
        CallbackAttempted(callback_id="cb-9", customer=Customer(id="cust-9"), result="no_answer"),
        source="switchboard/callback",
    )

    async def dropped() -> bool:
        return await router.queue_ids() == []

    await eventually(dropped)
    assert (await router.timeline("cb-9"))[-1]["kind"] == "callback_closed"
    # the next attempt brings it back on the same audit trail, and it is served
    await router.bus.emit(due(attempt=2), source="switchboard/callback")
    await eventually(router.queue_ids)
    await router.client.put("/v1/agents/alice/status", json={"status": "available"}, headers=alice)
    offer = await serve(router, "alice", alice)
    assert offer["contact_id"] == "cb-9" and offer["contact"]["callback_attempt"] == 2
    r = await router.client.post("/v1/contacts/cb-9/complete", json={"attempt_result": "reached"}, headers=alice)
    assert r.status_code == 200, r.text
    kinds = [e["kind"] for e in await router.timeline("cb-9")]
    assert kinds[-5:] == ["received", "queued", "offered", "accepted", "completed"]


async def test_outcome_counters_goodwill_budget_and_agent_promise(router: Router) -> None:
    _, amb = await router.register("amb", roles=["brand_ambassador"])
    _, seller = await router.register("seller", roles=["sales"])
    async with collect_events(router.bus, topics.CALLBACKS, "test-promises") as callbacks:
        unhappy = contact("unhappy", intent=Intent.COMPLAINT)
        await router.emit(unhappy)
        offer = await serve(router, "amb", amb)
        assert offer["plan"]["goodwill_budget"] == 50  # the default strategy's brand ambassador budget
        too_much = await router.client.post(
            f"/v1/contacts/{unhappy.contact_id}/complete", json={"goodwill_amount": 80}, headers=amb
        )
        assert too_much.status_code == 422 and "budget" in too_much.text
        window = {"start": utcnow().isoformat(), "end": (utcnow() + timedelta(hours=1)).isoformat()}
        bad_window = {"start": window["end"], "end": window["start"]}
        r = await router.client.post(
            f"/v1/contacts/{unhappy.contact_id}/complete",
            json={"callback_promised": True, "callback_window": bad_window},
            headers=amb,
        )
        assert r.status_code == 422
        r = await router.client.post(
            f"/v1/contacts/{unhappy.contact_id}/complete",
            json={"goodwill_amount": 30, "resolved": True, "callback_promised": True, "callback_window": window},
            headers=amb,
        )
        assert r.status_code == 200, r.text
        buyer = contact("buyer", intent=Intent.PURCHASE)
        await router.emit(buyer)
        offer = await serve(router, "seller", seller)
        assert offer["rule"] == "purchase" and offer["plan"]["upsell"] is True
        await router.client.post(f"/v1/contacts/{buyer.contact_id}/complete", json={"sold": True}, headers=seller)

        async def promised() -> list:
            return [e for e in callbacks if isinstance(e, CallbackRequested)]

        (promise,) = await eventually(promised)
    assert promise.origin is CallbackOrigin.AGENT_PROMISE and promise.promised_by_agent_id == "amb"
    assert promise.contact_id == unhappy.contact_id and promise.preferred_window is not None
    stats = (await router.client.get("/v1/stats", headers=ADMIN)).json()
    assert stats["goodwill"]["spent"] == 30
    assert stats["today"]["sold"] == 1 and stats["today"]["completed"] == 2
    assert stats["today"]["goodwill_spent"] == 30
    assert stats["sales_share"]["offered_to_sales"] == 1 and stats["sales_share"]["offered"] == 2
    assert stats["sales_share"]["per"] == "tenant"
    assert stats["sales_share"]["by_site"] == {"main": {"share": 0.5, "offered": 2}}


async def test_stats_and_metrics(router: Router) -> None:
    _, alice = await router.register("alice", status="offline")
    await router.register("bob", status="break")
    for i in range(3):
        await router.emit(contact(f"m{i}"))
    await router.emit(contact("v1", channel=Channel.VOICE, site="berlin"))

    async def four() -> bool:
        return len(await router.queue_ids()) == 4

    await eventually(four)
    stats = (await router.client.get("/v1/stats", headers=ADMIN)).json()
    waiting = {(w["site"], w["channel"]): w for w in stats["waiting"]}
    assert waiting[("main", "chat")]["waiting"] == 3 and waiting[("berlin", "voice")]["waiting"] == 1
    assert stats["waiting_total"] == 4 and stats["oldest_wait_seconds"] >= 0
    assert stats["agents_by_status"] == {"offline": 1, "break": 1}
    assert stats["offers_outstanding"] == 0
    assert stats["service_level"]["chat"]["target_share"] == 0.8
    assert stats["strategy_version"] == (await router.client.get("/v1/strategy", headers=ADMIN)).json()["version"]
    await router.client.put("/v1/agents/alice/status", json={"status": "available"}, headers=alice)
    await router.wait_offer("alice", alice)
    text = (await router.client.get("/metrics")).text
    # customers still waiting include the one being offered (not answered yet)
    assert 'switchboard_router_waiting_contacts{channel="chat",site="main"} 3.0' in text
    assert "switchboard_router_offers_outstanding 1.0" in text
    assert 'switchboard_router_offers_total{outcome="made"}' in text
    assert (await router.client.get("/v1/agents", headers=ADMIN)).status_code == 200
