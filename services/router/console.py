"""What the agent console shows an agent about the goals: the leeway of its own roles in plain words,
next to the strategy's goals for everyone, so an agent knows *why* a contact came to them and how much
time and goodwill they may spend on it without asking."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from pydantic import BaseModel, Field
from sqlalchemy import select

from services.router.dashboard import Goal, _duration, _role, goals_in_words
from services.router.store import ContactState, contacts
from services.router.strategy import Strategy
from shared.events import Role


class RoleLeeway(BaseModel):
    role: str
    allowed_handling_seconds: float
    goodwill_budget: float
    text: str


class Figures(BaseModel):
    agents: int
    completed: int
    resolved: int
    sold: int
    goodwill: float
    average_handling_seconds: float | None = Field(description="accepted to completed; null before the first")
    over_time_allowed: int = Field(description="contacts that took longer than the role's time allowed")


class ShiftFigures(BaseModel):
    window_seconds: float
    team: str = Field(description="the agent's team, or its site when it has none")
    own: Figures
    team_figures: Figures
    service_level: dict[str, dict[str, float | None]] = Field(description="channel -> attained share and target")


class ConsoleProfile(BaseModel):
    agent: dict[str, object]
    strategy_version: str
    strategy_description: str | None
    leeway: list[RoleLeeway]
    goals: list[Goal]
    figures: ShiftFigures | None = None


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


SHIFT_SECONDS = 8 * 3600.0  # "this shift": the figures an agent is measured by today


def _allowed(strategy: Strategy, roles: Sequence[str]) -> float:
    """The most time any of an agent's roles allows: the contact may have come to it in any of them."""
    known = {r.value for r in Role}
    allowed = [strategy.role_profile(Role(r)).allowed_handling_seconds for r in roles if r in known]
    return max(allowed, default=600.0)


def figures_of(rows: Iterable[Any], members: dict[str, float]) -> Figures:
    """Sum completed contacts of ``members`` (agent id -> its time allowed)."""
    completed = resolved = sold = over = 0
    goodwill = handled = 0.0
    for r in rows:
        if r.agent_id not in members:
            continue
        outcome = r.outcome or {}
        completed += 1
        resolved += bool(outcome.get("resolved"))
        sold += bool(outcome.get("sold"))
        goodwill += float(outcome.get("goodwill_amount") or 0)
        if r.answered_at is not None and r.ended_at is not None:
            handled += r.ended_at - r.answered_at
            over += r.ended_at - r.answered_at > members[r.agent_id]
    return Figures(
        agents=len(members),
        completed=completed,
        resolved=resolved,
        sold=sold,
        goodwill=round(goodwill, 2),
        average_handling_seconds=round(handled / completed, 1) if completed else None,
        over_time_allowed=over,
    )


async def shift_figures(service: Any, agent: dict[str, Any]) -> ShiftFigures:
    """The agent's own and its team's figures over the shift, and the service level it works toward.

    Reads the router's contact rows directly (one indexed range query on ``ended_at``) rather than
    adding a query to the shared service module other work is changing."""
    strategy: Strategy = service.strategy
    team_key = "team" if agent.get("team") else "site"
    team = [a for a in await service.views.list_agents() if a.get(team_key) == agent.get(team_key)]
    members = {a["agent_id"]: _allowed(strategy, a["roles"]) for a in team}
    since = service.clock() - SHIFT_SECONDS
    async with service.sessionmaker() as session:  # read-only, see docstring
        rows = (
            await session.execute(
                select(contacts.c.agent_id, contacts.c.answered_at, contacts.c.ended_at, contacts.c.outcome).where(
                    contacts.c.state == ContactState.COMPLETED,
                    contacts.c.ended_at >= since,
                    contacts.c.agent_id.in_(list(members)),
                )
            )
        ).all()
    own = {agent["agent_id"]: members.get(agent["agent_id"], 600.0)}
    stats = await service.views.stats()
    levels = {
        channel: {"share": sl.get("share"), "target": sl.get("target_share")}
        for channel, sl in (stats.get("service_level") or {}).items()
    }
    return ShiftFigures(
        window_seconds=SHIFT_SECONDS,
        team=str(agent.get(team_key) or "–"),
        own=figures_of(rows, own),
        team_figures=figures_of(rows, members),
        service_level=levels,
    )


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
