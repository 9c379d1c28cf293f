"""The ops dashboard's snapshot: everything the page shows, in one JSON document.

Why one document: the page is plain HTML+JS with no build step; it renders whatever the latest snapshot
says, so a reconnect or a missed update heals itself with the next one. The figures come from the same
queries as ``/v1/stats`` (no second truth); this module adds what a person needs to read them: why each
contact waits, agents by role and status, throughput per minute, and the strategy's goals in words.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any, Protocol

from pydantic import BaseModel, Field

from services.router.staffing import ON_DUTY, StaffingRow
from services.router.strategy import Strategy
from shared.events import AgentActivity, AgentStatus, Role

WAITING_SHOWN = 50
_ON_DUTY = frozenset(s.value for s in ON_DUTY)
THROUGHPUT_MINUTES = 15


class WaitingItem(BaseModel):
    contact_id: str
    site: str
    channel: str
    waited_seconds: float
    priority: float
    rule: str
    open_roles: list[str]
    callback: bool
    unservable_reason: str | None = Field(
        None, description="why nobody on duty can serve it (language, skill, role, channel, nobody_on_duty)"
    )
    why: str = Field(description="why this contact is still waiting, in words")


class AgentItem(BaseModel):
    agent_id: str
    name: str
    site: str
    roles: list[str]
    status: str
    load: dict[str, int]
    connected: bool


class ThroughputBucket(BaseModel):
    minute: float = Field(description="start of the minute, epoch seconds")
    received: int
    answered: int
    completed: int
    abandoned: int


class Goal(BaseModel):
    topic: str
    text: str


class StrategyGoals(BaseModel):
    version: str
    description: str | None
    goals: list[Goal]


class DashboardSnapshot(BaseModel):
    at: str
    strategy: StrategyGoals
    waiting_total: int
    oldest_wait_seconds: float
    offers_outstanding: int
    waiting: list[WaitingItem] = Field(description=f"the first {WAITING_SHOWN} in the order they will be served")
    agents: list[AgentItem]
    agents_by_role: dict[str, dict[str, int]] = Field(
        description="role → what the agent is doing (offered, on_contact, wrap_up), else their status → agents"
    )
    throughput: list[ThroughputBucket] = Field(description=f"per minute, the last {THROUGHPUT_MINUTES} minutes")
    window_seconds: float = Field(description="the recent window of service level and staffing")
    service_level: dict[str, dict[str, Any]]
    staffing: list[StaffingRow]
    sales_share: dict[str, Any]
    goodwill: dict[str, Any] = Field(description="spent vs the period budget, remaining, and by_role")
    # Issue 15: is the strategy obeyed? The same figures as /v1/stats, so the floor sees the gaps too.
    unservable: dict[str, Any] = Field(description="waiting now that nobody on duty can serve: count, by_reason")
    strategy_deviations_today: dict[str, float] = Field(
        description="handling_overruns and sales_on_short_questions today"
    )
    sales_targets: list[dict[str, Any]] = Field(description="per role or team: target, actual, met")
    strategy_coverage: dict[str, Any] = Field(description="roles, rules and warnings (is the strategy staffed?)")


# --------------------------------------------------------------------------------------------------
# Goals in plain words
# --------------------------------------------------------------------------------------------------


def _duration(seconds: float) -> str:
    if seconds >= 3600 and seconds % 3600 == 0:
        hours = int(seconds // 3600)
        return f"{hours} hour" + ("s" if hours != 1 else "")
    if seconds >= 60 and seconds % 60 == 0:
        return f"{int(seconds // 60)} min"
    return f"{seconds:g} s"


def _role(role: Role | str) -> str:
    return str(getattr(role, "value", role)).replace("_", " ")


def goals_in_words(strategy: Strategy) -> list[Goal]:
    """What the strategy promises and refuses, from its own fields and descriptions."""
    goals: list[Goal] = []
    for channel, policy in sorted(strategy.channels.items(), key=lambda kv: kv[0].value):
        sl = policy.service_level
        goals.append(
            Goal(
                topic=f"service level: {_role(channel)}",
                text=f"{sl.share:.0%} of {_role(channel)} contacts answered within {_duration(sl.within_seconds)}.",
            )
        )
    for rule in strategy.rules:
        path = ", then ".join(
            _role(s.role) + (f" after {_duration(s.after_seconds)}" if s.after_seconds else "") for s in rule.steps
        )
        text = (rule.description.rstrip(".") + ". " if rule.description else "") + f"Served by {path}."
        goals.append(Goal(topic=f"rule: {rule.name}", text=text))
    sq = strategy.short_question
    goals.append(
        Goal(
            topic="does not: sell to short questions",
            text="A short question never goes to sales first and never carries a sales pitch; sales may help "
            f"only after {_duration(sq.sales_after_seconds)} of waiting.",
        )
    )
    cap = strategy.sales_share
    goals.append(
        Goal(
            topic="does not: push everyone to sales",
            text=f"At most {cap.max_share:.0%} of contacts go to sales per {_duration(cap.period_seconds)}; "
            "customers who ask to buy are not held back by this cap.",
        )
    )
    budget = strategy.goodwill.period_budget
    per_role = [
        f"{_role(role)} up to {profile.goodwill_budget:g} per contact"
        for role, profile in sorted(strategy.roles.items(), key=lambda kv: kv[0].value)
        if profile.goodwill_budget > 0
    ]
    goals.append(
        Goal(
            topic="goodwill",
            text=(
                f"Budget {budget:g} per {_duration(strategy.goodwill.period_seconds)}"
                if budget is not None
                else "No overall goodwill limit"
            )
            + (f"; {', '.join(per_role)}." if per_role else "; no role may grant goodwill."),
        )
    )
    cb = strategy.callback
    if cb.enabled:
        when = [f"the expected wait exceeds {_duration(cb.max_estimated_wait_seconds)}"]
        if cb.outside_business_hours:
            when.append("we are closed")
        goals.append(
            Goal(
                topic="same-day callbacks",
                text=f"On {', '.join(_role(c) for c in cb.channels)}: when {' or '.join(when)}, the customer is "
                "promised a callback today instead of waiting, and keeps their place in line.",
            )
        )
    else:
        goals.append(Goal(topic="does not: call back", text="No callbacks are offered: everyone waits in line."))
    return goals


# --------------------------------------------------------------------------------------------------
# Why a contact waits
# --------------------------------------------------------------------------------------------------


UNSERVABLE_WORDS = {
    "nobody_on_duty": "nobody is on duty at its site",
    "channel": "nobody on duty takes this channel",
    "language": "nobody on duty speaks its language",
    "role": "nobody on duty holds a role its rule allows",
    "skill": "nobody on duty has the skills it needs",
}


def why_waiting(entry: dict[str, Any], agents: Sequence[dict[str, Any]], strategy: Strategy) -> str:
    """The likeliest reason in words: nobody on duty for the open roles, all of them busy, or no fit;
    plus, when the router's eligibility check finds nobody on duty could serve it at all, that reason
    (so "free but none fits" becomes exactly why, and "busy" never hides a contact nobody can take)."""
    channel, site = entry["channel"], entry["site"]
    open_roles = set(entry["open_roles"])
    fit = [
        a
        for a in agents
        if a["site"] == site
        and open_roles & set(a["roles"])
        and int(a["capacity"].get(channel, 0)) > 0
        and a["status"] in _ON_DUTY
    ]
    roles = " or ".join(_role(r) for r in entry["open_roles"]) or "no role"
    free = [a for a in fit if takes_more(a, channel)]
    if not fit:
        reason = f"no {roles} agent on duty for {_role(channel)} at {site}"
    elif not free:
        reason = f"all {len(fit)} {roles} agent(s) for {_role(channel)} are busy"
    else:
        reason = f"{roles} agents are free but none fits (skills, language or a recent decline)"
    unservable = entry.get("unservable_reason")
    if unservable:  # the router's own eligibility check: say exactly why nobody can take it, not "busy"
        said = f"unservable: {UNSERVABLE_WORDS.get(unservable, unservable)}, even once every role of its rule may help"
        reason = said if free else f"{reason}; {said}"
    later = _next_step(entry, strategy)
    return f"{reason} (rule {entry['rule']}{'; ' + later if later else ''})"


def _next_step(entry: dict[str, Any], strategy: Strategy) -> str | None:
    rule = next((r for r in strategy.rules if r.name == entry["rule"]), None)
    if rule is None:
        return None
    for step in rule.steps:
        if step.after_seconds > entry["waited_seconds"] and step.role.value not in entry["open_roles"]:
            return f"{_role(step.role)} joins in {math.ceil(step.after_seconds - entry['waited_seconds'])} s"
    return None


# --------------------------------------------------------------------------------------------------
# Agents and throughput
# --------------------------------------------------------------------------------------------------


def takes_more(agent: dict[str, Any], channel: str) -> bool:
    """Whether an agent (as the API shows it) could take another contact of ``channel`` now: on duty,
    not in wrap-up, below that channel's capacity (blending rules aside)."""
    return (
        agent["status"] == AgentStatus.AVAILABLE
        and agent.get("activity") != AgentActivity.WRAP_UP
        and int(agent["load"].get(channel, 0)) < int(agent["capacity"].get(channel, 0))
    )


