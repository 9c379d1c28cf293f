"""An attempt is recorded: a call to the customer was made (``POST /v1/callbacks/{id}/attempts``, or the
router's ``callback.attempted``). Reached fulfils the promise, wrong number or the last unsuccessful try
closes it, any other result schedules the next try after the retry spacing; an attempt made after the
deadline breaches it first, and one for an ended promise is kept as late and changes nothing.

A person typing one in (the API) is held to the promise's rules (not on an ended promise, not inside
the retry spacing); the router's events are calls that were made and are always recorded.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import structlog
from sqlalchemy import select

from services.callback.errors import AttemptBeforeRequest, AttemptTooSoon, CommitmentClosed, CommitmentNotFound
from services.callback.lifecycle import CloseReason, Status, decide_attempt, evaluate
from services.callback.rows import OPEN, customer_of, end
from services.callback.store import Attempt, Commitment
from services.callback.unit_of_work import UnitOfWork
from services.callback.use_cases.breach import breach, breached_event
from shared.events import (
    AttemptResult,
    CallbackAttempted,
    CallbackFulfilled,
    Envelope,
    deterministic_id,
)

if TYPE_CHECKING:
    from services.callback.service import CallbackService

log = structlog.get_logger(__name__)


async def record_attempt(
    callbacks: CallbackService,
    callback_id: str,
    result: AttemptResult,
    *,
    agent_id: str | None = None,
    notes: str | None = None,
    at: datetime | None = None,
    attempt_key: str | None = None,
    source: str = "api",
) -> Commitment:
    """Record an attempt in a transaction of its own (the API)."""
    async with callbacks.transaction() as tx:
        c = await record_attempt_in(
            callbacks,
            tx,
            callback_id,
            result,
            agent_id=agent_id,
            notes=notes,
            at=(at or callbacks.now()).astimezone(UTC),
            attempt_key=attempt_key or str(uuid.uuid4()),
            source=source,
        )
    callbacks.committed()
    return c


async def on_callback_attempted(callbacks: CallbackService, tx: UnitOfWork, env: Envelope) -> None:
    """``callback.attempted`` from the router: the event id dedupes a redelivered attempt."""
    data = env.payload
    assert isinstance(data, CallbackAttempted)
    try:
        await record_attempt_in(
            callbacks,
            tx,
            data.callback_id,
            data.result,
            agent_id=data.agent_id,
            notes=data.notes,
            at=data.at,
            attempt_key=env.id,
            source="event",
        )
    except CommitmentNotFound:
        # Not ours to invent; logged and recorded as handled so it is not retried forever.
        log.warning("callback.attempt_for_unknown_commitment", callback_id=data.callback_id)


async def record_attempt_in(
    callbacks: CallbackService,
    tx: UnitOfWork,
    callback_id: str,
    result: AttemptResult,
    *,
    agent_id: str | None,
    notes: str | None,
    at: datetime,
    attempt_key: str,
    source: str,
) -> Commitment:
    s, policy = tx.session, callbacks.policy
    c = (await s.execute(select(Commitment).where(Commitment.id == callback_id).with_for_update())).scalar_one_or_none()
    if c is None:
        raise CommitmentNotFound(callback_id)
    dup = await s.execute(select(Attempt.seq).where(Attempt.commitment_id == c.id, Attempt.attempt_key == attempt_key))
    if dup.first() is not None:
        return c
    now = callbacks.now()
    at = min(at.astimezone(UTC), now)  # an attempt is never in the future
    requested_at = c.requested_at if c.requested_at.tzinfo else c.requested_at.replace(tzinfo=UTC)
    if at < requested_at:
        if source == "api":  # a person typed it: say so
            raise AttemptBeforeRequest(
                f"attempt at {at.isoformat()} is before the callback was requested ({requested_at.isoformat()})"
            )
        at = requested_at  # another service's clock, slightly behind ours: not worth a dead letter
    if source == "api":  # a person typed it: the rules of the promise apply (router events are calls made)
        if c.status not in OPEN:
            raise CommitmentClosed(c)
        not_before = c.not_before if c.not_before.tzinfo else c.not_before.replace(tzinfo=UTC)
        if c.attempts > 0 and c.status == Status.PENDING.value and at < not_before:
            raise AttemptTooSoon(c, at)
    windows = callbacks.windows(c)
    if c.status in OPEN and evaluate(c, windows, at, policy).breach:
        # The call was made after the deadline: the breach comes first, honestly. (A call made
        # before it but reported late still counts, unless a scheduler pass already breached it.)
        await breach(tx, c, now)
    late = c.status not in OPEN
    if not late:
        c.attempts += 1
    s.add(
        Attempt(
            commitment_id=c.id,
            attempt_key=attempt_key,
            number=0 if late else c.attempts,
            result=result.value,
            agent_id=agent_id,
            notes=notes,
            at=at,
            source=source,
            late=late,
        )
    )
    if source != "event":  # the router's own attempts are already on the bus
        await tx.emit(
            CallbackAttempted(
                tenant_id=c.tenant_id,
                callback_id=c.id,
                customer=customer_of(c),
                site=c.site,
                agent_id=agent_id,
                result=result,
                notes=notes,
                at=at,
            ),
            deterministic_id("callback.attempted", c.id, attempt_key),
        )
    if late:
        log.info("callback.late_attempt", callback_id=c.id, status=c.status, result=result.value)
        return c
    c.last_attempt_at = at
    c.last_result = result.value
    decision = decide_attempt(c, result, at, windows, policy)
    if decision.status == Status.FULFILLED:
        c.status = Status.FULFILLED.value
        c.fulfilled_at = at
        c.fulfilled_by_agent_id = agent_id
        end(c, now)
        await tx.emit(
            CallbackFulfilled(
                tenant_id=c.tenant_id,
                callback_id=c.id,
                customer=customer_of(c),
                site=c.site,
                agent_id=agent_id,
                at=at,
            ),
            deterministic_id("callback.fulfilled", c.id),
        )
    elif decision.status == Status.CLOSED:
        assert decision.close_reason is not None
        c.status = Status.CLOSED.value
        c.close_reason = decision.close_reason.value
        end(c, now)
        if decision.close_reason == CloseReason.ATTEMPTS_EXHAUSTED:
            log.warning("callback.exhausted", callback_id=c.id, attempts=c.attempts, site=c.site)
        await tx.emit(breached_event(c, now), deterministic_id("callback.breached", c.id))
    else:
        c.status = Status.PENDING.value
        assert decision.not_before is not None
        c.not_before = decision.not_before
        c.released_at = None
        c.released_to_agent_id = None
        c.accepted_by_agent_id = None
        c.accepted_at = None
        if evaluate(c, windows, now, policy).breach:
            # A call that ran past the deadline without reaching the customer: no time for another.
            await breach(tx, c, now)
            return c
    callbacks.refresh(c, now)
    return c
