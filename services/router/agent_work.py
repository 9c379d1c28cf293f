"""The router's view of each agent's work: idle, offered, on a contact, in wrap-up.

Apart from the agent's own status (available, break, offline), which only the agent (or an admin, or
the router after missed offers) chooses. Work is never chosen: it follows from the agent's open offers,
assignments and wrap-up, and is settled at the end of every transaction (``use_cases/settle_work.py``),
so it can never be left behind by a path that forgot to update it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from shared.events import AgentActivity, AgentStatus


def activity_of(*, load: int, offered: int, wrapping: bool) -> AgentActivity:
    """``load`` counts offered + assigned contacts (the engine's reservations); ``offered`` the open
    offers among them. A contact still open wins over wrap-up, which wins over an offer not yet taken."""
    if load - offered > 0:
        return AgentActivity.ON_CONTACT
    if wrapping:
        return AgentActivity.WRAP_UP
    if offered > 0:
        return AgentActivity.OFFERED
    return AgentActivity.IDLE


def routable_status(status: AgentStatus, *, wrapping: bool) -> AgentStatus:
    """What the engine routes by: the agent's choice, except that an available agent in wrap-up takes
    no new work until it ends."""
    if wrapping and status is AgentStatus.AVAILABLE:
        return AgentStatus.WRAP_UP
    return status


@dataclass
class AgentWork:
    """Each agent's last settled activity, the wrap-ups running, and who changed since the last settle."""

    activity: dict[str, AgentActivity] = field(default_factory=dict)
    wrap_until: dict[str, float] = field(default_factory=dict)  # agents in wrap-up: when it ends
    changed: set[str] = field(default_factory=set)
    written_until: dict[str, float] = field(default_factory=dict)  # the wrap-up end the agent's row holds

    def wrapping(self, agent_id: str) -> bool:
        return agent_id in self.wrap_until

    def start_wrap_up(self, agent_id: str, until: float) -> None:
        self.wrap_until[agent_id] = until
        self.changed.add(agent_id)

    def end_wrap_up(self, agent_id: str) -> bool:
        """True when the agent was in wrap-up."""
        ended = self.wrap_until.pop(agent_id, None) is not None
        if ended:
            self.changed.add(agent_id)
        return ended

    def forget(self, agent_id: str) -> None:
        self.activity.pop(agent_id, None)
        self.wrap_until.pop(agent_id, None)
        self.written_until.pop(agent_id, None)
        self.changed.discard(agent_id)

    def clear(self) -> None:
        self.activity.clear()
        self.wrap_until.clear()
        self.written_until.clear()
        self.changed.clear()