def shown_state(agent: dict[str, Any]) -> str:
    """One word for a supervisor: what the agent is doing, else the status they chose."""
    activity = agent.get("activity") or AgentActivity.IDLE
    return str(agent["status"] if activity == AgentActivity.IDLE else activity)


def agents_by_role(agents: Iterable[dict[str, Any]]) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {r.value: {} for r in Role}
    for a in agents:
        state = shown_state(a)
        for role in a["roles"]:
            by_state = out.setdefault(role, {})
            by_state[state] = by_state.get(state, 0) + 1
    return out


def throughput(
    rows: Iterable[tuple[float, float | None, float | None, str]], now: float, minutes: int = THROUGHPUT_MINUTES
) -> list[ThroughputBucket]:
    """Per-minute counts from (received_at, answered_at, ended_at, state) rows, oldest minute first."""
    first = (math.floor(now / 60) - minutes + 1) * 60
    buckets = [
        {"minute": first + 60 * i, "received": 0, "answered": 0, "completed": 0, "abandoned": 0} for i in range(minutes)
    ]

    def add(at: float | None, key: str) -> None:
        if at is not None and at >= first:
            i = int((at - first) // 60)
            if 0 <= i < minutes:
                buckets[i][key] += 1

    for received, answered, ended, state in rows:
        add(received, "received")
        add(answered, "answered")
        if state == "completed":
            add(ended, "completed")
        elif state == "abandoned":
            add(ended, "abandoned")
    return [ThroughputBucket(**b) for b in buckets]


# --------------------------------------------------------------------------------------------------
# Assembly
# --------------------------------------------------------------------------------------------------


class Source(Protocol):
    """What the snapshot reads from the router (``RouterViews``)."""

    @property
    def strategy(self) -> Strategy: ...  # read-only: RouterViews exposes the router's current strategy

    def clock(self) -> float: ...
    async def stats(self) -> dict[str, Any]: ...
    async def queue(self, *, limit: int | None = None) -> tuple[list[dict[str, Any]], int]: ...
    async def list_agents(self) -> list[dict[str, Any]]: ...
    async def activity_since(self, since: float) -> list[tuple[float, float | None, float | None, str]]: ...


async def build_snapshot(source: Source) -> DashboardSnapshot:
    stats = await source.stats()
    queue, _ = await source.queue(limit=WAITING_SHOWN)
    agents = await source.list_agents()
    now = source.clock()
    activity = await source.activity_since(now - 60 * (THROUGHPUT_MINUTES + 1))
    strategy = source.strategy
    return DashboardSnapshot(
        at=stats["at"],
        strategy=StrategyGoals(
            version=strategy.version, description=strategy.description, goals=goals_in_words(strategy)
        ),
        waiting_total=stats["waiting_total"],
        oldest_wait_seconds=stats["oldest_wait_seconds"],
        offers_outstanding=stats["offers_outstanding"],
        waiting=[
            WaitingItem(
                contact_id=e["contact_id"],
                site=e["site"],
                channel=e["channel"],
                waited_seconds=e["waited_seconds"],
                priority=e["priority"],
                rule=e["rule"],
                open_roles=e["open_roles"],
                callback=e["callback_id"] is not None,
                unservable_reason=e.get("unservable_reason"),
                why=why_waiting(e, agents, strategy),
            )
            for e in queue
        ],
        agents=[
            AgentItem(
                agent_id=a["agent_id"],
                name=a["name"],
                site=a["site"],
                roles=a["roles"],
                status=a["status"],
                load=a["load"],
                connected=a["connected"],
            )
            for a in agents
        ],
        agents_by_role=agents_by_role(agents),
        throughput=throughput(activity, now),
        window_seconds=stats["window_seconds"],
        service_level=stats["service_level"],
        staffing=[StaffingRow.model_validate(r) for r in stats["staffing"]],
        sales_share=stats["sales_share"],
        goodwill=stats["goodwill"],
        unservable=stats["unservable"],
        strategy_deviations_today=stats["strategy_deviations_today"],
        sales_targets=stats["sales_targets"],
        strategy_coverage=stats["strategy_coverage"],
    )
