"""Consumed events: which use case each event type runs (``EVENT_HANDLERS``), and how a batch of them is
applied: in one unit of work, each event checked against the inbox (dedupe on the CloudEvents id).

``callbacks`` brings the requests and the router's attempts; ``routing`` the agents' statuses and
tokens, and the offers and ends of callback calls. Every other event on those topics, and the service's
own events, are skipped without touching the database.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING

from services.callback.unit_of_work import UnitOfWork
from services.callback.use_cases.agent_presence import on_agent_status_changed, on_agent_work_changed
from services.callback.use_cases.agent_tokens import on_agent_token_issued
from services.callback.use_cases.assignment_completed import on_assignment_completed
from services.callback.use_cases.offer_accepted import on_offer_accepted
from services.callback.use_cases.offer_refused import on_offer_refused
from services.callback.use_cases.record_attempt import on_callback_attempted
from services.callback.use_cases.request_callback import on_callback_requested
from shared.events import (
    AgentStatusChanged,
    AgentTokenIssued,
    AgentWorkChanged,
    AssignmentCompleted,
    CallbackAttempted,
    CallbackRequested,
    Envelope,
    OfferAccepted,
    OfferDeclined,
    OfferTimedOut,
)
from shared.inbox import first_times

if TYPE_CHECKING:
    from services.callback.service import CallbackService

Handler = Callable[["CallbackService", UnitOfWork, Envelope], Awaitable[None]]

# Which use case each consumed event type runs.
EVENT_HANDLERS: dict[type, Handler] = {
    CallbackRequested: on_callback_requested,  # create or merge a commitment
    CallbackAttempted: on_callback_attempted,  # the router made a call
    AgentStatusChanged: on_agent_status_changed,  # who is free (release capacity): their own status
    AgentWorkChanged: on_agent_work_changed,  # ... and the router's view of their work
    AgentTokenIssued: on_agent_token_issued,  # older tokens of the agent are refused
    OfferAccepted: on_offer_accepted,  # released -> in progress
    OfferDeclined: on_offer_refused,  # the promising agent did not take it: to the pool
    OfferTimedOut: on_offer_refused,
    AssignmentCompleted: on_assignment_completed,  # a callback call ended without an attempt: retry
}


def is_ours(callbacks: CallbackService, env: Envelope) -> bool:
    """An event type in the table, from another service (the topics carry more, and our own events)."""
    data = env.payload
    if type(data) not in EVENT_HANDLERS or env.source == callbacks.source:
        return False
    if isinstance(data, AssignmentCompleted):
        return data.callback_id is not None  # not a callback otherwise
    if isinstance(data, OfferAccepted):
        return data.is_callback is not False  # None: a router from before the flag (the lookup decides)
    return True


async def handle_events(callbacks: CallbackService, envs: Sequence[Envelope], consumer: str) -> int:
    """Apply events in order in one transaction; returns how many were applied (not skipped). The batch
    is acknowledged only after this returns, so a crash in the middle replays all of it, deduped."""
    mine = [env for env in envs if is_ours(callbacks, env)]
    if not mine:
        return 0
    applied = 0
    async with callbacks.transaction() as tx:
        # The whole batch against the inbox in one statement (one per event was a fifth of the service's
        # CPU under load); an id handled before, or repeated in the batch, is applied at most once.
        fresh = await first_times(tx.session, consumer, [env.id for env in mine])
        for env in mine:
            if env.id in fresh:
                fresh.discard(env.id)
                await EVENT_HANDLERS[type(env.payload)](callbacks, tx, env)
                applied += 1
    if applied:
        callbacks.committed()
    return applied
