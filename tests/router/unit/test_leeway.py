"""Leeway per person: the role an agent was offered a contact under decides its leeway (leeway.py)."""

from __future__ import annotations

from services.router.leeway import leeway_for
from services.router.strategy import parse_strategy
from shared.events import Intent, Role
from tests.router.unit.test_routing_strategy import C


def strategy():  # type: ignore[no-untyped-def]
    return parse_strategy(
        {
            "version": "t",
            "roles": {
                "service": {"allowed_handling_seconds": 400, "goodwill_budget": 0},
                "brand_ambassador": {"allowed_handling_seconds": 900, "goodwill_budget": 50},
                "sales": {"allowed_handling_seconds": 600, "goodwill_budget": 0},
            },
            "rules": [
                {
                    "name": "cancel",
                    "when": {"intents": ["cancellation"]},
                    "goodwill_budget": 150,
                    "steps": [{"role": "brand_ambassador"}, {"role": "service", "after_seconds": 60}],
                    "leeway": {"service": {"goodwill_budget": 20, "allowed_handling_seconds": 700}},
                },
                {"name": "all", "upsell": True, "steps": [{"role": "service"}, {"role": "brand_ambassador"}]},
            ],
        }
    )


def test_rule_values_bind_the_first_role_and_leeway_grants_others() -> None:
    s = strategy()
    plan = s.plan(C(intent=Intent.CANCELLATION))
    amb = leeway_for(s, plan, Role.BRAND_AMBASSADOR)
    svc = leeway_for(s, plan, Role.SERVICE)
    assert (amb.goodwill_budget, amb.allowed_handling_seconds) == (150, 900)
    assert (svc.goodwill_budget, svc.allowed_handling_seconds) == (20, 700)


def test_upsell_only_for_roles_that_sell_and_never_turned_on_by_a_role() -> None:
    s = strategy()
    plan = s.plan(C(intent=Intent.SUPPORT))
    assert leeway_for(s, plan, Role.SERVICE).upsell is True
    assert leeway_for(s, plan, Role.BRAND_AMBASSADOR).upsell is False
    short = s.plan(C(intent=Intent.QUESTION))
    assert leeway_for(s, short, Role.SALES).upsell is False
