"""Presence every router can see: with several active routers, an agent's stream is open on the router
that owns the agent's domain, and only that router knows it. Lists and the dashboard are answered by any
router, so the owner records each stream opening and closing in the agent's row (``stream_open``,
``stream_changed_at``), and a router answering about an agent it does not route reads it from there.

Written off the request path: a stream's setup and teardown are synchronous and must not wait for the
database, so changes are noted here and written by one task, the newest per agent, in one statement. A
write never goes back in time (``stream_changed_at`` only grows), so a late write of an older change
cannot undo a newer one made by another router. A failed write is retried; presence is informational
(routing decides on the owner's own memory), so nothing waits for it. Off with one router owning the
whole database: it knows every stream itself.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass

import structlog
from sqlalchemy import bindparam, or_, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.router.store import agents

log = structlog.get_logger(__name__)

RETRY_SECONDS = 1.0

RECORD = (
    update(agents)
    .where(
        agents.c.agent_id == bindparam("agent"),
        or_(agents.c.stream_changed_at.is_(None), agents.c.stream_changed_at <= bindparam("at")),
    )
    .values(stream_open=bindparam("open"), stream_changed_at=bindparam("at"))
)


@dataclass(frozen=True)
class StreamSeen:
    """What the owner last saw of an agent's stream, as read back by another router."""

    open: bool
    changed_at: float | None

    def present(self, now: float, grace: float) -> bool:
        """Open, or closed less than the grace period ago (the owner's rule, ``streams.Presence``)."""
        return self.open or (self.changed_at is not None and now - self.changed_at < grace)


class PresenceRecorder:
    """Notes stream changes and writes them to the agents' rows in the background."""

    def __init__(self, sessionmaker: async_sessionmaker[AsyncSession], *, enabled: bool) -> None:
        self._sessionmaker = sessionmaker
        self.enabled = enabled
        self._pending: dict[str, tuple[bool, float]] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def note(self, agent_id: str, open_: bool, at: float) -> None:
        if not self.enabled:
            return
        self._pending[agent_id] = (open_, at)
        self._wake.set()

    def start(self) -> None:
        if self.enabled and self._task is None:
            self._task = asyncio.create_task(self._run(), name="router-presence-recorder")

    async def stop(self) -> None:
        """Write what is noted (best effort), then stop."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._pending:
            with contextlib.suppress(Exception):
                await self.flush()

    async def flush(self) -> None:
        """Write every noted change now (the newest per agent, never older than what a row holds)."""
        batch, self._pending = self._pending, {}
        if not batch:
            return
        rows = [{"agent": agent_id, "open": open_, "at": at} for agent_id, (open_, at) in batch.items()]
        try:
            async with self._sessionmaker.begin() as session:
                await session.execute(RECORD, rows)
        except BaseException:
            for agent_id, change in batch.items():
                self._pending.setdefault(agent_id, change)  # unless a newer change was noted meanwhile
            raise

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                await self.flush()
            except Exception:
                log.warning("router.presence_record_failed", exc_info=True, pending=len(self._pending))
                await asyncio.sleep(RETRY_SECONDS)
                self._wake.set()
