"""Issue 15: the strategy is obeyed, not only shown (goodwill limits, leeway per person, overruns...)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from shared.events import Channel, Intent
from tests.router.conftest import ADMIN, Router, agent_stream, contact, eventually, running_router, write_strategy


async def serve(router: Router, agent_id: str, headers: dict[str, str]) -> dict[str, Any]:
    offer = await router.wait_offer(agent_id, headers)
    r = await router.client.post(f"/v1/offers/{offer['offer_id']}/accept", headers=headers)
    assert r.status_code == 200, r.text
    return offer


def strategy_file(tmp_path: Path, **changes: Any) -> Path:
    """The default strategy without wrap-up (an agent takes the next contact at once) plus changes."""
    channels = {"chat": {"wrap_up_seconds": 0}, **changes.pop("channels", {})}
    return write_strategy(tmp_path / "s.yaml", channels=channels, **changes)


async def entries(router: Router, contact_id: str, kind: str) -> list[dict[str, Any]]:
    """Timeline entries of one kind ([] while the router has not seen the contact yet)."""
    r = await router.client.get(f"/v1/contacts/{contact_id}/timeline", headers=ADMIN)
    return [e for e in r.json()["events"] if e["kind"] == kind] if r.status_code == 200 else []


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
        token = (await router.client.post("/v1/agents/amb/token", headers=ADMIN)).json()["token"]
        headers = {"Authorization": f"Bearer {token}"}
        refused = await complete(router, second.contact_id, headers, goodwill_amount=50)
        assert refused.status_code == 422, refused.text
        assert (await complete(router, second.contact_id, headers, goodwill_amount=10)).status_code == 200
        stats = (await router.client.get("/v1/stats", headers=ADMIN)).json()["goodwill"]
        assert stats["spent"] == 60 and stats["remaining"] == 0


def default_rules() -> list[dict[str, Any]]:
    import yaml

    from services.router.strategy import DEFAULT_STRATEGY_PATH

    return yaml.safe_load(DEFAULT_STRATEGY_PATH.read_text())["rules"]  # type: ignore[no-any-return]


async def test_leeway_follows_the_person_not_the_rule(tmp_path: Path) -> None:
    rules = default_rules()
    unhappy = next(r for r in rules if r["name"] == "unhappy_customer")
    unhappy["steps"][1]["after_seconds"] = 0  # widened at once: a service agent may take a complaint
    general = next(r for r in rules if r["name"] == "general")
    general["steps"] = [{"role": "service"}, {"role": "brand_ambassador"}, {"role": "sales", "after_seconds": 60}]
    strategy = strategy_file(tmp_path, rules=rules)
    async with running_router(tmp_path / "data", strategy_path=strategy) as router:
        # A brand ambassador on a general contact keeps the brand ambassador's leeway, without upsell.
        _, amb = await router.register("amb", roles=["brand_ambassador"])
        general = contact("g1", intent=Intent.SUPPORT)
        await router.emit(general)
        offer = await serve(router, "amb", amb)
        assert offer["rule"] == "general"
        assert offer["plan"] == {
            "role": "brand_ambassador",
            "upsell": False,
            "allowed_handling_seconds": 900,
            "goodwill_budget": 50,
            "short_question": False,
        }
        assert offer["explanation"]["goodwill_budget"] == 50 and offer["explanation"]["upsell"] is False
        (assignment,) = (await router.client.get("/v1/agents/amb/assignments", headers=amb)).json()["items"]
        assert assignment["plan"]["goodwill_budget"] == 50 and assignment["plan"]["role"] == "brand_ambassador"
        assert (await complete(router, general.contact_id, amb, goodwill_amount=40)).status_code == 200
        await router.client.put("/v1/agents/amb/status", json={"status": "offline"}, headers=amb)
        # A service agent taking a complaint gets service leeway: no goodwill, service handling time.
        _, svc = await router.register("svc", roles=["service"])
        complaint = contact("c1", intent=Intent.COMPLAINT)
        await router.emit(complaint)
        offer = await serve(router, "svc", svc)
        assert offer["rule"] == "unhappy_customer"
        assert offer["plan"]["role"] == "service" and offer["plan"]["goodwill_budget"] == 0
        assert offer["plan"]["allowed_handling_seconds"] == 420
        refused = await complete(router, complaint.contact_id, svc, goodwill_amount=50)
        assert refused.status_code == 422 and "service leeway" in refused.text
        assert (await complete(router, complaint.contact_id, svc)).status_code == 200


class Clock:
    """Wall time plus a jump the test controls (the router's tick keeps running in real time)."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


async def test_a_contact_held_beyond_the_allowed_time_leaves_a_trace(tmp_path: Path) -> None:
    clock = Clock()
    strategy = strategy_file(tmp_path, roles={"service": {"allowed_handling_seconds": 10}})
    async with running_router(tmp_path / "data", strategy_path=strategy, clock=clock) as router:
        _, svc = await router.register("svc", roles=["service"])
        async with agent_stream(router.url, "svc", svc) as stream:
            held = contact("h1", intent=Intent.SUPPORT)
            await router.emit(held)
            offer = await serve(router, "svc", svc)
            assert offer["plan"]["allowed_handling_seconds"] == 10
            clock.offset += 9  # within the allowance: nothing yet
            await stream.wait_for("assignment")
            clock.offset += 16  # held 25 s against 10 s allowed
            notice = await stream.wait_for("handling_overrun")
        assert notice["contact_id"] == held.contact_id and notice["allowed_handling_seconds"] == 10
        assert notice["held_seconds"] >= 25 and notice["role"] == "service"

        async def overrun_entries() -> list[dict[str, Any]]:
            return [e for e in await router.timeline(held.contact_id) if e["kind"] == "handling_overrun"]

        (entry,) = await eventually(overrun_entries)
        stats = (await router.client.get("/v1/stats", headers=ADMIN)).json()
        assert stats["today"]["handling_overruns"] == 1
        assert stats["strategy_deviations_today"]["handling_overruns"] == 1
        metrics = (await router.client.get("/metrics")).text
        assert 'switchboard_router_handling_overruns_total{channel="chat",role="service"}' in metrics
        # Not forced: the agent still completes normally, and the notice is given once.
        assert (await complete(router, held.contact_id, svc)).status_code == 200
        assert len(await overrun_entries()) == 1


def metric(text: str, series: str) -> float:
    """A sample's value from /metrics text (0 when absent): counters are process-wide, compare deltas."""
    for line in text.splitlines():
        if line.startswith(series + " "):
            return float(line.split()[-1])
    return 0.0


SHORT_SALES = 'switchboard_router_sales_on_short_questions_total{channel="chat",role="service"}'


async def test_a_sale_on_a_short_question_is_accepted_and_flagged(tmp_path: Path) -> None:
    async with running_router(tmp_path / "data", strategy_path=strategy_file(tmp_path)) as router:
        before = metric((await router.client.get("/metrics")).text, SHORT_SALES)
        _, svc = await router.register("svc", roles=["service"])
        question = contact("q1", intent=Intent.QUESTION)
        await router.emit(question)
        offer = await serve(router, "svc", svc)
        assert offer["plan"]["short_question"] is True and offer["plan"]["upsell"] is False
        assert (await complete(router, question.contact_id, svc, sold=True)).status_code == 200
        (flag,) = [e for e in await router.timeline(question.contact_id) if e["kind"] == "sale_on_short_question"]
        assert flag["agent_id"] == "svc"
        normal = contact("n1", intent=Intent.SUPPORT)
        await router.emit(normal)
        await serve(router, "svc", svc)
        assert (await complete(router, normal.contact_id, svc, sold=True)).status_code == 200
        stats = (await router.client.get("/v1/stats", headers=ADMIN)).json()
        assert stats["today"]["sold"] == 2 and stats["strategy_deviations_today"]["sales_on_short_questions"] == 1
        metrics = (await router.client.get("/metrics")).text
        assert metric(metrics, SHORT_SALES) == before + 1


async def test_a_sale_on_a_short_question_can_be_refused(tmp_path: Path) -> None:
    strategy = strategy_file(tmp_path, short_question={"sale_recorded": "refuse"})
    async with running_router(tmp_path / "data", strategy_path=strategy) as router:
        _, svc = await router.register("svc", roles=["service"])
        question = contact("q1", intent=Intent.QUESTION)
        await router.emit(question)
        await serve(router, "svc", svc)
        refused = await complete(router, question.contact_id, svc, sold=True)
        assert refused.status_code == 422 and "short question" in refused.text
        assert (await complete(router, question.contact_id, svc)).status_code == 200


async def test_a_contact_nobody_on_duty_can_serve_is_flagged_not_estimated_at_zero(tmp_path: Path) -> None:
    async with running_router(tmp_path / "data", strategy_path=strategy_file(tmp_path)) as router:
        await router.register("en", roles=["service"], languages=["en"])  # idle, but speaks no Turkish
        turkish = contact("tr1", language="tr")
        await router.emit(turkish)

        (flag,) = await eventually(lambda: entries(router, turkish.contact_id, "unservable"))
        assert flag["reason"] == "language"
        queued = next(e for e in await router.timeline(turkish.contact_id) if e["kind"] == "queued")
        assert queued["estimated_wait_seconds"] is None  # no estimate, rather than 0 s
        (item,) = (await router.client.get("/v1/queue", headers=ADMIN)).json()["items"]
        assert item["unservable_reason"] == "language"
        metrics = (await router.client.get("/metrics")).text
        assert 'switchboard_router_unservable_contacts_total{channel="chat",reason="language"}' in metrics
        # /v1/stats says how many wait right now that nobody on duty can serve, and why (a live figure).
        stats = (await router.client.get("/v1/stats", headers=ADMIN)).json()
        assert stats["unservable"] == {"count": 1, "by_reason": {"language": 1}}
        assert 'switchboard_router_unservable_waiting{reason="language"} 1.0' in metrics
        # Once someone who can serve it is on duty, the flag goes and the contact is served.
        _, tr = await router.register("tr", roles=["service"], languages=["tr"])
        offer = await router.wait_offer("tr", tr)
        assert offer["contact_id"] == turkish.contact_id
        stats = (await router.client.get("/v1/stats", headers=ADMIN)).json()
        assert stats["unservable"] == {"count": 0, "by_reason": {}}


async def test_the_wait_estimate_counts_only_agents_who_could_serve_the_contact(tmp_path: Path) -> None:
    async with running_router(tmp_path / "data", strategy_path=strategy_file(tmp_path)) as router:
        _, de = await router.register("de", roles=["service"], languages=["de"], capacity={"chat": 1})
        first = contact("de1", language="de")
        await router.emit(first)
        await serve(router, "de", de)  # the only German speaker is now busy
        await router.register("en", roles=["service"], languages=["en"])  # idle, irrelevant to German
        second = contact("de2", language="de")
        await router.emit(second)

        (entry,) = await eventually(lambda: entries(router, second.contact_id, "queued"))
        assert entry["estimated_wait_seconds"] == 480  # one contact's handling time (chat default), not 0
        (item,) = (await router.client.get("/v1/queue", headers=ADMIN)).json()["items"]
        assert item["unservable_reason"] is None


async def test_sales_targets_per_role_and_team_show_target_vs_actual(tmp_path: Path) -> None:
    targets = [{"role": "sales", "target": 2}, {"team": "north", "target": 1}, {"role": "service", "target": 0}]
    strategy = strategy_file(tmp_path, sales_targets=targets)
    async with running_router(tmp_path / "data", strategy_path=strategy) as router:
        _, seller = await router.register("seller", roles=["sales"], team="north")
        buyer = contact("b1", intent=Intent.PURCHASE)
        await router.emit(buyer)
        await serve(router, "seller", seller)
        assert (await complete(router, buyer.contact_id, seller, sold=True)).status_code == 200
        stats = (await router.client.get("/v1/stats", headers=ADMIN)).json()
        progress = {(t["role"], t["team"]): t for t in stats["sales_targets"]}
        assert progress[("sales", None)] == {
            "role": "sales",
            "team": None,
            "target": 2,
            "actual": 1,
            "met": False,
            "period_seconds": 86400.0,
        }
        assert progress[(None, "north")]["actual"] == 1 and progress[(None, "north")]["met"] is True
        assert progress[("service", None)]["actual"] == 0
        metrics = (await router.client.get("/metrics")).text
        assert 'switchboard_router_sales_actual{name="sales",subject="role"} 1.0' in metrics
        assert 'switchboard_router_sales_target{name="north",subject="team"} 1.0' in metrics


def test_sales_targets_are_validated() -> None:
    import pytest

    from services.router.strategy import StrategyError, parse_strategy

    base = {"version": "t", "rules": [{"name": "all", "steps": [{"role": "service"}]}]}
    ok = parse_strategy({**base, "sales_targets": [{"team": "north", "target": 5, "period_seconds": 3600}]})
    assert ok.sales_targets[0].team == "north" and ok.sales_targets[0].target == 5
    for bad in (
        [{"target": 3}],
        [{"role": "sales", "team": "x", "target": 1}],
        [{"role": "sales", "target": -1}],
        [{"role": "sales", "target": 1}, {"role": "sales", "target": 2}],
    ):
        with pytest.raises(StrategyError):
            parse_strategy({**base, "sales_targets": bad})


async def test_the_staffing_check_warns_when_a_role_cannot_carry_its_traffic(tmp_path: Path) -> None:
    rules = default_rules()
    unhappy = next(r for r in rules if r["name"] == "unhappy_customer")
    unhappy["steps"][1]["after_seconds"] = 0  # with the ambassador busy, service takes complaints at once
    async with running_router(tmp_path / "data", strategy_path=strategy_file(tmp_path, rules=rules)) as router:
        _, amb = await router.register("amb", roles=["brand_ambassador"], capacity={"chat": 1})
        for name in ("s1", "s2", "s3"):
            await router.register(name, roles=["service"], capacity={"chat": 1})
        for c in (
            contact("c1", intent=Intent.COMPLAINT),
            contact("c2", intent=Intent.COMPLAINT),
            contact("g1", intent=Intent.SUPPORT),
            contact("g2", intent=Intent.SUPPORT),
        ):
            await router.emit(c)

        async def all_offered() -> dict[str, Any] | None:
            stats = (await router.client.get("/v1/stats", headers=ADMIN)).json()
            return stats if stats["offers_outstanding"] == 4 else None

        stats = await eventually(all_offered)
        cov = stats["strategy_coverage"]
        roles = {r["role"]: r for r in cov["roles"]}
        # half the traffic is meant for brand ambassadors first; they are a quarter of the agents on duty
        assert roles["brand_ambassador"]["traffic_share"] == 0.5 and roles["brand_ambassador"]["on_duty_share"] == 0.25
        assert roles["brand_ambassador"]["understaffed"] is True and roles["service"]["understaffed"] is False
        assert len(cov["warnings"]) == 1 and cov["warnings"][0].startswith("brand_ambassador")
        rule = next(r for r in cov["rules"] if r["rule"] == "unhappy_customer")
        assert rule["first_offers"] == 2 and rule["first_offer_to_first_role_share"] == 0.5
        assert rule["first_role_on_duty"] == 1
        metrics = (await router.client.get("/metrics")).text
        assert 'switchboard_router_role_understaffed{role="brand_ambassador"} 1.0' in metrics
        assert 'switchboard_router_rule_first_offer_to_first_role_share{rule="unhappy_customer"} 0.5' in metrics


async def test_handling_overruns_are_watched_across_a_restart_and_flagged_once(tmp_path: Path) -> None:
    clock = Clock()
    strategy = strategy_file(tmp_path, roles={"service": {"allowed_handling_seconds": 10}})
    first, second = contact("h1"), contact("h2")
    async with running_router(tmp_path / "data", strategy_path=strategy, clock=clock) as router:
        _, svc = await router.register("svc", roles=["service"], capacity={"chat": 2})
        await router.emit(first)
        await serve(router, "svc", svc)
        clock.offset += 5
        await router.emit(second)
        await serve(router, "svc", svc)
        clock.offset += 6  # first held 11 s, second 6 s
        await eventually(lambda: entries(router, first.contact_id, "handling_overrun"))
        assert await entries(router, second.contact_id, "handling_overrun") == []
    async with running_router(tmp_path / "data", strategy_path=strategy, clock=clock) as router:
        clock.offset += 5  # second now held 11 s: watched again after the restart
        await eventually(lambda: entries(router, second.contact_id, "handling_overrun"), timeout=15)
        assert len(await entries(router, first.contact_id, "handling_overrun")) == 1
        stats = (await router.client.get("/v1/stats", headers=ADMIN)).json()
        assert stats["today"]["handling_overruns"] == 2


async def test_the_strategy_needs_a_token_and_shows_agents_no_server_path(tmp_path: Path) -> None:
    path = strategy_file(tmp_path)
    async with running_router(tmp_path / "data", strategy_path=path) as router:
        _, agent = await router.register("svc")
        assert (await router.client.get("/v1/strategy")).status_code == 401
        seen = (await router.client.get("/v1/strategy", headers=agent)).json()
        assert seen["source"] == "s.yaml" and str(tmp_path) not in str(seen)
        assert (await router.client.get("/v1/strategy", headers=ADMIN)).json()["source"] == str(path)


async def test_a_role_goodwill_budget_holds_and_survives_a_restart(tmp_path: Path) -> None:
    strategy = strategy_file(tmp_path, goodwill={"role_budgets": {"brand_ambassador": 40}})
    first, second = contact("c1", intent=Intent.COMPLAINT), contact("c2", intent=Intent.COMPLAINT)
    async with running_router(tmp_path / "data", strategy_path=strategy) as router:
        _, amb = await router.register("amb", roles=["brand_ambassador"])
        await router.emit(first)
        await serve(router, "amb", amb)
        assert (await complete(router, first.contact_id, amb, goodwill_amount=30)).status_code == 200
        await router.emit(second)
        offer = await serve(router, "amb", amb)
        assert offer["plan"]["goodwill_budget"] == 10
        stats = (await router.client.get("/v1/stats", headers=ADMIN)).json()["goodwill"]
        assert stats["by_role"] == {"brand_ambassador": {"spent": 30, "budget": 40, "remaining": 10}}
    async with running_router(tmp_path / "data", strategy_path=strategy) as router:
        token = (await router.client.post("/v1/agents/amb/token", headers=ADMIN)).json()["token"]
        headers = {"Authorization": f"Bearer {token}"}
        refused = await complete(router, second.contact_id, headers, goodwill_amount=20)
        assert refused.status_code == 422 and "brand_ambassador goodwill period budget: 10.0 of 40.0" in refused.text
        assert (await complete(router, second.contact_id, headers, goodwill_amount=10)).status_code == 200


async def test_the_strategy_may_offer_a_callback_when_nobody_on_duty_can_serve(tmp_path: Path) -> None:
    strategy = strategy_file(tmp_path, callback={"when_unservable": True})
    async with running_router(tmp_path / "data", strategy_path=strategy) as router:
        await router.register("en", roles=["service"], languages=["en"])
        turkish = contact("tr-voice", channel=Channel.VOICE, language="tr")
        await router.emit(turkish)
        (offered,) = await eventually(lambda: entries(router, turkish.contact_id, "callback_offered"))
        assert offered["reason"] == "unservable_language"
        english = contact("en-voice", channel=Channel.VOICE, language="en")
        await router.emit(english)
        await eventually(lambda: entries(router, english.contact_id, "queued"))
        assert await entries(router, english.contact_id, "callback_offered") == []


async def test_the_sales_share_per_site_is_reported_and_rebuilt_after_a_restart(tmp_path: Path) -> None:
    """Issue 15.8: the cap's scope is the strategy's choice; with ``per: site`` /v1/stats reports each
    site's share, and a restart rebuilds the same shares from the durable offers."""
    strategy = strategy_file(tmp_path, sales_share={"max_share": 0.5, "min_sample": 0, "per": "site"})
    async with running_router(tmp_path / "data", strategy_path=strategy) as router:
        agents = {
            "p-seller": await router.register("p-seller", roles=["sales"], site="paris"),
            "p-helper": await router.register("p-helper", roles=["service"], site="paris"),
            "b-helper": await router.register("b-helper", roles=["service"], site="berlin"),
        }
        for external_id, site, intent, agent_id in [
            ("buy", "paris", Intent.PURCHASE, "p-seller"),  # a buyer goes to sales first (exempt, but counted)
            ("help", "paris", Intent.SUPPORT, "p-helper"),
            ("b1", "berlin", Intent.SUPPORT, "b-helper"),
        ]:
            await router.emit(contact(external_id, site=site, intent=intent))
            offer = await serve(router, agent_id, agents[agent_id][1])
            assert offer["contact_id"] == contact(external_id).contact_id
        share = (await router.client.get("/v1/stats", headers=ADMIN)).json()["sales_share"]
        assert share["per"] == "site"
        assert share["by_site"] == {"paris": {"share": 0.5, "offered": 2}, "berlin": {"share": 0.0, "offered": 1}}
        assert (share["offered_to_sales"], share["offered"]) == (1, 3)  # the tenant's total, for the record
    async with running_router(tmp_path / "data", strategy_path=strategy) as router:
        again = (await router.client.get("/v1/stats", headers=ADMIN)).json()["sales_share"]
    assert again["by_site"] == share["by_site"]
