"""The callback service's event consumer: the bus's handlers, over ``use_cases/inbound_events.py``.

Consumes ``callbacks`` (``callback.requested`` from router policy, intake web form and agent promises;
``callback.attempted`` from the router) and ``routing`` (``agent.status_changed`` for free agents,
``offer.accepted/declined/timed_out`` and ``assignment.completed`` for callbacks being handled;
``agent.token_issued`` to refuse agent tokens the router has replaced). Which use case each event type
runs is the table ``EVENT_HANDLERS`` there. Everything else, including the service's own events, is
ignored without touching the database.
"""

from __future__ import annotations

from collections.abc import Sequence

from services.callback.service import CallbackService
from services.callback.use_cases import inbound_events
from shared.bus.base import Record
from shared.events import Envelope

CONSUMER = "callback"


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
        return await inbound_events.handle_events(self.service, envs, self.consumer)
