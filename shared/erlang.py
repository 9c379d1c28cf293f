"""Erlang C: how many agents a queue needs to meet a service-level target.

Why our own module: the PyPI options are either a heavy workforce suite (``pyworkforce`` pulls pandas,
numpy and OR-Tools into a routing service) or a thinly used single-purpose package; the formula itself
is a dozen lines. It is checked against the published textbook example (100 contacts per 30 minutes,
180 s average handling, 80 % within 20 s → 14 agents, service level ≈ 0.888).

Numerics: the probability of waiting is computed from the Erlang B recursion, which stays finite for
hundreds of agents where ``A**N / N!`` would overflow.

Assumptions (as every Erlang C tool makes them): Poisson arrivals, exponential handling times, one
contact per agent at a time, nobody abandons. With abandonment the true need is a little lower, so the
figure errs on the side of enough agents.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

MAX_AGENTS = 10_000


@dataclass(frozen=True, slots=True)
class Staffing:
    """The smallest team that meets the target, and what it would attain."""

    agents: int
    traffic_erlangs: float  # offered load: arrival rate × handling time
    service_level: float  # share answered within the threshold with ``agents``
    probability_of_waiting: float
    average_speed_of_answer_seconds: float
    occupancy: float


def _check(traffic: float, handling_seconds: float | None = None) -> None:
    if not math.isfinite(traffic) or traffic < 0:
        raise ValueError(f"traffic must be a finite number ≥ 0 Erlangs, not {traffic!r}")
    if handling_seconds is not None and (not math.isfinite(handling_seconds) or handling_seconds <= 0):
        raise ValueError(f"handling time must be > 0 seconds, not {handling_seconds!r}")


def erlang_c(agents: int, traffic: float) -> float:
    """Probability that a contact has to wait (1.0 when the team cannot keep up: agents ≤ traffic)."""
    _check(traffic)
    if agents < 0:
        raise ValueError(f"agents must be ≥ 0, not {agents!r}")
    if traffic == 0:
        return 0.0
    if agents <= traffic:
        return 1.0
    b = 1.0  # Erlang B with 0 servers
    for k in range(1, agents + 1):
        b = traffic * b / (k + traffic * b)
    return agents * b / (agents - traffic * (1 - b))


def service_level(agents: int, traffic: float, handling_seconds: float, within_seconds: float) -> float:
    """Share of contacts answered within ``within_seconds`` by ``agents`` agents."""
    _check(traffic, handling_seconds)
    if within_seconds < 0:
        raise ValueError(f"threshold must be ≥ 0 seconds, not {within_seconds!r}")
    if traffic == 0:
        return 1.0
    if agents <= traffic:
        return 0.0
    pw = erlang_c(agents, traffic)
    return max(0.0, 1.0 - pw * math.exp(-(agents - traffic) * within_seconds / handling_seconds))


def agents_needed(
    arrival_rate_per_second: float, handling_seconds: float, target_share: float, within_seconds: float
) -> Staffing:
    """The fewest agents whose service level is at least ``target_share`` within ``within_seconds``."""
    if not math.isfinite(arrival_rate_per_second) or arrival_rate_per_second < 0:
        raise ValueError(f"arrival rate must be ≥ 0 per second, not {arrival_rate_per_second!r}")
    _check(0.0, handling_seconds)
    if not 0 < target_share <= 1:
        raise ValueError(f"target share must be in (0, 1], not {target_share!r}")
    if target_share == 1:
        raise ValueError("a 100 % service level needs infinitely many agents under Erlang C")
    traffic = arrival_rate_per_second * handling_seconds
    if traffic == 0:
        return Staffing(0, 0.0, 1.0, 0.0, 0.0, 0.0)
    agents = max(1, math.floor(traffic) + 1)  # fewer than the load can never keep up
    while True:
        if agents > MAX_AGENTS:
            raise ValueError(f"more than {MAX_AGENTS} agents needed for {traffic:.1f} Erlangs")
        sl = service_level(agents, traffic, handling_seconds, within_seconds)
        if sl >= target_share:
            pw = erlang_c(agents, traffic)
            return Staffing(
                agents=agents,
                traffic_erlangs=traffic,
                service_level=sl,
                probability_of_waiting=pw,
                average_speed_of_answer_seconds=pw * handling_seconds / (agents - traffic),
                occupancy=traffic / agents,
            )
        agents += 1
