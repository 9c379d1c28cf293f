"""Issue 17's router metrics, as /metrics really reports them after real traffic: queue length by channel
and first role, the handling-time histogram, sales share vs cap and goodwill spent vs budget."""

from __future__ import annotations

from pathlib import Path

from prometheus_client import REGISTRY

from shared.events import Channel, Intent
from tests.router.conftest import ADMIN, contact, eventually, running_router, write_strategy


def _count(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_queue_by_role_handling_histogram_sales_share_and_goodwill(tmp_path: Path) -> None:
    strategy = write_strategy(
        tmp_path / "s.yaml",
        roles={"service": {"goodwill_budget": 20}},
        goodwill={"period_budget": 200, "role_budgets": {"service": 80}},
    )
    before = _count("switchboard_router_handling_time_seconds_count", channel="voice")
    async with running_router(tmp_path / "data", strategy_path=strategy) as router:
        _, amb = await router.register("amy", capacity={"voice": 1})
        served = contact("s1", channel=Channel.VOICE)
        await router.emit(served)
        offer = await router.wait_offer("amy", amb)
        r = await router.client.post(f"/v1/offers/{offer['offer_id']}/accept", headers=amb)
        assert r.status_code == 200, r.text
        r = await router.client.post(
            f"/v1/contacts/{served.contact_id}/complete",
            json={"resolved": True, "goodwill_amount": 12.5},
            headers=amb,
        )
        assert r.status_code == 200, r.text
        await router.emit(contact("b1", channel=Channel.VOICE, intent=Intent.PURCHASE))  # sales: nobody on duty

        async def queued() -> dict | None:
            stats = (await router.client.get("/v1/stats", headers=ADMIN)).json()
            return stats if stats["waiting_by_role"] else None

        stats = await eventually(queued)
        assert stats["waiting_by_role"] == [{"channel": "voice", "role": "sales", "waiting": 1}]
        text = (await router.client.get("/metrics")).text
    assert 'switchboard_router_waiting_contacts_by_role{channel="voice",role="sales"} 1.0' in text
    assert _count("switchboard_router_handling_time_seconds_count", channel="voice") == before + 1
    assert "switchboard_router_sales_share 0.0" in text  # one offer, to service
    assert "switchboard_router_sales_share_cap 0.3" in text
    assert 'switchboard_router_goodwill_spent{role="all"} 12.5' in text
    assert 'switchboard_router_goodwill_budget{role="all"} 200.0' in text
    assert 'switchboard_router_goodwill_budget{role="service"} 80.0' in text
    assert 'switchboard_router_goodwill_spent{role="service"} 12.5' in text
