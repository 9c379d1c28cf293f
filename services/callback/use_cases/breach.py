"""A promise broke: its deadline passed while it was open (``callback.breached``, reason deadline_passed).

Reached from the scheduler's deadline watch, and from an attempt that was made, or ran, past the deadline.
"""

from __future__ import annotations

from datetime import datetime

import structlog

from services.callback.lifecycle import CloseReason, Status
from services.callback.metrics import count_unflagged_breach_on_commit
from services.callback.rows import customer_of, end
from services.callback.store import Commitment
from services.callback.unit_of_work import UnitOfWork
from shared.events import CallbackBreached, deterministic_id

log = structlog.get_logger(__name__)


async def breach(tx: UnitOfWork, c: Commitment, now: datetime) -> None:
    c.status = Status.BREACHED.value
    c.close_reason = CloseReason.DEADLINE_PASSED.value
    end(c, now)
    await tx.emit(breached_event(c, now), deterministic_id("callback.breached", c.id))
    if c.at_risk_at is None:  # e.g. the service was down through its at-risk point
        count_unflagged_breach_on_commit(tx.session.sync_session, c.site)
        log.error("callback.breached_unflagged", callback_id=c.id, deadline=c.deadline.isoformat(), attempts=c.attempts)
    else:
        log.warning("callback.breached", callback_id=c.id, deadline=c.deadline.isoformat(), attempts=c.attempts)


def breached_event(c: Commitment, now: datetime) -> CallbackBreached:
    """The end of an unkept promise: a breach, or a close (wrong number, attempts exhausted)."""
    return CallbackBreached(
        tenant_id=c.tenant_id,
        callback_id=c.id,
        customer=customer_of(c),
        site=c.site,
        deadline=c.deadline,
        attempts=c.attempts,
        reason=c.close_reason or CloseReason.DEADLINE_PASSED.value,
        at_risk_at=c.at_risk_at,
        at=now,
    )
