"""Leeway follows the person: what an agent may do on a contact is decided by the role under which
that agent was offered it, not by the rule's first role.

A brand ambassador who takes a general contact still has a brand ambassador's time and goodwill (and,
looking after customers rather than selling, no upsell flag); a service agent who takes a complaint
after the rule widened has service leeway, not the €50 meant for brand ambassadors. A rule can still
grant a role more (or less) through ``leeway`` in the strategy; its ``allowed_handling_seconds`` and
``goodwill_budget`` keep meaning "for the rule's first role".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from services.router.strategy import RoutingPlan, Strategy
from shared.events import Role


@dataclass(frozen=True, slots=True)
class Leeway:
    role: Role
    upsell: bool
    allowed_handling_seconds: float
    goodwill_budget: float

    def as_dict(self) -> dict[str, Any]:
        return {
            "role": self.role.value,
            "upsell": self.upsell,
            "allowed_handling_seconds": self.allowed_handling_seconds,
            "goodwill_budget": self.goodwill_budget,
        }


def leeway_for(strategy: Strategy, plan: RoutingPlan, role: Role | None) -> Leeway:
    """The leeway of an agent offered this contact under ``role`` (None: the plan's first role, e.g. a
    contact offered before roles were recorded)."""
    rule = strategy.rule_named(plan.rule)
    if rule is None:  # the plan was made under a strategy that has since been replaced
        first = plan.steps[0].role
        return Leeway(role or first, plan.upsell, plan.allowed_handling_seconds, plan.goodwill_budget)
    role = role or plan.steps[0].role
    profile = strategy.role_profile(role)
    override = rule.leeway.get(role)
    is_first = role is rule.steps[0].role
    handling = profile.allowed_handling_seconds
    budget = profile.goodwill_budget
    if is_first and rule.allowed_handling_seconds is not None:
        handling = rule.allowed_handling_seconds
    if is_first and rule.goodwill_budget is not None:
        budget = rule.goodwill_budget
    upsell = profile.may_upsell(role)
    if override is not None:
        handling = override.allowed_handling_seconds or handling
        budget = override.goodwill_budget if override.goodwill_budget is not None else budget
        upsell = override.upsell if override.upsell is not None else upsell
    # plan.upsell already says "the rule allows it and this is no short question": a promise, never overridden.
    return Leeway(role, plan.upsell and upsell, handling, budget)


def role_of(explanation: Any) -> Role | None:
    """The role an offer was made under, from its stored explanation (None if not recorded)."""
    if isinstance(explanation, dict):
        value = explanation.get("role")
        if value in {r.value for r in Role}:
            return Role(value)
    return None
