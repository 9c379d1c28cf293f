"""One scheduler pass (``scheduler.py`` runs it in a loop): first the deadline watch (breaches, at-risk
escalations, fallbacks from the promising agent to the pool; ``watch_deadlines``), then the releases of
due callbacks to free agents (``release_due``). Everything is re-derived from the database, so a restart
at any moment loses nothing: what was due, at risk or breached is found again.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import structlog

from services.callback.metrics import SCHEDULER_PASS_SECONDS
from services.callback.use_cases import release_due, watch_deadlines

if TYPE_CHECKING:
    from services.callback.service import CallbackService

log = structlog.get_logger(__name__)


@dataclass
class TickReport:
    """What one scheduler pass did (for logs, metrics and tests)."""

    breached: list[str] = field(default_factory=list)
    at_risk: list[str] = field(default_factory=list)
    fallbacks: list[str] = field(default_factory=list)
    released: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.breached or self.at_risk or self.fallbacks or self.released)


async def run(callbacks: CallbackService, now: datetime | None = None) -> TickReport:
    """One scheduler pass: breaches, at-risk escalations, preferred-agent fallbacks, releases."""
    now = (now or callbacks.clock.now()).astimezone(UTC)
    report = TickReport()
    with SCHEDULER_PASS_SECONDS.time():
        while True:
            n = await watch_deadlines.run(callbacks, now, report)
            if n < callbacks.batch_size:
                break
        await release_due.run(callbacks, now, report)
    if report:
        callbacks.notify()  # publish the outbox now (not a wake: this was the scheduler)
        log.info(
            "callback.tick",
            breached=len(report.breached),
            at_risk=len(report.at_risk),
            fallbacks=len(report.fallbacks),
            released=len(report.released),
        )
    return report
