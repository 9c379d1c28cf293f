"""Allowed handling time: which assigned contacts run past what the agent's role allows.

The strategy grants each role a handling time (leeway.py). Passing it is not an error and nothing is
forced on the agent; it leaves a trace instead (a notice on the agent's stream, a timeline entry, a
counter in /v1/stats and a metric), so management sees whether its allowance is realistic.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field

from services.router.leeway import Leeway
from shared.events import Role

HANDLING_OVERRUN = "handling_overrun"  # timeline kind and agent-stream event


@dataclass(frozen=True, slots=True)
class Watched:
    contact_id: str
    agent_id: str
    role: Role
    allowed_seconds: float
    since: float  # answered at

    @property
    def due_at(self) -> float:
        return self.since + self.allowed_seconds


@dataclass
class HandlingWatch:
    """Assigned contacts by the time their allowance runs out (a heap: the tick asks every 50 ms)."""

    _heap: list[tuple[float, str]] = field(default_factory=list)
    _watched: dict[str, Watched] = field(default_factory=dict)

    def watch(self, contact_id: str, agent_id: str, leeway: Leeway, since: float) -> None:
        w = Watched(contact_id, agent_id, leeway.role, leeway.allowed_handling_seconds, since)
        self._watched[contact_id] = w
        heapq.heappush(self._heap, (w.due_at, contact_id))

    def forget(self, contact_id: str) -> None:
        self._watched.pop(contact_id, None)  # its heap entry is skipped when it comes up

    def due(self, now: float) -> list[Watched]:
        """Watched contacts whose allowance has run out (not removed: the caller forgets them once
        the notice is committed, so a failed transaction tries again)."""
        out: list[Watched] = []
        heap = self._heap
        while heap and heap[0][0] <= now:
            due_at, contact_id = heap[0]
            w = self._watched.get(contact_id)
            if w is None or w.due_at != due_at:
                heapq.heappop(heap)
                continue
            out.append(w)
            heapq.heappop(heap)
        for w in out:  # back on the heap until forgotten
            heapq.heappush(heap, (w.due_at, w.contact_id))
        return out
