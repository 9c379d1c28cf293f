"""``contact.agent_dialed``: a voice contact whose agent could not be reached goes back to its place in
line with a missed offer counted; a caller who left is abandoned; an answered dial is only recorded."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

from shared import topics
from shared.events import (
    AgentDialed,
    AttemptResult,
    CallbackAttempted,
    CallbackDue,
    Channel,
    Customer,
    CustomerDialed,
    DialResult,
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


async def accepted_call(router: Router) -> tuple[str, str, dict[str, str]]:
    """alice accepts call A while call B, which came later, waits. Returns (A, B, alice's headers)."""
    _, alice = await router.register("alice", capacity={"voice": 1}, contact_uris={"voice": "client:alice"})
    first, second = contact("CA-A", channel=Channel.VOICE), contact("CA-B", channel=Channel.VOICE)
    await router.emit(first)
    offer = await router.wait_offer("alice", alice)
    assert offer["contact_id"] == first.contact_id
    await router.emit(second)
    await eventually(router.queue_ids)
    r = await router.client.post(f"/v1/offers/{offer['offer_id']}/accept", headers=alice)
    assert r.status_code == 200, r.text
    assert await router.queue_ids() == [second.contact_id]
    return first.contact_id, second.contact_id, alice


async def agent(router: Router) -> dict[str, Any]:
    return (await router.client.get("/v1/agents/alice", headers=ADMIN)).json()  # type: ignore[no-any-return]


async def kinds(router: Router, contact_id: str) -> list[str]:
    return [e["kind"] for e in await router.timeline(contact_id)]


async def test_busy_agent_puts_the_call_back_ahead_of_later_callers_and_counts_a_miss(router: Router) -> None:
    first, second, alice = await accepted_call(router)
    await router.emit(AgentDialed(contact_id=first, agent_id="alice", result=DialResult.BUSY, call_ref="CA-A"))

    async def requeued() -> bool:
        return "requeued" in await kinds(router, first)

    await eventually(requeued)
    # alice is skipped for this call (she just missed it), so she is offered the later one; A leads the line.
    offer = await router.wait_offer("alice", alice)
    assert offer["contact_id"] == second
    assert await router.queue_ids() == [first]
    me = await agent(router)
    assert me["missed_offers"] == 1
    assert (await kinds(router, first))[-3:] == ["accepted", "dial_failed", "requeued"]
    done = await router.client.post(f"/v1/contacts/{first}/complete", json={}, headers=alice)
    assert done.status_code == 403  # no longer alice's


async def test_not_connected_requeues_without_a_miss(router: Router) -> None:
    first, _, _ = await accepted_call(router)
    await router.emit(AgentDialed(contact_id=first, agent_id="alice", result=DialResult.NOT_CONNECTED))

    async def requeued() -> bool:
        return "requeued" in await kinds(router, first)

    await eventually(requeued)
    assert (await agent(router))["missed_offers"] == 0


async def test_caller_gone_abandons_and_frees_the_agent(router: Router) -> None:
    first, second, alice = await accepted_call(router)
    await router.emit(AgentDialed(contact_id=first, agent_id="alice", result=DialResult.CALLER_GONE))
    offer = await router.wait_offer("alice", alice)  # free again: the waiting call comes to her
    assert offer["contact_id"] == second
    assert (await kinds(router, first))[-2:] == ["dial_failed", "abandoned"]
    assert first not in await router.queue_ids()
    assert (await agent(router))["missed_offers"] == 0


async def test_answered_is_recorded_and_the_agent_still_completes(router: Router) -> None:
    first, _, alice = await accepted_call(router)
    await router.emit(AgentDialed(contact_id=first, agent_id="alice", result=DialResult.ANSWERED))

    async def noted() -> bool:
        return "dial_answered" in await kinds(router, first)

    await eventually(noted)
    done = await router.client.post(f"/v1/contacts/{first}/complete", json={"resolved": True}, headers=alice)
    assert done.status_code == 200 and done.json()["state"] == "completed"


async def test_late_report_for_another_agent_is_only_noted(router: Router) -> None:
    first, _, alice = await accepted_call(router)
    await router.emit(AgentDialed(contact_id=first, agent_id="bob", result=DialResult.BUSY))

    async def noted() -> bool:
        return "dial_ignored" in await kinds(router, first)

    await eventually(noted)
    done = await router.client.post(f"/v1/contacts/{first}/complete", json={}, headers=alice)
    assert done.status_code == 200


async def test_repeated_unanswered_dials_put_the_agent_on_break(tmp_path: Path) -> None:
    strategy = write_strategy(tmp_path / "strategy.yaml", max_missed_offers=1)
    async with running_router(tmp_path / "data", strategy_path=strategy) as router:
        first, _, _ = await accepted_call(router)
        await router.emit(AgentDialed(contact_id=first, agent_id="alice", result=DialResult.NO_ANSWER))

        async def on_break() -> bool:
            me = await agent(router)
            return me["status"] == "break" and me["status_reason"] == "missed_offers"

        await eventually(on_break)
        assert first in await router.queue_ids()


async def test_a_restarted_router_still_skips_the_agent_who_was_not_reached(tmp_path: Path) -> None:
    async with running_router(tmp_path / "data") as router:
        first, _, alice = await accepted_call(router)
        offer_id = (await router.timeline(first))[-1]["offer_id"]
        await router.emit(AgentDialed(contact_id=first, agent_id="alice", result=DialResult.NO_ANSWER))

        async def requeued() -> bool:
            return "requeued" in await kinds(router, first)

        await eventually(requeued)
        assert "alice" in router.service.engine.declined_by(first)
    async with running_router(tmp_path / "data") as again:
        assert "alice" in again.service.engine.declined_by(first)  # rebuilt from the offer
        offer = (await again.client.get(f"/v1/offers/{offer_id}", headers=ADMIN)).json()
        assert (offer["state"], offer["reason"]) == ("timed_out", "dial_no_answer")


async def test_a_callbacks_dialled_outcome_is_the_attempt_result_when_the_agent_gives_none(router: Router) -> None:
    _, alice = await router.register("alice", capacity={"voice": 1}, contact_uris={"voice": "client:alice"})
    now = utcnow()
    due = CallbackDue(
        callback_id="cb-7",
        customer=Customer(id="cust-cb", phone="+4930901820"),
        channel=Channel.VOICE,
        deadline=now + timedelta(hours=2),
    )
    async with collect_events(router.bus, topics.CALLBACKS, "test-callbacks-dialled") as callbacks:
        await router.emit(due)
        offer = await router.wait_offer("alice", alice)
        assert (await router.client.post(f"/v1/offers/{offer['offer_id']}/accept", headers=alice)).status_code == 200
        complete = f"/v1/contacts/{offer['contact_id']}/complete"
        early = await router.client.post(complete, json={}, headers=alice)
        assert early.status_code == 422 and "attempt_result" in early.text  # nothing known yet
        await router.emit(CustomerDialed(contact_id="cb-7", agent_id="alice", result=AttemptResult.BUSY))

        async def noted() -> bool:
            return "customer_dialed" in await kinds(router, "cb-7")

        await eventually(noted)
        done = await router.client.post(complete, json={"notes": "line busy"}, headers=alice)
        assert done.status_code == 200, done.text
        assert done.json()["outcome"]["attempt_result"] == "busy"

        async def attempted() -> list[CallbackAttempted]:
            return [e for e in callbacks if isinstance(e, CallbackAttempted)]

        (attempt,) = await eventually(attempted)
    assert attempt.callback_id == "cb-7" and attempt.result is AttemptResult.BUSY
