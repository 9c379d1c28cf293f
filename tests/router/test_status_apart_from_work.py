"""Status apart from work (issue 14): the agent's own choice (available, break, offline) and the router's
view of their work (idle, offered, on_contact, wrap_up) are separate in the model, the API and the events.

The case the issue names: an agent with an open offer who completes another contact and lets the offer
time out. One field for both left them "busy on_contact" with no load, and the callback service (which
releases callbacks to available agents) never counted them again.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from shared import topics
from shared.events import AgentStatusChanged, AgentWorkChanged
from tests.router.conftest import collect_events, contact, eventually, running_router, write_strategy


async def _me(router: Any, headers: dict[str, str]) -> dict[str, Any]:
    r = await router.client.get("/v1/agents/alice", headers=headers)
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


async def test_an_offer_timing_out_after_the_last_contact_leaves_the_agent_idle(tmp_path: Path) -> None:
    strategy = write_strategy(tmp_path / "s.yaml", channels={"chat": {"wrap_up_seconds": 0}})
    async with running_router(tmp_path / "data", strategy_path=strategy, offer_timeout_seconds=0.6) as router:
        async with collect_events(router.bus, topics.ROUTING, "test-apart") as routing:
            _, alice = await router.register("alice", capacity={"chat": 2})
            first = contact("first")
            await router.emit(first)
            offer = await router.wait_offer("alice", alice)
            assert (
                await router.client.post(f"/v1/offers/{offer['offer_id']}/accept", headers=alice)
            ).status_code == 200
            second = contact("second")
            await router.emit(second)

            async def second_offered() -> dict[str, Any] | None:
                offers = await router.offers_of("alice", alice)
                return next((o for o in offers if o["contact_id"] == second.contact_id), None)

            await eventually(second_offered)
            me = await _me(router, alice)
            assert (me["status"], me["activity"], me["load"]) == ("available", "on_contact", {"chat": 2})
            done = await router.client.post(f"/v1/contacts/{first.contact_id}/complete", json={}, headers=alice)
            assert done.status_code == 200, done.text
            me = await _me(router, alice)
            assert (me["status"], me["activity"], me["load"]) == ("available", "offered", {"chat": 1})

            async def idle() -> dict[str, Any] | None:  # the open offer times out: nothing left to do
                me = await _me(router, alice)
                return me if me["activity"] == "idle" else None

            me = await eventually(idle)
            assert me["status"] == "available" and me["load"] == {}

            async def work_settled() -> list[tuple[str | None, str]] | None:
                seen = [(e.previous, e.activity) for e in routing if isinstance(e, AgentWorkChanged)]
                return seen if seen[-1:] == [("offered", "idle")] else None

            work = await eventually(work_settled)
            statuses = [e.status for e in routing if isinstance(e, AgentStatusChanged)]
    assert work[:3] == [("idle", "offered"), ("offered", "on_contact"), ("on_contact", "offered")]
    # Only what the agent chose: registering available. (Missing the offer counts, but one is not a run.)
    assert statuses == ["available"]


async def test_saying_available_in_wrap_up_ends_it_and_break_keeps_the_work_visible(tmp_path: Path) -> None:
    strategy = write_strategy(tmp_path / "s.yaml", channels={"chat": {"wrap_up_seconds": 600}})
    async with running_router(tmp_path / "data", strategy_path=strategy) as router:
        _, alice = await router.register("alice")
        c = contact("wrap")
        await router.emit(c)
        offer = await router.wait_offer("alice", alice)
        await router.client.post(f"/v1/offers/{offer['offer_id']}/accept", headers=alice)
        # On a break while still on the contact: the choice changes, the work goes on.
        r = await router.client.put("/v1/agents/alice/status", json={"status": "break"}, headers=alice)
        assert (r.json()["status"], r.json()["activity"]) == ("break", "on_contact")
        await router.client.post(f"/v1/contacts/{c.contact_id}/complete", json={}, headers=alice)
        me = await _me(router, alice)
        assert (me["status"], me["activity"]) == ("break", "wrap_up") and me["wrap_up_until"] is not None
        r = await router.client.put("/v1/agents/alice/status", json={"status": "available"}, headers=alice)
        assert (r.json()["status"], r.json()["activity"], r.json()["wrap_up_until"]) == ("available", "idle", None)
        # Ready again means offered again at once, not in ten minutes.
        nxt = contact("next")
        await router.emit(nxt)
        assert (await router.wait_offer("alice", alice, timeout=5))["contact_id"] == nxt.contact_id
