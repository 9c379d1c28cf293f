"""Staffing from live data: agents needed (Erlang C) per channel and role, next to agents on duty.

Why here and not in a WFM tool: the router already knows the arrival rate, the handling time and the
strategy's service-level target, so ops sees "we need 14 and have 11" while it still matters.

How the figures are made, over the stats window (``service_level_window_seconds``):

* arrivals: contacts that entered the router (callbacks included: they are agent work too; contacts
  diverted to a callback are not, they come back later as the callback). Rate = arrivals / window.
* handling time: mean of answer → end of the completed contacts in the window plus the channel's
  wrap-up, once at least ``MIN_MEASURED`` were completed; until then the strategy's
  ``expected_handling_seconds`` plus wrap-up (``handling_source`` says which).
* role: the first role of the strategy's plan for the contact, i.e. who the strategy means to serve it.
  Per-role rows use the channel's handling time (too few samples per role to measure it apart).
* on duty: agents available, busy or in wrap-up with capacity on the channel; per role, the agents
  holding that role (an agent with two roles counts in both, since it can serve either).

Separate pools need more agents in total than one pooled team (Erlang's economy of scale), so the
channel row (``role`` = null) is computed pooled, not summed from the role rows.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, Field
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from services.router.store import ContactState, agents, contacts
from services.router.strategy import Strategy
from shared.erlang import agents_needed
from shared.events import AgentStatus, Channel, Intent, Role, Tier

MIN_MEASURED = 5
# On duty: the agent chose to take work (whether on a contact now or not is their activity, apart).
ON_DUTY = (AgentStatus.AVAILABLE,)


@dataclass(frozen=True, slots=True)
class Arrival:
    """One contact that arrived in the window, reduced to what staffing needs."""

    channel: Channel
    role: Role
    handled_seconds: float | None  # answer → end, for completed contacts


@dataclass(frozen=True, slots=True)
class OnDutyAgent:
    roles: frozenset[Role]
    channels: frozenset[Channel]


class StaffingRow(BaseModel):
    """Agents needed to meet the channel's service-level target vs agents on duty, for one pool."""

    channel: str
    role: str | None = Field(description="null: the whole channel, pooled")
    arrivals: int
    arrival_rate_per_hour: float
    handling_seconds: float = Field(description="average handling time including wrap-up")
    handling_source: str = Field(description="measured (completed contacts) or strategy (expected)")
    traffic_erlangs: float
    target_share: float
    within_seconds: float
    agents_needed: int | None = Field(description="null when the load is beyond any sensible team")
    agents_on_duty: int
    service_level_with_needed: float | None
    shortfall: int | None = Field(description="agents needed minus on duty, never below 0")


@dataclass(frozen=True, slots=True)
class _PlanKey:
    """What the strategy needs to pick a plan (``ContactLike``)."""

    channel: Channel
    intent: Intent | None
    tier: Tier
    expected_handling_seconds: float | None


def first_role(strategy: Strategy, channel: Channel, intent: Intent | None, tier: Tier, expected: float | None) -> Role:
    return strategy.plan(_PlanKey(channel, intent, tier, expected)).steps[0].role


def _handling(strategy: Strategy, channel: Channel, rows: list[Arrival]) -> tuple[float, str]:
    policy = strategy.channel_policy(channel)
    measured = [a.handled_seconds for a in rows if a.handled_seconds is not None]
    if len(measured) >= MIN_MEASURED:
        return sum(measured) / len(measured) + policy.wrap_up_seconds, "measured"
    return policy.expected_handling_seconds + policy.wrap_up_seconds, "strategy"


def _row(
    strategy: Strategy,
    channel: Channel,
    role: Role | None,
    n: int,
    window: float,
    aht: float,
    source: str,
    on_duty: int,
) -> StaffingRow:
    target = strategy.channel_policy(channel).service_level
    rate = n / window
    try:
        s = agents_needed(rate, aht, target.share, target.within_seconds)
        needed: int | None = s.agents
        sl: float | None = round(s.service_level, 4)
    except ValueError:  # a 100 % target or an absurd load: say "unknown", not a made-up number
        needed = sl = None
    return StaffingRow(
        channel=channel.value,
        role=role.value if role else None,
        arrivals=n,
        arrival_rate_per_hour=round(rate * 3600, 2),
        handling_seconds=round(aht, 1),
        handling_source=source,
        traffic_erlangs=round(rate * aht, 3),
        target_share=target.share,
        within_seconds=target.within_seconds,
        agents_needed=needed,
        agents_on_duty=on_duty,
        service_level_with_needed=sl,
        shortfall=max(0, needed - on_duty) if needed is not None else None,
    )


