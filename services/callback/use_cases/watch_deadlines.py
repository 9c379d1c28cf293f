"""The scheduler's deadline watch: every open commitment whose next check time came is looked at again.

Past its deadline it breaches; with too little callable time left it is flagged at risk once
(``callback.at_risk``); at the end of its promising agent's share it falls back to the pool. A released
one that escalated or fell back is handed to the router again with the new terms (``callback.due``).
Rows are claimed with ``FOR UPDATE SKIP LOCKED``, so replicas share the work.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING

import structlog
from sqlalchemy import select

from services.callback.lifecycle import Status, evaluate
from services.callback.rows import OPEN, customer_of
from services.callback.store import Commitment
from services.callback.use_cases.breach import breach
from services.callback.use_cases.due import emit_due
from shared.events import CallbackAtRisk, deterministic_id

if TYPE_CHECKING:
    from services.callback.service import CallbackService
    from services.callback.use_cases.tick import TickReport

log = structlog.get_logger(__name__)


async def run(callbacks: CallbackService, now: datetime, report: TickReport) -> int:
    """One batch (``batch_size``) of the commitments due a check, in one transaction; returns how many."""
    policy = callbacks.policy
    async with callbacks.transaction() as tx:
        rows = (
            (
                await tx.session.execute(
                    select(Commitment)
                    .where(Commitment.status.in_(OPEN), Commitment.next_check_at <= now)
                    .order_by(Commitment.next_check_at)
                    .limit(callbacks.batch_size)
                    .with_for_update(skip_locked=True)
                )
            )
            .scalars()
            .all()
        )
        for c in rows:
            windows = callbacks.windows(c)
            d = evaluate(c, windows, now, policy)
            if d.breach:
                await breach(tx, c, now)
                report.breached.append(c.id)
                continue
            if d.becomes_at_risk:
                c.at_risk = True
                c.at_risk_at = now
                report.at_risk.append(c.id)
                await tx.emit(
                    CallbackAtRisk(
                        tenant_id=c.tenant_id,
                        callback_id=c.id,
                        customer=customer_of(c),
                        site=c.site,
                        deadline=c.deadline,
                        slack_seconds=round(d.slack_seconds, 1),
                        at=now,
                    ),
                    deterministic_id("callback.at_risk", c.id),
                )
                log.warning("callback.at_risk", callback_id=c.id, slack_seconds=d.slack_seconds)
            if d.fall_back_to_pool:
                c.released_to_agent_id = None
                report.fallbacks.append(c.id)
            if c.status == Status.RELEASED.value and (d.becomes_at_risk or d.fall_back_to_pool):
                await emit_due(callbacks, tx, c, now)  # the router upserts by callback_id
            callbacks.refresh(c, now)
            # A row whose next check stays in the past would be selected forever: push it on.
            if c.next_check_at is not None and c.next_check_at <= now:
                c.next_check_at = now + timedelta(seconds=1)
        return len(rows)
