"""Sales targets: what management expects per role or team in a period, next to what was sold.

Targets are strategy data and are reported only: routing never looks at them, so a team behind its
target gets no sales pushed onto service contacts (the sales-share cap and the short-question rule still
decide who is offered what). A sale counts for the role the agent was offered the contact under and
for the agent's team.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from services.router.strategy import SalesTarget


@dataclass(frozen=True, slots=True)
class Sale:
    at: float
    role: str | None
    team: str | None


def progress(targets: Iterable[SalesTarget], sales: Iterable[Sale], now: float) -> list[dict[str, Any]]:
    """Target vs actual per target, each over its own rolling period ending now."""
    sales = list(sales)
    out = []
    for t in targets:
        since = now - t.period_seconds
        actual = sum(
            1 for s in sales if s.at > since and (s.role == t.role.value if t.role is not None else s.team == t.team)
        )
        out.append(
            {
                "role": t.role.value if t.role is not None else None,
                "team": t.team,
                "target": t.target,
                "actual": actual,
                "met": actual >= t.target,
                "period_seconds": t.period_seconds,
            }
        )
    return out
