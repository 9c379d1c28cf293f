"""What the router does when ringing the accepting agent failed (``contact.agent_dialed``).

Vendor-neutral: the event comes from intake's Twilio dial callback or from any PBX connector.

* ``busy`` / ``no_answer`` / ``failed``: the assignment is undone, the contact goes back to its original
  place in line (its virtual start time is unchanged), and the agent is counted a missed offer, as for an
  offer that timed out (enough of them in a row put the agent on break). The accepted offer becomes
  ``timed_out`` (no answer) or ``declined`` with reason ``dial_<result>``: the timeline keeps the accept.
* ``not_connected``: the same, without the miss: the telephone system, not the agent, failed.
* ``caller_gone``: the contact is abandoned.
* ``answered``: recorded on the timeline; the agent still completes the contact with an outcome.

A report about a contact no longer assigned to that agent (late, duplicated) is only noted.

``contact.customer_dialed`` (a callback's outbound call to the customer ended) is noted on the timeline;
when the agent completes the callback without an ``attempt_result``, that outcome is the attempt's result.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlalchemy import select, update

from services.router import metrics
from services.router.rows import agent_row, contact_row
from services.router.store import ContactState, OfferState, agents, contacts, offers, timeline
from services.router.stream_events import AssignmentWithdrawnEvent
from services.router.unit_of_work import UnitOfWork
from services.router.use_cases.agent_status import MISSED_OFFERS, set_status
from shared.events import AgentDialed, AgentStatus, AttemptResult, CustomerDialed, DialResult

if TYPE_CHECKING:
    from services.router.service import RouterService

MISSED = (DialResult.BUSY, DialResult.NO_ANSWER, DialResult.FAILED)
# What the accepted offer became when the agent could not be reached: recorded on the offer so a router
# restart skips that agent for the contact as the running one does (it rebuilds from declined/timed-out
# offers). no_answer is a miss like an expired offer; the others are refusals.
OFFER_STATE = {DialResult.NO_ANSWER: OfferState.TIMED_OUT}


async def on_agent_dialed(router: RouterService, tx: UnitOfWork, event: AgentDialed) -> None:
    row = await contact_row(tx.session, event.contact_id)
    if row is None:
        return
    detail: dict[str, Any] = {"result": event.result.value, "call_ref": event.call_ref, "detail": event.detail}
    if row.state != ContactState.ASSIGNED or row.agent_id != event.agent_id:
        await tx.note(event.contact_id, "dial_ignored", agent_id=event.agent_id, state=row.state, **detail)
        return
    if event.result is DialResult.ANSWERED:
        await tx.note(event.contact_id, "dial_answered", agent_id=event.agent_id, **detail)
        return
    agent_id = event.agent_id
    gone = event.result is DialResult.CALLER_GONE
    router.engine.release(event.contact_id, tx.now, requeue=not gone, missed=event.result in MISSED)
    if gone:
        values: dict[str, Any] = dict(state=ContactState.ABANDONED, agent_id=None, ended_at=tx.now)
    else:
        values = dict(state=ContactState.WAITING, agent_id=None, answered_at=None)
    await tx.session.execute(update(contacts).where(contacts.c.contact_id == event.contact_id).values(**values))
    if not gone:
        await _close_accepted_offer(tx, event)
    await tx.note(event.contact_id, "dial_failed", agent_id=agent_id, **detail)
    if gone:
        await tx.note(
            event.contact_id, "abandoned", reason="caller_gone", waited_seconds=round(tx.now - row.virtual_start, 3)
        )
        metrics.CONTACTS_ABANDONED.labels(row.channel).inc()
    else:
        await tx.note(event.contact_id, "requeued", previous_agent_id=agent_id, reason=f"dial_{event.result.value}")
    tx.push(
        agent_id,
        "assignment_withdrawn",
        AssignmentWithdrawnEvent(contact_id=event.contact_id, reason=f"dial_{event.result.value}", requeued=not gone),
    )
    if event.result in MISSED:
        agent = await agent_row(tx.session, agent_id)
        missed = agent.missed_offers + 1
        await tx.session.execute(update(agents).where(agents.c.agent_id == agent_id).values(missed_offers=missed))
        if missed >= router.strategy.max_missed_offers and agent.status == AgentStatus.AVAILABLE:
            await set_status(router, tx, agent, AgentStatus.BREAK, MISSED_OFFERS)


async def _close_accepted_offer(tx: UnitOfWork, event: AgentDialed) -> None:
    offer_id = (
        await tx.session.execute(
            select(offers.c.offer_id)
            .where(
                offers.c.contact_id == event.contact_id,
                offers.c.agent_id == event.agent_id,
                offers.c.state == OfferState.ACCEPTED,
            )
            .order_by(offers.c.made_at.desc())
            .limit(1)
        )
    ).scalar_one_or_none()
    if offer_id is not None:
        state = OFFER_STATE.get(event.result, OfferState.DECLINED)
        await tx.session.execute(
            update(offers)
            .where(offers.c.offer_id == offer_id)
            .values(state=state, resolved_at=tx.now, reason=f"dial_{event.result.value}")
        )


async def on_customer_dialed(router: RouterService, tx: UnitOfWork, event: CustomerDialed) -> None:
    row = await contact_row(tx.session, event.contact_id)
    if row is None:
        return
    kind = "customer_dialed"
    if row.state != ContactState.ASSIGNED or row.agent_id != event.agent_id or row.callback_id is None:
        kind = "customer_dial_ignored"
    await tx.note(
        event.contact_id,
        kind,
        agent_id=event.agent_id,
        result=event.result.value,
        call_ref=event.call_ref,
        detail=event.detail,
    )


async def dialled_attempt(tx: UnitOfWork, row: Any) -> AttemptResult | None:
    """The result of the outbound call placed for this assignment, if one was reported."""
    await tx.flush()  # the timeline is written at the end of a group: one reported in this group counts too
    detail = (
        await tx.session.execute(
            select(timeline.c.detail)
            .where(
                timeline.c.contact_id == row.contact_id,
                timeline.c.kind == "customer_dialed",
                timeline.c.agent_id == row.agent_id,
                timeline.c.at >= (row.answered_at or 0.0),
            )
            .order_by(timeline.c.seq.desc())
            .limit(1)
        )
    ).scalar_one_or_none()
    return AttemptResult(detail["result"]) if detail else None
