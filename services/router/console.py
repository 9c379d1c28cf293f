"""What the agent console shows an agent about the goals: the leeway of its own roles in plain words,
next to the strategy's goals for everyone, so an agent knows *why* a contact came to them and how much
time and goodwill they may spend on it without asking."""

from __future__ import annotations

from collections.abc import Iterable

from pydantic import BaseModel

from services.router.dashboard import Goal, _duration, _role, goals_in_words
from services.router.strategy import Strategy
from shared.events import Role


class RoleLeeway(BaseModel):
    role: str
    allowed_handling_seconds: float
    goodwill_budget: float
    text: str


class ConsoleProfile(BaseModel):
    agent: dict[str, object]
    strategy_version: str
    strategy_description: str | None
    leeway: list[RoleLeeway]
    goals: list[Goal]


def leeway_in_words(strategy: Strategy, roles: Iterable[str]) -> list[RoleLeeway]:
    """One line per role the agent holds; a role the strategy does not know gets its defaults' words."""
    out: list[RoleLeeway] = []
    for name in roles:
        try:
            profile = strategy.role_profile(Role(name))
        except ValueError:  # a role this version of the code does not know: nothing to say about it
            continue
        time_text = f"up to {_duration(profile.allowed_handling_seconds)} per contact"
        goodwill = (
            f"you may grant goodwill up to {profile.goodwill_budget:g} per contact without asking"
            if profile.goodwill_budget > 0
            else "no goodwill: pass an unhappy customer to a brand ambassador"
        )
        selling = {
            Role.SALES.value: "offer a sale when the plan says selling is appropriate; never to a short question",
        }.get(name, "sell only when the plan says so")
        out.append(
            RoleLeeway(
                role=_role(name),
                allowed_handling_seconds=profile.allowed_handling_seconds,
                goodwill_budget=profile.goodwill_budget,
                text=f"As {_role(name)}: {time_text}; {goodwill}; {selling}.",
            )
        )
    return out


def console_profile(strategy: Strategy, agent: dict[str, object]) -> ConsoleProfile:
    roles = agent.get("roles") or []
    assert isinstance(roles, list)
    return ConsoleProfile(
        agent=agent,
        strategy_version=strategy.version,
        strategy_description=strategy.description,
        leeway=leeway_in_words(strategy, [str(r) for r in roles]),
        goals=goals_in_words(strategy),
    )
