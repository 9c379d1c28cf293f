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

from services.intake import metrics, phones
from services.intake.api import callbacks, contacts, dial, twilio, twilio_dial
from services.intake.api.direct import IntakeAPI
from services.intake.context import IntakeContext
from services.intake.edge import InvalidInput
from services.intake.readiness import RecentOutcomes, persist_checks
from services.intake.schemas import AbandonIn, CallbackRequestIn, ContactIn
from services.intake.service import IntakeError, IntakeService
from services.intake.settings import IntakeSettings
from services.intake.store import IdempotencyStore, open_store
from shared.auth import Authenticator, AuthSettings, install_auth
from shared.bus.base import EventBus
from shared.business_hours import BusinessCalendars
from shared.events import utcnow
from shared.nul_guard import RejectNulBytes
from shared.observability import Check, configure_logging, install_operations
from shared.runtime import ServiceRuntime
from shared.settings import CommonSettings, PromiseSettings

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


SIGNATURE_SCHEMES = {
    "switchboardSignature": {
        "type": "apiKey",
        "in": "header",
        "name": "X-Switchboard-Signature",
        "description": "v1=HMAC-SHA256(source secret, X-Switchboard-Timestamp + '.' + body); see the intake README",
    },
    "twilioSignature": {
        "type": "apiKey",
        "in": "header",
        "name": "X-Twilio-Signature",
        "description": "Twilio's request signature (account auth token or SharedKey)",
    },
}


def declare_signature_schemes(schema: dict[str, Any]) -> None:
    """Webhooks authenticate by signature, not bearer token: say so in the OpenAPI document."""
    schema.setdefault("components", {}).setdefault("securitySchemes", {}).update(SIGNATURE_SCHEMES)
    for path, operations in schema.get("paths", {}).items():
        for operation in operations.values():
            if path.startswith("/v1/webhooks/twilio"):
                operation["security"] = [{"twilioSignature": []}]
            elif path == "/v1/callback-requests":  # browsers cannot sign: signed only for sources with a secret
                operation["security"] = [{}, {"switchboardSignature": []}]
            elif path.startswith("/v1/contacts"):
                operation["security"] = [{"switchboardSignature": []}]


def _openapi(app: FastAPI) -> Callable[[], dict[str, Any]]:
    """FastAPI's schema plus the request bodies we read by hand (signatures need the raw bytes)."""

    def build() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
            _, defs = models_json_schema(
                [
                    (m, "validation")
                    for m in (ContactIn, AbandonIn, CallbackRequestIn, dial.DialResultIn, twilio.TwilioCall)
                ],
                ref_template="#/components/schemas/{model}",
            )
            schema.setdefault("components", {}).setdefault("schemas", {}).update(defs.get("$defs", {}))
            declare_signature_schemes(schema)
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


def log_signature_policy(settings: IntakeSettings) -> None:
    """Say at start-up, loudly when it is unsafe, whether unsigned webhooks are accepted."""
    required = settings.signatures_required()
    no_secrets = not settings.source_secrets and settings.twilio_auth_token is None and not settings.twilio_shared_keys
    if required and no_secrets:
        log.warning(
            "intake.signatures_required_but_no_secrets",
            listen_host=settings.listen_host,
            hint="every webhook will be refused (401): set SWITCHBOARD_INTAKE_SOURCE_SECRETS / _TWILIO_AUTH_TOKEN",
        )
    elif not required and settings.listens_on_loopback_only():
        log.info("intake.unsigned_webhooks_accepted_on_loopback", listen_host=settings.listen_host)
    elif not required:
        log.critical(
            "intake.SIGNATURES_DISABLED_ON_A_PUBLIC_INTERFACE",
            listen_host=settings.listen_host,
            hint="SWITCHBOARD_INTAKE_REQUIRE_SIGNATURES=false: anyone who reaches intake can submit and abandon "
            "contacts; remove it and configure source secrets",
        )


def create_app(
    settings: IntakeSettings | None = None,
    common: CommonSettings | None = None,
    *,
    bus: EventBus | None = None,
    clock: Callable[[], datetime] = utcnow,
    calendars: BusinessCalendars | None = None,
    promise: PromiseSettings | None = None,
    auth: AuthSettings | None = None,
) -> FastAPI:
    """Build the intake app. Tests inject settings, a bus and a clock; production reads the env."""
    settings = settings or IntakeSettings()
    common = common or CommonSettings()
    configure_logging("intake", level=common.log_level, json=common.log_json)
    authenticator = Authenticator(auth or AuthSettings())  # no admin token: refuse to start
    log_signature_policy(settings)
    runtime = ServiceRuntime("intake", common, database_url=settings.database_url, migrations=MIGRATIONS, bus=bus)
    checks: dict[str, Check] = {}
    cal = calendars or settings.calendars(common)
    promise_policy = (promise or PromiseSettings()).policy()  # the same source the callback service reads

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
            promise_policy=promise_policy,
            rate_limits=settings.rate_limits(),
        )
        if settings.gc_freeze:
            # Everything loaded so far (phone metadata, calendars, schemas) lives as long as the process:
            # keep it out of the collector's full passes, which otherwise rescan it under load.
            gc.collect()
            gc.freeze()
        if settings.fast_path:  # off by default: see docs/decisions/0001-intake-fast-path.md
            app.enable_direct_dispatch()
        phones.use_fast_path(settings.fast_path)  # process-wide, as phone parsing is
        log.info(
            "intake.fast_path",
            enabled=settings.fast_path,
            direct_dispatch=bool(app.direct_paths),
            private_phone_parsing=phones.fast_path_in_use(),
        )
        pruner = asyncio.create_task(prune_forever(store, settings, clock), name="intake-prune")
        try:
            yield
        finally:
            pruner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pruner
            app.disable_direct_dispatch()
            if settings.fast_path:
                phones.use_fast_path(False)  # back to the default (public API) for whatever runs next
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
    install_auth(app, authenticator)
    app.add_middleware(RejectNulBytes)  # PostgreSQL text cannot hold NUL: 422 here, not a DLQ downstream
    install_error_handlers(app)
    app.include_direct_router(contacts.router)
    app.include_direct_router(dial.router)
    app.include_direct_router(twilio.router)
    app.include_direct_router(twilio_dial.router)
    app.include_direct_router(callbacks.router)
    install_operations(app, checks)
    app.add_middleware(metrics.CountEdgeRejections)  # added last: outermost, sees every refusal
    app.openapi = _openapi(app)  # type: ignore[method-assign]
    return app
