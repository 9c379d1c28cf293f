"""The intake service: telephony webhooks and web forms in, contact and callback events out.

Run: ``uvicorn services.intake.app:create_app --factory``. A ``202`` (or TwiML answer) means the event
is durably on the bus; when the bus is down the answer is ``503`` with ``Retry-After``.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from pydantic.json_schema import models_json_schema

from services.intake import metrics
from services.intake.api import callbacks, contacts, twilio
from services.intake.api.direct import IntakeAPI
from services.intake.context import IntakeContext
from services.intake.edge import InvalidInput
from services.intake.readiness import RecentOutcomes, persist_checks
from services.intake.schemas import AbandonIn, CallbackRequestIn, ContactIn
from services.intake.service import IntakeError, IntakeService
from services.intake.settings import IntakeSettings
from services.intake.store import IdempotencyStore, open_store
from shared.bus.base import EventBus
from shared.business_hours import BusinessCalendars
from shared.events import utcnow
from shared.nul_guard import RejectNulBytes
from shared.observability import Check, configure_logging, install_operations
from shared.runtime import ServiceRuntime
from shared.settings import CommonSettings

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
log = structlog.get_logger(__name__)


def _endpoint(request: Request) -> str:
    return getattr(request.state, "endpoint", "other")


def install_error_handlers(app: FastAPI) -> None:
    """Every client mistake becomes a 4xx with a reason; nothing a client sends can produce a 500."""

    @app.exception_handler(IntakeError)
    async def _intake_error(request: Request, exc: IntakeError) -> JSONResponse:
        metrics.REJECTED.labels(_endpoint(request), exc.reason).inc()
        return JSONResponse(
            {"detail": exc.detail, "reason": exc.reason}, status_code=exc.status_code, headers=exc.headers
        )

    @app.exception_handler(InvalidInput)
    async def _invalid(request: Request, exc: InvalidInput) -> JSONResponse:
        metrics.REJECTED.labels(_endpoint(request), "invalid").inc()
        return JSONResponse({"detail": exc.errors}, status_code=422)

    @app.exception_handler(RequestValidationError)
    async def _request_validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        metrics.REJECTED.labels(_endpoint(request), "invalid").inc()
        errors = [
            {"loc": list(e.get("loc", ())), "msg": str(e.get("msg", "")), "type": str(e.get("type", ""))}
            for e in exc.errors()
        ]
        return JSONResponse({"detail": errors}, status_code=422)


def _openapi(app: FastAPI) -> Callable[[], dict[str, Any]]:
    """FastAPI's schema plus the request bodies we read by hand (signatures need the raw bytes)."""

    def build() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
            _, defs = models_json_schema(
                [(m, "validation") for m in (ContactIn, AbandonIn, CallbackRequestIn, twilio.TwilioCall)],
                ref_template="#/components/schemas/{model}",
            )
            schema.setdefault("components", {}).setdefault("schemas", {}).update(defs.get("$defs", {}))
            app.openapi_schema = schema
        return app.openapi_schema

    return build


async def prune_forever(store: IdempotencyStore, settings: IntakeSettings, clock: Callable[[], datetime]) -> None:
    """Purge expired idempotency rows now and then; a failure is logged and retried next time."""
    while True:
        try:
            removed = await store.purge(clock() - timedelta(hours=settings.idempotency_retention_hours))
            if removed:
                log.info("intake.idempotency_pruned", rows=removed)
        except Exception:
            log.exception("intake.prune_failed")
        await asyncio.sleep(settings.prune_interval_seconds)


def create_app(
    settings: IntakeSettings | None = None,
    common: CommonSettings | None = None,
    *,
    bus: EventBus | None = None,
    clock: Callable[[], datetime] = utcnow,
    calendars: BusinessCalendars | None = None,
) -> FastAPI:
    """Build the intake app. Tests inject settings, a bus and a clock; production reads the env."""
    settings = settings or IntakeSettings()
    common = common or CommonSettings()
    configure_logging("intake", level=common.log_level, json=common.log_json)
    runtime = ServiceRuntime("intake", common, database_url=settings.database_url, migrations=MIGRATIONS, bus=bus)
    checks: dict[str, Check] = {}
    cal = calendars or settings.calendars(common)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        assert isinstance(app, IntakeAPI)
        await runtime.start()
        assert runtime.database_url is not None
        store = open_store(runtime.database_url)
        outcomes = RecentOutcomes(settings.readiness_failure_window_seconds)
        bus_path = getattr(runtime.bus, "path", None)  # the embedded bus's log file
        checks.update(
            persist_checks(
                bus_writable=runtime.bus.writable,
                store_writable=store.writable,
                database=runtime.database_ready,
                directories=[d for d in (store.directory, Path(bus_path).parent if bus_path else None) if d],
                outcomes=outcomes,
                timeout=settings.readiness_timeout_seconds,
            )
        )
        service = IntakeService(
            runtime.bus,
            store,
            source=runtime.source,
            publish_timeout=settings.publish_timeout_seconds,
            retry_after=settings.retry_after_seconds,
            clock=clock,
            outcomes=outcomes,
        )
        app.state.intake = IntakeContext(
            settings=settings,
            service=service,
            calendars=cal,
            tenant_id=common.tenant_id,
            clock=clock,
            rate_limits=settings.rate_limits(),
        )
        if settings.gc_freeze:
            # Everything loaded so far (phone metadata, calendars, schemas) lives as long as the process:
            # keep it out of the collector's full passes, which otherwise rescan it under load.
            gc.collect()
            gc.freeze()
        if not settings.source_secrets and settings.twilio_auth_token is None:
            log.warning("intake.signatures_disabled", hint="set SWITCHBOARD_INTAKE_SOURCE_SECRETS / TWILIO_AUTH_TOKEN")
        if settings.direct_dispatch:
            app.enable_direct_dispatch()
        pruner = asyncio.create_task(prune_forever(store, settings, clock), name="intake-prune")
        try:
            yield
        finally:
            pruner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pruner
            app.disable_direct_dispatch()
            await runtime.stop()
            await store.close()

    app = IntakeAPI(
        title="Switchboard intake",
        version="1.0.0",
        description="Telephony webhooks and web forms in; `contact.requested`, `contact.abandoned` and "
        "`callback.requested` out. A 2xx means the event is durably on the bus.",
        lifespan=lifespan,
        docs_url="/docs" if common.docs_enabled else None,
        redoc_url="/redoc" if common.docs_enabled else None,
        openapi_url="/openapi.json" if common.docs_enabled else None,
    )
    app.state.runtime = runtime
    app.add_middleware(RejectNulBytes)  # PostgreSQL text cannot hold NUL: 422 here, not a DLQ downstream
    install_error_handlers(app)
    app.include_direct_router(contacts.router)
    app.include_direct_router(twilio.router)
    app.include_direct_router(callbacks.router)
    install_operations(app, checks)
    app.openapi = _openapi(app)  # type: ignore[method-assign]
    return app
