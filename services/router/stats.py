"""Service level and abandonment over a window: pure arithmetic over contact rows, no I/O.

Service level ``share = answered within the target / (answered + abandoned after the target + still
waiting beyond it)``: contacts abandoned within the target do not count against it (the caller gave up
before we could have been late), while a contact still waiting past the target already missed it.
Abandonment rate = abandoned / (answered + abandoned). Callbacks are outbound work and not counted.

Operators know two more definitions (Asterisk's SL and SL2), reported next to ``share`` so a figure
can be compared with the tool it is compared to:

* ``answered_share`` = answered within the target / answered (abandoned contacts ignored);
* ``with_abandoned_share`` = (answered within + abandoned within the target) / (answered + abandoned):
  a caller who gave up quickly counts as served in time.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from services.router.strategy import ServiceLevel


@dataclass(frozen=True, slots=True)
class ContactTimes:
    """When a contact entered the queue and how it ended (seconds); ``ended_at`` set for abandoned."""

    received_at: float
    answered_at: float | None
    abandoned_at: float | None
    waiting: bool  # still waiting (or being offered) now


def service_level(contacts: Iterable[ContactTimes], now: float, target: ServiceLevel) -> dict[str, Any]:
    threshold = target.within_seconds
    answered = within = abandoned = late_abandoned = still_late = 0
    for c in contacts:
        if c.answered_at is not None:
            answered += 1
            within += c.answered_at - c.received_at <= threshold
        elif c.abandoned_at is not None:
            abandoned += 1
            late_abandoned += c.abandoned_at - c.received_at > threshold
        elif c.waiting and now - c.received_at > threshold:
            still_late += 1
    offered = answered + late_abandoned + still_late
    resolved = answered + abandoned
    share = within / offered if offered else None
    answered_share = within / answered if answered else None
    early_abandoned = abandoned - late_abandoned
    with_abandoned = (within + early_abandoned) / resolved if resolved else None
    return {
        "target_share": target.share,
        "within_seconds": threshold,
        "share": round(share, 4) if share is not None else None,
        "meets_target": share >= target.share if share is not None else None,
        "answered_share": _round(answered_share),
        "answered_share_meets_target": answered_share >= target.share if answered_share is not None else None,
        "with_abandoned_share": _round(with_abandoned),
        "with_abandoned_share_meets_target": with_abandoned >= target.share if with_abandoned is not None else None,
        "answered": answered,
        "answered_within": within,
        "abandoned": abandoned,
        "abandoned_within": early_abandoned,
        "abandonment_rate": round(abandoned / resolved, 4) if resolved else None,
    }


def _round(x: float | None) -> float | None:
    return round(x, 4) if x is not None else None
