"""Is the strategy staffed? Does each role on duty carry the share of traffic the rules send to it?

With 2 brand ambassadors for a quarter of the traffic only half the unhappy customers and VIPs reached
one first, and nothing said so. Over the stats window this compares, per role, the share of arrivals
whose rule names that role first with the role's share of the agents on duty (an agent with two roles
counts for both), and warns when the traffic share is larger. Per rule it reports how often the first
offer really went to the rule's first role, and whether anyone holding that role is on duty now.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from services.router.staffing import Arrival, OnDutyAgent
from services.router.strategy import Strategy
from shared.events import Role


@dataclass(frozen=True, slots=True)
class FirstOffer:
    """A contact's first offer in the window: the rule it was routed by and the role it went to."""

    rule: str
    role: Role | None


def role_coverage(arrivals: Sequence[Arrival], on_duty: Sequence[OnDutyAgent]) -> list[dict[str, Any]]:
    total = len(arrivals)
    staff = len(on_duty)
    out = []
    for role in Role:
        sent = sum(1 for a in arrivals if a.role is role)
        holding = sum(1 for a in on_duty if role in a.roles)
        traffic_share = sent / total if total else 0.0
        duty_share = holding / staff if staff else 0.0
        out.append(
            {
                "role": role.value,
                "traffic_share": round(traffic_share, 4),
                "on_duty": holding,
                "on_duty_share": round(duty_share, 4),
                # more of the traffic is meant for this role than its share of the people on duty
                "understaffed": sent > 0 and traffic_share > duty_share,
            }
        )
    return out


def rule_coverage(
    strategy: Strategy, first_offers: Iterable[FirstOffer], on_duty: Sequence[OnDutyAgent]
) -> list[dict[str, Any]]:
    by_rule: dict[str, list[FirstOffer]] = {}
    for f in first_offers:
        by_rule.setdefault(f.rule, []).append(f)
    out = []
    for rule in strategy.rules:
        first = rule.steps[0].role
        offers = by_rule.get(rule.name, [])
        to_first = sum(1 for f in offers if f.role is first)
        out.append(
            {
                "rule": rule.name,
                "first_role": first.value,
                "first_offers": len(offers),
                "first_offer_to_first_role_share": round(to_first / len(offers), 4) if offers else None,
                "first_role_on_duty": sum(1 for a in on_duty if first in a.roles),
            }
        )
    return out


def coverage(
    strategy: Strategy,
    arrivals: Sequence[Arrival],
    on_duty: Sequence[OnDutyAgent],
    first_offers: Iterable[FirstOffer],
) -> dict[str, Any]:
    roles = role_coverage(arrivals, on_duty)
    rules = rule_coverage(strategy, first_offers, on_duty)
    warnings = [
        f"{r['role']}: {r['traffic_share']:.0%} of the traffic is meant for it first, "
        f"but it is {r['on_duty_share']:.0%} of the agents on duty ({r['on_duty']})"
        for r in roles
        if r["understaffed"]
    ]
    return {"roles": roles, "rules": rules, "warnings": warnings}
