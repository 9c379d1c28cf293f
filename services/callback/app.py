"""Callback service: same-day callback promises that are kept, or flagged before they break.

``uvicorn services.callback.app:create_app --factory``. The lifespan owns a :class:`ServiceRuntime`
(bus, database + migrations, outbox relay), the event consumer and the scheduler loop.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import structlog
from fastapi import FastAPI

from services.callback import metrics
from services.callback.api import router as api_router
from services.callback.clock import Clock, SystemClock
from services.callback.consumers import CallbackConsumer
from services.callback.lifecycle import Policy
from services.callback.migrations_path import MIGRATIONS
from services.callback.scheduler import Scheduler
from services.callback.service import CallbackService
from services.callback.settings import CallbackSettings
from shared import sqlite_inline
from shared.auth import Authenticator, AuthSettings, Principal, install_auth
from shared.bus import EventBus
from shared.http_limits import HttpServerSettings, install_input_limits
from shared.nul_guard import RejectNulBytes
from shared.observability import (
    BeforePath,
    configure_logging,
    install_operations,
    install_unavailable_handler,
    refresh_bus_gauges,
)
from shared.runtime import ServiceRuntime
from shared.settings import CommonSettings
from shared.topics import CALLBACKS, ROUTING

log = structlog.get_logger(__name__)


def create_app(
    common: CommonSettings | None = None,
    settings: CallbackSettings | None = None,
    *,
    clock: Clock | None = None,
    bus: EventBus | None = None,
    auth: AuthSettings | None = None,
) -> FastAPI:
    common = common or CommonSettings()
    settings = settings or CallbackSettings()
    configure_logging("callback", level=common.log_level, json=common.log_json)
    authenticator = Authenticator(auth or AuthSettings())  # no admin token: refuse to start
    calendars = settings.calendars(common)  # fail at start-up on a bad sites config, not at the first request
    policy = Policy.from_settings(settings)
    runtime = ServiceRuntime("callback", common, database_url=settings.database_url, migrations=MIGRATIONS, bus=bus)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await runtime.start()
        assert runtime.sessionmaker is not None and runtime.relay is not None
        service = CallbackService(
            runtime.sessionmaker,
            calendars,
            policy,
            clock or SystemClock(),
            source=runtime.source,
            notify=runtime.relay.notify,
            batch_size=settings.batch_size,
            release_without_presence=settings.release_without_presence,
            inline_writes=sqlite_inline.for_engine(runtime.engine)
            if settings.sqlite_inline_writes and runtime.engine is not None
            else None,
        )
        app.state.service = service
        app.state.runtime = runtime

        async def current_agent_token(principal: Principal, _token: str) -> bool:
            assert principal.token_id is not None
            return await service.agent_token_is_current(common.tenant_id, principal.subject, principal.token_id)

        authenticator.token_check = current_agent_token
        scheduler = Scheduler(service, interval=settings.poll_interval_seconds)
        app.state.scheduler = scheduler
        consumer = CallbackConsumer(service)
        await runtime.consume(
            [CALLBACKS, ROUTING], consumer, batch_handler=consumer.batch, gather=settings.consume_gather_seconds
        )
        if settings.scheduler_enabled:
            await scheduler.start()
        log.info("callback.ready", sites=sorted(calendars.sites), default_timezone=calendars.default.tz.key)
        try:
            yield
        finally:
            await scheduler.stop()
            await runtime.stop()
            service.close()

    app = FastAPI(
        title="Switchboard callback",
        description="Same-day callback commitments: deadlines, due releases, attempts, breaches.",
        version="1",
        lifespan=lifespan,
        docs_url="/docs" if common.docs_enabled else None,
        redoc_url="/redoc" if common.docs_enabled else None,
        openapi_url="/openapi.json" if common.docs_enabled else None,
    )
    app.add_middleware(RejectNulBytes)  # PostgreSQL text cannot hold NUL: 422, not 500
    install_auth(app, authenticator)
    install_input_limits(app, HttpServerSettings().max_body_bytes)  # 413, no 500s or echoes from bodies
    app.include_router(api_router)

    async def refresh_gauges() -> None:
        service = getattr(app.state, "service", None)
        if service is not None:
            try:
                metrics.refresh_promise_gauges((await service.summary_today()).sites)
            except Exception:  # a scrape must still answer with the counters when the database is away
                log.exception("callback.metrics_refresh_failed")
        await refresh_bus_gauges(runtime.bus)

    app.add_middleware(BeforePath, path="/metrics", action=refresh_gauges)
    install_operations(app, runtime.checks(consumers=True), timeout=common.readiness_timeout)
    install_unavailable_handler(app)
    return app
