"""Pure matching core: waiting contacts, available agents, explainable decisions. No I/O; time is passed in.

(Stub: public signatures are final, implementation follows.)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from services.router.strategy import Strategy
from shared.events import AgentStatus, Channel, Intent, Role, Tier


@dataclass
class AgentState:
    agent_id: str
    site: str
    roles: list[Role]  # primary first
    skills: dict[str, int]  # name -> level 1..5
    languages: set[str]
    capacity: dict[Channel, int]
    status: AgentStatus
    load: dict[Channel, int] = field(default_factory=dict)
    idle_since: float = 0.0
    connected: bool = True


@dataclass
class WaitingContact:
    contact_id: str
    site: str
    channel: Channel
    intent: Intent | None
    tier: Tier
    language: str
    enqueued_at: float  # virtual start time: a callback keeps its original place in line
    expected_handling_seconds: float | None = None
    required_skills: dict[str, int] = field(default_factory=dict)
    priority_boost: float = 0.0
    preferred_agent_id: str | None = None
    widen_roles: bool = False
    callback_id: str | None = None


@dataclass
class Decision:
    contact_id: str
    agent_id: str
    rule: str
    score: float
    explanation: dict[str, Any]


@dataclass
class QueueEntry:
    contact_id: str
    site: str
    channel: Channel
    priority: float
    waited_seconds: float
    rule: str
    open_roles: list[Role]
    callback_id: str | None = None


class MatchingEngine:
    def __init__(self, strategy: Strategy) -> None:
        self.strategy = strategy

    def replace_strategy(self, strategy: Strategy) -> None:
        raise NotImplementedError

    def upsert_agent(self, agent: AgentState) -> None:
        raise NotImplementedError

    def remove_agent(self, agent_id: str) -> None:
        raise NotImplementedError

    def set_status(self, agent_id: str, status: AgentStatus, now: float) -> None:
        raise NotImplementedError

    def set_connected(self, agent_id: str, connected: bool, now: float) -> None:
        raise NotImplementedError

    def enqueue(self, contact: WaitingContact) -> None:
        raise NotImplementedError

    def withdraw(self, contact_id: str) -> WaitingContact | None:
        raise NotImplementedError

    def decide(self, now: float, limit: int | None = None) -> list[Decision]:
        raise NotImplementedError

    def release(self, contact_id: str, now: float, *, requeue: bool = True) -> str | None:
        raise NotImplementedError

    def finish(self, contact_id: str, now: float) -> str | None:
        raise NotImplementedError

    def queue_snapshot(self, now: float) -> list[QueueEntry]:
        raise NotImplementedError

    def estimated_wait(self, site: str, channel: Channel, now: float) -> float:
        raise NotImplementedError