def estimate(
    strategy: Strategy, arrivals: Iterable[Arrival], on_duty: Iterable[OnDutyAgent], window_seconds: float
) -> list[StaffingRow]:
    """Rows per channel (pooled) and per (channel, role), for every channel with arrivals or agents."""
    if window_seconds <= 0:
        raise ValueError("the window must be longer than 0 seconds")
    by_channel: dict[Channel, list[Arrival]] = {}
    for a in arrivals:
        by_channel.setdefault(a.channel, []).append(a)
    team = list(on_duty)
    channels = set(by_channel) | {c for agent in team for c in agent.channels}
    out: list[StaffingRow] = []
    for channel in sorted(channels, key=lambda c: c.value):
        rows = by_channel.get(channel, [])
        aht, source = _handling(strategy, channel, rows)
        serving = [a for a in team if channel in a.channels]
        out.append(_row(strategy, channel, None, len(rows), window_seconds, aht, source, len(serving)))
        roles = {a.role for a in rows} | {r for a in serving for r in a.roles}
        for role in sorted(roles, key=lambda r: r.value):
            n = sum(1 for a in rows if a.role is role)
            duty = sum(1 for a in serving if role in a.roles)
            out.append(_row(strategy, channel, role, n, window_seconds, aht, source, duty))
    return out


async def load(session: AsyncSession, strategy: Strategy, since: float) -> tuple[list[Arrival], list[OnDutyAgent]]:
    """The window's arrivals and the agents on duty, as the database knows them."""
    recent = (
        await session.execute(
            select(
                contacts.c.channel,
                contacts.c.intent,
                contacts.c.customer,
                contacts.c.expected_handling_seconds,
                contacts.c.state,
                contacts.c.answered_at,
                contacts.c.ended_at,
            ).where(
                contacts.c.received_at > since,
                contacts.c.state.not_in((ContactState.DIVERTED, ContactState.CANCELLED)),
            )
        )
    ).all()
    arrivals = []
    roles: dict[tuple[str, str | None, str, float | None], Role] = {}  # few distinct keys: plan each once
    for r in recent:
        channel = Channel(r.channel)
        tier = Tier((r.customer or {}).get("tier", Tier.STANDARD))
        intent = Intent(r.intent) if r.intent else None
        key = (channel, intent, tier, r.expected_handling_seconds)
        role = roles.get(key)
        if role is None:
            role = roles[key] = first_role(strategy, channel, intent, tier, r.expected_handling_seconds)
        handled = (
            r.ended_at - r.answered_at
            if r.state == ContactState.COMPLETED and r.answered_at is not None and r.ended_at is not None
            else None
        )
        arrivals.append(Arrival(channel, role, handled))
    duty_rows = (
        await session.execute(
            select(agents.c.roles, agents.c.capacity).where(agents.c.status.in_([s.value for s in ON_DUTY]))
        )
    ).all()
    team = [
        OnDutyAgent(
            roles=frozenset(Role(r) for r in row.roles),
            channels=frozenset(Channel(c) for c, n in dict(row.capacity).items() if n and n > 0),
        )
        for row in duty_rows
    ]
    return arrivals, team


def as_json(rows: list[StaffingRow]) -> list[dict[str, Any]]:
    return [r.model_dump() for r in rows]


async def waiting_by_role(session: AsyncSession, strategy: Strategy) -> list[dict[str, Any]]:
    """Open contacts per (channel, first role of their plan): which role's queue is growing, as staffing
    counts it (the same ``first_role``), so the queue gauge and the staffing rows agree."""
    rows = (
        await session.execute(
            select(
                contacts.c.channel,
                contacts.c.intent,
                contacts.c.customer,
                contacts.c.expected_handling_seconds,
            ).where(contacts.c.state.in_(ContactState.OPEN))
        )
    ).all()
    counts: dict[tuple[str, str], int] = {}
    roles: dict[tuple[Channel, Intent | None, Tier, float | None], Role] = {}
    for r in rows:
        channel = Channel(r.channel)
        key = (
            channel,
            Intent(r.intent) if r.intent else None,
            Tier((r.customer or {}).get("tier", Tier.STANDARD)),
            r.expected_handling_seconds,
        )
        role = roles.get(key)
        if role is None:
            role = roles[key] = first_role(strategy, *key)
        counts[(channel.value, role.value)] = counts.get((channel.value, role.value), 0) + 1
    return [{"channel": c, "role": role, "waiting": n} for (c, role), n in sorted(counts.items())]
