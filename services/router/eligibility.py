"""Who on duty could serve a contact at all, and if nobody can, why.

A contact that no agent on duty can serve (nobody speaks its language, has the skill, holds a role
its rule lists, takes its channel) used to wait silently with an estimate of 0 s next to idle agents.
This module answers the question the estimate and the unservable flag both need; the order of the
checks makes the reason the first thing that rules everybody out (channel, language, role, skill).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Literal, Protocol

from services.router.strategy import RoutingPlan
from shared.events import Channel, Role

UnservableReason = Literal["nobody_on_duty", "channel", "language", "role", "skill"]


class AgentLike(Protocol):
    """What is read of an agent (matching.AgentState has it; imported there, so not imported here)."""

    agent_id: str
    site: str
    roles: list[Role]
    skills: dict[str, int]
    languages: set[str]
    capacity: dict[Channel, int]


@dataclass(frozen=True, slots=True)
class Eligibility:
    agent_ids: tuple[str, ...]
    reason: UnservableReason | None  # None: someone on duty can serve the contact

    @property
    def servable(self) -> bool:
        return self.reason is None


def eligibility(
    *,
    site: str,
    channel: Channel,
    language: str,
    plan: RoutingPlan,
    widen_roles: bool,
    on_duty: Iterable[AgentLike],
) -> Eligibility:
    """Agents on duty (at the contact's site) who could take the contact once all of its plan's steps
    have opened, or the reason nobody can. Widening over time lowers skill levels and adds roles, so
    every step counts; a contact widened to every role needs no particular role."""
    stage = [a for a in on_duty if a.site == site]
    if not stage:
        return Eligibility((), "nobody_on_duty")
    checks: list[tuple[UnservableReason, Callable[[AgentLike], bool]]] = [
        ("channel", lambda a: a.capacity.get(channel, 0) > 0),
        ("language", lambda a: language in a.languages),
        ("role", lambda a: widen_roles or any(s.role in a.roles for s in plan.steps)),
        (
            "skill",
            lambda a: any(
                (widen_roles or s.role in a.roles) and all(a.skills.get(n, 0) >= lv for n, lv in s.required_skills)
                for s in plan.steps
            ),
        ),
    ]
    for reason, fits in checks:
        stage = [a for a in stage if fits(a)]
        if not stage:
            return Eligibility((), reason)
    return Eligibility(tuple(a.agent_id for a in stage), None)
