"""Builders shared by the matching tests (kept short so tests read like scenarios)."""

from __future__ import annotations

from typing import Any

from services.router.matching import AgentState, WaitingContact
from services.router.strategy import Strategy, load_strategy, parse_strategy
from shared.events import AgentStatus, Channel, Intent, Role, Tier


def agent(
    agent_id: str,
    *roles: Role,
    skills: dict[str, int] | None = None,
    languages: set[str] | None = None,
    capacity: dict[Channel, int] | None = None,
    status: AgentStatus = AgentStatus.AVAILABLE,
    idle_since: float = 0.0,
    site: str = "main",
    connected: bool = True,
) -> AgentState:
    return AgentState(
        agent_id=agent_id,
        site=site,
        roles=list(roles or (Role.SERVICE,)),
        skills=dict(skills or {}),
        languages=set(languages or {"en"}),
        capacity=dict(capacity or {Channel.VOICE: 1}),
        status=status,
        idle_since=idle_since,
        connected=connected,
    )


def contact(
    contact_id: str,
    at: float = 0.0,
    *,
    intent: Intent | None = Intent.SUPPORT,
    channel: Channel = Channel.VOICE,
    tier: Tier = Tier.STANDARD,
    language: str = "en",
    site: str = "main",
    **kw: Any,
) -> WaitingContact:
    return WaitingContact(
        contact_id=contact_id,
        site=site,
        channel=channel,
        intent=intent,
        tier=tier,
        language=language,
        enqueued_at=at,
        **kw,
    )


def strategy(**overrides: Any) -> Strategy:
    """The default strategy with top-level fields replaced (validated like a file)."""
    data = load_strategy().model_dump(mode="json")
    data.update(overrides)
    return parse_strategy(data, "test")
