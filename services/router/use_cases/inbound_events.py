"""Consumed events: which use case each event type runs (``EVENT_HANDLERS``), and how a batch of them
is applied: in one unit of work, each event checked against the inbox (dedupe on the CloudEvents id).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

from services.router import domain_ownership, leadership, metrics
from services.router.errors import RouterError
from services.router.ownership import OwnershipLost
from services.router.unit_of_work import UnitOfWork
from services.router.use_cases.callbacks import (
    on_callback_attempted,
    on_callback_breached,
    on_callback_due,
    on_callback_fulfilled,
)
from services.router.use_cases.contact_abandoned import on_contact_abandoned
from services.router.use_cases.contact_requested import on_contact_requested
from services.router.use_cases.dialing_outcomes import on_agent_dialed, on_customer_dialed
from shared.events import (
    AgentDialed,
    CallbackAttempted,
    CallbackBreached,
    CallbackDue,
    CallbackFulfilled,
    ContactAbandoned,
    ContactRequested,
    CustomerDialed,
    Envelope,
)
from shared.inbox import first_times

if TYPE_CHECKING:
    from services.router.service import RouterService

Handler = Callable[["RouterService", UnitOfWork, Any], Awaitable[None]]

# Which use case each consumed event type runs. ``contacts`` brings the work; ``callbacks`` only the end
# of a callback (to drop a queued one); other event types on these topics are not the router's.
EVENT_HANDLERS: dict[type, Handler] = {
    ContactRequested: on_contact_requested,
    ContactAbandoned: on_contact_abandoned,
    CallbackDue: on_callback_due,
    CallbackAttempted: on_callback_attempted,
    CallbackFulfilled: on_callback_fulfilled,
    CallbackBreached: on_callback_breached,
    # How ringing the agent or the customer ended (dialing_outcomes.py).
    AgentDialed: on_agent_dialed,
    CustomerDialed: on_customer_dialed,
}


async def handle_events(
    router: RouterService, envelopes: Sequence[Envelope], partitions: set[int] | None = None
) -> None:
    """Consume a batch of events in one transaction (one inbox check each, in order): the batch is
    acknowledged only after this returns, so a crash in the middle replays all of it, deduped."""
    mine = [e for e in envelopes if type(e.payload) in EVENT_HANDLERS and e.source != router.source]
    if not mine:
        return  # not ours (the topics carry more), or our own callback.attempted, applied at completion

    async def apply(tx: UnitOfWork) -> None:
        # One inbox statement for the whole batch (not one per event), then each applied in order.
        fresh = await first_times(tx.session, router.consumer_name, [e.id for e in mine])
        for envelope in mine:
            if envelope.id not in fresh:
                metrics.EVENTS_DUPLICATE.inc()
                continue
            fresh.discard(envelope.id)  # the same event twice in one batch: the second is a repeat
            try:
                await EVENT_HANDLERS[type(envelope.payload)](router, tx, envelope.payload)
            except RouterError as exc:
                # Not a refusal of the whole batch: earlier events of it changed state already.
                raise RuntimeError(f"event {envelope.id} refused: {exc.detail}") from exc

    while True:
        try:
            if not router.domains.whole:
                await domain_ownership.hold(router, partitions or set())
            await router.writes.run(apply)
            break
        except OwnershipLost:
            if router.domains.whole:
                await leadership.regain(router)  # hold the events (not acknowledged) until this router owns again
    router.wake()
