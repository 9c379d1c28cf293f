"""Event handlers of the callback service: inbox -> state change -> outbox, one transaction per batch.

Consumes ``callbacks`` (``callback.requested`` from router policy, intake web form and agent promises;
``callback.attempted`` from the router) and ``routing`` (``agent.status_changed`` for free agents,
``offer.accepted/declined/timed_out`` and ``assignment.completed`` for callbacks being handled;
``agent.token_issued`` to refuse agent tokens the router has replaced).
Everything else, including the service's own events, is ignored without touching the database.
"""

from __future__ import annotations

from collections.abc import Sequence

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from services.callback.service import CallbackService, CommitmentNotFound
from shared.bus.base import Record
from shared.events import (
    AgentStatusChanged,
    AgentTokenIssued,
    AssignmentCompleted,
    CallbackAttempted,
    CallbackRequested,
    Envelope,
    OfferAccepted,
    OfferDeclined,
    OfferTimedOut,
)
from shared.inbox import first_time

log = structlog.get_logger(__name__)

CONSUMER = "callback"
HANDLED = (
    AgentTokenIssued,
    CallbackRequested,
    CallbackAttempted,
    AgentStatusChanged,
    OfferAccepted,
    OfferDeclined,
    OfferTimedOut,
    AssignmentCompleted,
)


class CallbackConsumer:
    def __init__(self, service: CallbackService, *, consumer: str = CONSUMER) -> None:
        self.service = service
        self.consumer = consumer

    async def __call__(self, env: Envelope, record: Record | None = None) -> None:
        await self.handle(env)

    async def batch(self, batch: Sequence[tuple[Envelope, Record]]) -> None:
        """The bus's batch handler: the events of one fetch in one transaction (one commit, not one per
        status change of every agent); a failure rolls all back and the bus delivers them one by one."""
        await self.handle_many([env for env, _ in batch])

    async def handle(self, env: Envelope) -> bool:
        """Apply one event; False when it was skipped (not ours, our own, or already handled)."""
        return bool(await self.handle_many([env]))

    async def handle_many(self, envs: Sequence[Envelope]) -> int:
        """Apply events in order in one transaction; returns how many were applied (not skipped)."""
        mine = [env for env in envs if self._ours(env)]
        if not mine:
            return 0
        applied = 0
        async with self.service.sessionmaker() as s, s.begin():
            for env in mine:
                if await first_time(s, self.consumer, env.id):
                    await self._apply(s, env)
                    applied += 1
        if applied:
            self.service.committed()
        return applied

    def _ours(self, env: Envelope) -> bool:
        data = env.payload
        if not isinstance(data, HANDLED) or env.source == self.service.source:
            return False
        return not (isinstance(data, AssignmentCompleted) and data.callback_id is None)  # not a callback

    async def _apply(self, s: AsyncSession, env: Envelope) -> None:
        svc, data = self.service, env.payload
        if isinstance(data, CallbackRequested):
            await svc.request_in(s, data)
        elif isinstance(data, CallbackAttempted):
            try:
                await svc.attempt_in(
                    s,
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
        elif isinstance(data, AgentStatusChanged):
            await svc.agent_status_in(s, data)
        elif isinstance(data, AgentTokenIssued):
            await svc.agent_token_in(s, data)
        elif isinstance(data, OfferAccepted):
            await svc.offer_accepted_in(s, data)
        elif isinstance(data, OfferDeclined | OfferTimedOut):
            await svc.offer_refused_in(s, data)
        elif isinstance(data, AssignmentCompleted):
            await svc.assignment_completed_in(s, data)
