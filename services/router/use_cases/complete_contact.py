"""An agent completes a contact with an outcome: checked against the leeway of the role it was offered
under and the goodwill budgets, then ``assignment.completed`` (and ``callback.attempted`` or
``callback.requested``), today's counters, and wrap-up once the agent's last contact ends.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from services.router import goodwill, metrics
from services.router.auth import Principal
from services.router.errors import Conflict, Forbidden, Invalid, NotFound
from services.router.leeway import leeway_for, role_of
from services.router.rows import complete_contact, contact_to_complete, to_datetime, waiting_contact
from services.router.store import ContactState
from services.router.stream_events import AssignmentCompletedEvent
from services.router.unit_of_work import UnitOfWork
from services.router.use_cases.dialing_outcomes import dialled_attempt
from services.router.use_cases.settle_work import assigned_count, start_wrap_up
from shared.events import (
    AssignmentCompleted,
    AttemptResult,
    CallbackAttempted,
    CallbackOrigin,
    CallbackRequested,
    Channel,
    Customer,
    Intent,
    Outcome,
    Role,
    deterministic_id,
)

if TYPE_CHECKING:
    from services.router.service import RouterService

SALE_ON_SHORT_QUESTION = "sale_on_short_question"  # timeline kind: a strategy deviation, recorded


async def complete(
    router: RouterService,
    contact_id: str,
    who: Principal,
    outcome: Outcome,
    attempt_result: AttemptResult | None,
) -> dict[str, Any]:
    async def complete(tx: UnitOfWork) -> Any:
        row = await contact_to_complete(tx.session, contact_id)
        if row is None:
            raise NotFound(f"contact {contact_id!r} not found")
        if row.agent_id is None or not who.may_act_for(row.agent_id):
            raise Forbidden("this contact is not assigned to you")
        await router.domains.require(row.site)
        if row.state != ContactState.ASSIGNED:
            raise Conflict(f"contact is {row.state}, not assigned; nothing to complete")
        attempt = attempt_result
        if row.callback_id is not None and attempt is None:
            attempt = await dialled_attempt(tx, row)  # the placed call's outcome, if known
        if row.callback_id is not None and attempt is None:
            raise Invalid("attempt_result is required to complete a callback")
        if row.callback_id is None and attempt is not None:
            raise Invalid("attempt_result applies only to callback assignments")
        plan = router.strategy.plan(waiting_contact(row))
        leeway = leeway_for(router.strategy, plan, role_of(row.accepted_explanation))
        budget = leeway.goodwill_budget
        if outcome.goodwill_amount > budget + 1e-9:
            raise Invalid(
                f"goodwill_amount {outcome.goodwill_amount} exceeds this contact's budget {budget} "
                f"(the {leeway.role.value} leeway)"
            )
        # The period budget holds across agents and routers: checked against the ledger as it stands in
        # this group's order (an earlier completion in the same transaction already counted), read back
        # from every router's grants first when several share the domains, so two grants that together
        # exceed it cannot both pass.
        if outcome.goodwill_amount > 0:
            await goodwill.before_grant(router, tx)
        left = router.goodwill.remaining(tx.now)
        if left is not None and outcome.goodwill_amount > left + 1e-9:
            raise Invalid(
                f"goodwill_amount {outcome.goodwill_amount} exceeds what remains of the goodwill period "
                f"budget: {round(left, 2)} of {router.strategy.goodwill.period_budget} left"
            )
        role_budget = router.strategy.goodwill.role_budgets.get(leeway.role)
        role_left = router.goodwill.remaining(tx.now, leeway.role)
        if role_budget is not None and role_left is not None and outcome.goodwill_amount > role_left + 1e-9:
            raise Invalid(
                f"goodwill_amount {outcome.goodwill_amount} exceeds what remains of the "
                f"{leeway.role.value} goodwill period budget: {round(role_left, 2)} of {role_budget} left"
            )
        pushed_sale = outcome.sold and plan.short_question
        if pushed_sale and router.strategy.short_question.sale_recorded == "refuse":
            raise Invalid(
                "a sale on a short question goes against the strategy (short_question.sale_recorded: "
                "refuse); complete it without 'sold'"
            )
        written = await _finish(router, tx, row, outcome, attempt, leeway.role)
        if pushed_sale:
            await tx.note(
                contact_id,
                SALE_ON_SHORT_QUESTION,
                agent_id=row.agent_id,
                role=leeway.role.value,
                deviation="the strategy sends short questions without a sales push",
            )
            await tx.bump("sales_on_short_questions", 1)
            metrics.SALES_ON_SHORT_QUESTIONS.labels(leeway.role.value, row.channel).inc()
        return tx.now, written  # the answer is what _finish wrote, not read back

    ended_at, outcome_doc = await router.writes.run(complete)
    router.wake()
    return {
        "contact_id": contact_id,
        "state": ContactState.COMPLETED,
        "outcome": outcome_doc,
        "ended_at": to_datetime(ended_at).isoformat(),
    }


async def _finish(
    router: RouterService,
    tx: UnitOfWork,
    row: Any,
    outcome: Outcome,
    attempt: AttemptResult | None,
    role: Role | None = None,
) -> dict[str, Any]:
    """Close the contact; returns the outcome as written (with the call's result for a callback)."""
    agent_id = row.agent_id
    outcome_doc = outcome.model_dump(mode="json")
    if attempt is not None:
        outcome_doc["attempt_result"] = attempt.value
    await complete_contact(tx.session, row.contact_id, tx.now, outcome_doc)
    router.engine.finish(row.contact_id, tx.now)
    router.handling.forget(row.contact_id)
    handled = tx.now - row.answered_at if row.answered_at else None
    customer = Customer.model_validate(row.customer)
    await tx.emit(
        AssignmentCompleted(
            tenant_id=row.tenant_id,
            contact_id=row.contact_id,
            agent_id=agent_id,
            site=row.site,
            customer=customer,
            callback_id=row.callback_id,
            outcome=outcome,
            handled_seconds=handled,
            at=to_datetime(tx.now),
        )
    )
    if row.callback_id is not None and attempt is not None:
        await tx.emit(
            CallbackAttempted(
                tenant_id=row.tenant_id,
                callback_id=row.callback_id,
                customer=customer,
                site=row.site,
                agent_id=agent_id,
                result=attempt,
                notes=outcome.notes,
                at=to_datetime(tx.now),
            ),
            # One id per attempt (the work item is re-queued with a fresh received_at for each
            # callback.due after an attempt), so attempt 2, 3... are not dropped as duplicates of the
            # first, while a redelivery of this same completion still dedupes.
            event_id=deterministic_id(
                "callback-attempted", row.contact_id, str(row.callback_attempt), repr(float(row.received_at))
            ),
        )
    if outcome.callback_promised:
        await tx.emit(
            CallbackRequested(
                tenant_id=row.tenant_id,
                request_id=deterministic_id("callback-promise", row.tenant_id, row.contact_id),
                customer=customer,
                site=row.site,
                origin=CallbackOrigin.AGENT_PROMISE,
                contact_id=row.contact_id,
                intent=Intent(row.intent) if row.intent else None,
                channel=Channel.VOICE,
                preferred_window=outcome.callback_window,
                promised_by_agent_id=agent_id,
                reason="agent_promise",
                requested_at=to_datetime(tx.now),
            )
        )
    await goodwill.grant(router, tx, row.contact_id, outcome.goodwill_amount, role)
    router.engine.sales.record_completion(outcome.sold, tx.now, row.site)
    await tx.bump("completed", 1)
    if outcome.sold:
        await tx.bump("sold", 1)
    if outcome.goodwill_amount:
        await tx.bump("goodwill_spent", outcome.goodwill_amount)
    await tx.note(
        row.contact_id,
        "completed",
        agent_id=agent_id,
        handled_seconds=round(handled, 3) if handled is not None else None,
        outcome=outcome_doc,
    )
    metrics.COMPLETIONS.labels(row.channel, "sold" if outcome.sold else "not_sold").inc()
    if handled is not None:
        metrics.HANDLING_TIME.labels(row.channel).observe(max(0.0, handled))
    tx.push(agent_id, "assignment_completed", AssignmentCompletedEvent(contact_id=row.contact_id, outcome=outcome_doc))
    # Wrap-up starts when the agent's last contact ends. Only assignments keep an agent on a contact: an
    # open offer alongside may still time out (settle_work.py then makes the agent idle).
    if assigned_count(router, agent_id) == 0:
        wrap = router.strategy.wrap_up_seconds(Channel(row.channel))
        if wrap > 0:
            await start_wrap_up(router, tx, agent_id, wrap)
    return outcome_doc
