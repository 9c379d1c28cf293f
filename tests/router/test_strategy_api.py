"""Strategy endpoints: the active version, and reload without restart (invalid file -> 422, old stays)."""

from __future__ import annotations

from pathlib import Path

from tests.router.conftest import ADMIN, contact, eventually, running_router, write_strategy


async def test_reload_switches_version_and_rejects_an_invalid_file(tmp_path: Path) -> None:
    path = write_strategy(tmp_path / "strategy.yaml", version="ops-1")
    async with running_router(tmp_path / "data", strategy_path=path) as router:
        current = (await router.client.get("/v1/strategy", headers=ADMIN)).json()
        assert current["version"] == "ops-1" and current["source"] == str(path)
        assert current["offer_timeout_seconds"] == 15 and current["strategy"]["rules"]

        # a contact waiting across the reload keeps its place
        await router.register("alice", status="offline")
        c = contact("keep")
        await router.emit(c)
        await eventually(router.queue_ids)

        write_strategy(path, version="ops-2", offer_timeout_seconds=20, tie_break="round_robin")
        assert (await router.client.post("/v1/strategy/reload")).status_code == 401
        r = await router.client.post("/v1/strategy/reload", headers=ADMIN)
        assert r.status_code == 200, r.text
        assert r.json()["version"] == "ops-2" and r.json()["previous_version"] == "ops-1"
        assert r.json()["offer_timeout_seconds"] == 20 and r.json()["tie_break"] == "round_robin"
        assert await router.queue_ids() == [c.contact_id]

        # a short question must never go to sales first: the strategy validator refuses this file
        write_strategy(
            path,
            version="ops-3",
            rules=[
                {"name": "q", "when": {"intents": ["question"]}, "steps": [{"role": "sales"}]},
                {"name": "all", "steps": [{"role": "service"}]},
            ],
        )
        r = await router.client.post("/v1/strategy/reload", headers=ADMIN)
        assert r.status_code == 422
        detail = r.json()["detail"]
        assert detail["active_version"] == "ops-2" and "sales" in detail["message"]
        path.write_text("version: [unclosed")
        r = await router.client.post("/v1/strategy/reload", headers=ADMIN)
        assert r.status_code == 422 and "YAML" in r.json()["detail"]["message"]
        assert (await router.client.get("/v1/strategy", headers=ADMIN)).json()["version"] == "ops-2"
        stats = (await router.client.get("/v1/stats", headers=ADMIN)).json()
        assert stats["strategy_version"] == "ops-2"


async def test_offer_timeout_setting_overrides_the_strategy(tmp_path: Path) -> None:
    async with running_router(tmp_path / "data", offer_timeout_seconds=3.5) as router:
        assert (await router.client.get("/v1/strategy", headers=ADMIN)).json()["offer_timeout_seconds"] == 3.5
