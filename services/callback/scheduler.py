"""The scheduler loop: polls the database and runs :meth:`CallbackService.tick` (``use_cases/tick.py``).

It keeps no state of its own, so several replicas can run it (rows are claimed with
``FOR UPDATE SKIP LOCKED`` on PostgreSQL) and a restarted process simply carries on.
It wakes early when something happened that may allow a release (an agent became free...).
"""

from __future__ import annotations

import asyncio
import contextlib

import structlog

from services.callback.service import CallbackService

log = structlog.get_logger(__name__)


class Scheduler:
    def __init__(self, service: CallbackService, *, interval: float = 1.0) -> None:
        self.service = service
        self.interval = interval
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self.ticks = 0
        service.on_wake(self.wake)

    def wake(self) -> None:
        self._wake.set()

    async def start(self) -> None:
        self._stopping = False
        self._task = asyncio.create_task(self._run(), name="callback-scheduler")

    async def stop(self) -> None:
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while not self._stopping:
            self._wake.clear()
            try:
                await self.service.tick()
                self.ticks += 1
            except Exception:
                log.exception("callback.scheduler_tick_failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self.interval)
