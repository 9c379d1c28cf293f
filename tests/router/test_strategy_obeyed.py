"""Issue 15: the strategy is obeyed, not only shown (goodwill limits, leeway per person, overruns...)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from shared.events import Intent
from tests.router.conftest import ADMIN, Router, contact, running_router, write_strategy


async def serve(router: Router, agent_id: str, headers: dict[str, str]) -> dict[str, Any]:
    offer = await router.wait_offer(agent_id, headers)
    r = await router.client.post(f"/v1/offers/{offer['offer_id']}/accept", headers=headers)
    assert r.status_code == 200, r.text
    return offer


def strategy_file(tmp_path: Path, **changes: Any) -> Path:
    """The default strategy without wrap-up (an agent takes the next contact at once) plus changes."""
    channels = {"chat": {"wrap_up_seconds": 0}, **changes.pop("channels", {})}
    return write_strategy(tmp_path / "s.yaml", channels=channels, **changes)


async def complete(router: Router, contact_id: str, headers: dict[str, str], **outcome: Any) -> Any:
    return await router.client.post(f"/v1/contacts/{contact_id}/complete", json=outcome, headers=headers)


async def test_goodwill_period_budget_is_enforced_and_survives_a_restart(tmp_path: Path) -> None:
    strategy = strategy_file(tmp_path, goodwill={"period_budget": 60})
    async with running_router(tmp_path / "data", strategy_path=strategy) as router:
        _, amb = await router.register("amb", roles=["brand_ambassador"])
        first = contact("c1", intent=Intent.COMPLAINT)
        await router.emit(first)
        await serve(router, "amb", amb)
        assert (await complete(router, first.contact_id, amb, goodwill_amount=50)).status_code == 200
        second = contact("c2", intent=Intent.COMPLAINT)
        await router.emit(second)
        offer = await serve(router, "amb", amb)
        assert offer["plan"]["goodwill_budget"] == 10
        refused = await complete(router, second.contact_id, amb, goodwill_amount=50)
        assert refused.status_code == 422, refused.text
        assert "period budget" in refused.text and "10.0 of 60.0 left" in refused.text
        stats = (await router.client.get("/v1/stats", headers=ADMIN)).json()["goodwill"]
        assert stats["spent"] == 50 and stats["budget"] == 60 and stats["remaining"] == 10
    # After a restart the ledger is rebuilt from completions: the same grant is still refused.
    async with running_router(tmp_path / "data", strategy_path=strategy) as router:
        headers = {"Authorization": f"Bearer {(await router.client.post('/v1/agents/amb/token', headers=ADMIN)).json()['token']}"}
        refused = await complete(router, second.contact_id, headers, goodwill_amount=50)
        assert refused.status_code == 422, refused.text
        assert (await complete(router, second.contact_id, headers, goodwill_amount=10)).status_code == 200
        stats = (await router.client.get("/v1/stats", headers=ADMIN)).json()["goodwill"]
        assert stats["spent"] == 60 and stats["remaining"] == 0
