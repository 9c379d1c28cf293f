"""What every service's lifespan owns: the bus, the database, the outbox relay, and their shutdown.

A service builds one :class:`ServiceRuntime` in its FastAPI lifespan, starts it, registers consumers,
and stops it on shutdown (stop consuming first, then flush the outbox, then close the bus and the pool).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import structlog
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from shared import db, inbox
from shared.bus import BatchHandler, EventBus, Handler, Subscription, create_bus
from shared.events import utcnow
from shared.observability import Check
from shared.outbox import OutboxRelay
from shared.settings import CommonSettings

if TYPE_CHECKING:
    from shared.bus.base import PartitionsChanged

log = structlog.get_logger(__name__)


class ServiceRuntime:
    def __init__(
        self,
        name: str,
        common: CommonSettings,
        *,
        database_url: str | None = None,
        migrations: Path | None = None,
        bus: EventBus | None = None,
    ) -> None:
        self.name = name
        self.common = common
        self.source = f"switchboard/{name}"
        self.bus = bus or create_bus(common)
        self.database_url = common.database_url_for(name, database_url) if migrations else None
        self.migrations = migrations
        self.engine: AsyncEngine | None = None
        self.sessionmaker: async_sessionmaker[AsyncSession] | None = None
        self.relay: OutboxRelay | None = None
        self.subscriptions: list[Subscription] = []
        self._housekeeping: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.common.data_dir.mkdir(parents=True, exist_ok=True)
        if self.migrations is not None and self.database_url is not None:
            if self.common.migrate_on_start:
                await db.migrate(self.migrations, self.database_url)
            else:  # a one-off `switchboard migrate` (Job, compose one-shot) owns the schema
                await db.wait_until_migrated(
                    self.migrations, self.database_url, timeout=self.common.migration_wait_seconds
                )
            self.engine = db.make_engine(self.database_url, sqlite_busy_timeout=self.common.sqlite_busy_timeout)
            self.sessionmaker = db.make_sessionmaker(self.engine)
        await self.bus.start()
        if self.sessionmaker is not None:
            self.relay = OutboxRelay(self.sessionmaker, self.bus, gather=self.common.outbox_gather_seconds)
            await self.relay.start()
            self._housekeeping = asyncio.create_task(self._prune_inbox_forever(), name=f"{self.name}-inbox-prune")
        log.info("service.started", service=self.name, bus=self.common.bus, database=self.database_url)

    async def consume(
        self,
        topics: Sequence[str],
        handler: Handler,
        *,
        group: str | None = None,
        batch_handler: BatchHandler | None = None,
        on_assigned: PartitionsChanged | None = None,
        on_revoked: PartitionsChanged | None = None,
        gather: float = 0.0,
    ) -> Subscription:
        sub = await self.bus.subscribe(
            list(topics),
            group or self.name,
            handler,
            batch_handler=batch_handler,
            on_assigned=on_assigned,
            on_revoked=on_revoked,
            gather=gather,
        )
        self.subscriptions.append(sub)
        return sub

    async def prune_inbox(self) -> int:
        """Drop inbox rows older than the dedupe window; returns how many went."""
        if self.sessionmaker is None:
            return 0
        async with self.sessionmaker() as session, session.begin():
            return await inbox.purge(session, utcnow() - timedelta(days=self.common.inbox_retention_days))

    async def _prune_inbox_forever(self) -> None:
        while True:
            try:
                removed = await self.prune_inbox()
                if removed:
                    log.info("inbox.pruned", service=self.name, removed=removed)
            except Exception:
                log.exception("inbox.prune_failed", service=self.name)
            await asyncio.sleep(3600)

    async def stop(self) -> None:
        if self._housekeeping is not None:
            self._housekeeping.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._housekeeping
            self._housekeeping = None
        for sub in self.subscriptions:
            await sub.stop()
        self.subscriptions.clear()
        if self.relay is not None:
            await self.relay.stop()
        await self.bus.stop()
        if self.engine is not None:
            await self.engine.dispose()
        log.info("service.stopped", service=self.name)

    async def database_ready(self) -> bool:
        """False until the lifespan created the engine, then whether the database answers in time."""
        if self.engine is None:
            return False
        try:
            async with asyncio.timeout(self.common.readiness_timeout):
                return await db.ping(self.engine, lock_wait=self.common.readiness_timeout / 2)
        except TimeoutError:
            return False

    async def consumers_ready(self) -> bool:
        """Every subscription consumes: partitions held (Kafka: assigned; embedded: leased), not stalled
        on an unavailable dependency. False before the lifespan subscribed."""
        return bool(self.subscriptions) and all(sub.consuming() for sub in self.subscriptions)

    def checks(self, *, consumers: bool = False) -> dict[str, Check]:
        """Readiness checks, evaluated at request time (safe to build before ``start()``).

        ``consumers``: the service is not ready unless its event consumers run (router, callback).
        """
        checks: dict[str, Check] = {"bus": self.bus.ping}
        if self.migrations is not None:
            checks["database"] = self.database_ready
        if consumers:
            checks["consuming"] = self.consumers_ready
        return checks
