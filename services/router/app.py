"""The router service: strategy-driven skills routing of contacts to agents, with offers and streams.

``uvicorn services.router.app:create_app --factory``. The lifespan starts the shared runtime (bus,
database + migrations, outbox relay) and answers probes at once; in the background it waits (as a standby)
until it owns the routing state, rebuilds it from the database, heals expired offers, then consumes
``contacts`` and runs the tick loop. Until then ``/readyz`` and ``/v1`` answer 503 (``standby.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import signal
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import structlog
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import SecretStr
from starlette.types import Scope

from services.router import callback_closures, domain_ownership, metrics, request_owner
from services.router.api import agents, console, contacts, dashboard, offers, ops, promises, tokens
from services.router.errors import RouterError
from services.router.forwarding import DomainForwarding, default_client
from services.router.ownership import WHOLE, OwnershipLost
from services.router.queue_across_routers import QueueAcrossRouters
from services.router.service import RouterService
from services.router.settings import RouterSettings
from services.router.standby import StandbyGuard, serving
from services.router.strategy import load_strategy
from services.router.unit_of_work import Clock
from shared import topics
from shared.auth import Authenticator, AuthSettings, MissingAdminToken, Principal, install_auth
from shared.bus import EventBus, Record
from shared.events import Envelope
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

MIGRATIONS = Path(__file__).with_name("migrations")
log = structlog.get_logger(__name__)


def create_app(
    settings: RouterSettings | None = None,
    common: CommonSettings | None = None,
    *,
    bus: EventBus | None = None,
    clock: Clock | None = None,
    auth: AuthSettings | None = None,
) -> FastAPI:
    settings = settings or RouterSettings()
    common = common or CommonSettings()
    configure_logging("router", level=common.log_level, json=common.log_json)
    strategy = load_strategy(settings.strategy_path)  # an invalid strategy stops the start, loudly
    if auth is None:
        auth = AuthSettings()
        if settings.admin_token:  # the router's own (older) name for the operator token
            given = auth.admin_token.get_secret_value() if auth.admin_token is not None else None
            if given is not None and given != settings.admin_token:
                raise MissingAdminToken("SWITCHBOARD_ADMIN_TOKEN and SWITCHBOARD_ROUTER_ADMIN_TOKEN differ: set one")
            auth = auth.model_copy(update={"admin_token": SecretStr(settings.admin_token)})
    authenticator = Authenticator(auth)  # no admin token: refuse to start (MissingAdminToken)
    if settings.ownership != WHOLE and not settings.advertise_url:
        raise ValueError(
            "SWITCHBOARD_ROUTER_OWNERSHIP=partitions needs SWITCHBOARD_ROUTER_ADVERTISE_URL: the URL at which "
            "the other routers forward requests for this router's domains"
        )
    runtime = ServiceRuntime("router", common, database_url=settings.database_url, migrations=MIGRATIONS, bus=bus)

    async def _own_and_serve(service: RouterService) -> None:
        """Wait as a standby until this router owns the routing state, rebuild it, then consume."""
        try:
            await service.start()  # own, rebuild from the database, time out expired offers first
            # The rebuilt engine (agents, heaps of waiting contacts) lives as long as the process: keep it
            # out of the collector's full passes, which would otherwise rescan it under load; and make
            # those passes rare (settings.gc_thresholds: they were the 99th percentile's pauses at 300/s).
            gc.collect()
            gc.freeze()
            gc.set_threshold(*service.settings.gc_thresholds)

            async def on_contact_event(envelope: Envelope, _record: Record) -> None:
                await service.handle_event(envelope)

            async def on_contact_events(batch: Sequence[tuple[Envelope, Record]]) -> None:
                await service.handle_events([envelope for envelope, _ in batch])

            if service.domains.whole:
                # contacts: the work; callbacks: only to drop a queued callback that was closed elsewhere.
                await runtime.consume(
                    [topics.CONTACTS, topics.CALLBACKS],
                    on_contact_event,
                    group=settings.consumer_group,
                    batch_handler=on_contact_events,
                )
            else:
                await _consume_owned_partitions(service)
            service.serving = True
            log.info("router.ready", strategy=service.strategy.version)
        except asyncio.CancelledError:
            raise
        except Exception:
            # Before the split this failed start-up and the process exited; it still does, so the
            # orchestrator restarts it instead of keeping a process that will never serve.
            log.critical("router.start_failed", exc_info=True)
            os.kill(os.getpid(), signal.SIGTERM)

    async def _consume_owned_partitions(service: RouterService) -> None:
        """Several active routers: this one owns the domains of the ``contacts`` partitions its consumer
        is assigned (``domain_ownership.py``); closures of callbacks, keyed by customer on ``callbacks``,
        are passed on to ``contacts`` under their domain's key, so they reach the domain's owner."""
        bus = runtime.bus

        async def partition_of(domain: str) -> int:
            return await bus.partition_of(topics.CONTACTS, domain)

        service.domains.use(partition_of)

        async def on_contact_event(envelope: Envelope, record: Record) -> None:
            await service.handle_events([envelope], {record.partition})

        async def on_contact_events(batch: Sequence[tuple[Envelope, Record]]) -> None:
            await service.handle_events([envelope for envelope, _ in batch], {record.partition for _, record in batch})

        async def assigned(tps: frozenset[tuple[str, int]]) -> None:
            await domain_ownership.take(service, domain_ownership.contacts_partitions(tps))

        async def revoked(tps: frozenset[tuple[str, int]]) -> None:
            await domain_ownership.give_up(service, domain_ownership.contacts_partitions(tps))

        async def pass_on_closure(envelope: Envelope, _record: Record) -> None:
            await callback_closures.pass_on(bus, service, envelope)

        await runtime.consume(
            [topics.CONTACTS],
            on_contact_event,
            group=settings.consumer_group,
            batch_handler=on_contact_events,
            on_assigned=assigned,
            on_revoked=revoked,
        )
        await runtime.consume([topics.CALLBACKS], pass_on_closure, group=f"{settings.consumer_group}-callbacks")

    admin_token = auth.required_admin_token()

    def peers_client() -> httpx.AsyncClient:
        """One pool to the other routers (forwarded requests, queue lines), made on first use and closed by
        the lifespan."""
        client: httpx.AsyncClient | None = getattr(app.state, "forwarding_client", None)
        if client is None:
            client = app.state.forwarding_client = default_client()
        return client

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await runtime.start()
        assert runtime.sessionmaker is not None and runtime.relay is not None
        service = RouterService(
            sessionmaker=runtime.sessionmaker,
            settings=settings,
            strategy=strategy,
            source=runtime.source,
            tenant_id=common.tenant_id,
            notify=runtime.relay.notify,
            clock=clock or time.time,
            issue_agent_token=authenticator.issue_agent_token,
        )

        async def current_agent_token(principal: Principal, token: str) -> bool:
            return await service.agent_for_token(token) == principal.subject  # re-issued: the old one fails

        authenticator.token_check = current_agent_token
        app.state.service = service
        app.state.read_side = QueueAcrossRouters(
            service, admin_token=admin_token, instance_id=settings.advertise_url, client=peers_client
        )
        # The lifespan does not wait for ownership: a standby answers /healthz (and /readyz with 503) at
        # once, so a liveness probe never kills it; /v1 answers 503 until this router owns the state.
        serving = asyncio.create_task(_own_and_serve(service), name="router-own-and-serve")
        app.state.serving = serving
        try:
            yield
        finally:
            serving.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await serving
            for sub in runtime.subscriptions:
                await sub.stop()
            await service.stop()
            await runtime.stop()
            for pool in ("callback_client", "forwarding_client"):  # api/promises.py's, forwarding's
                client = getattr(app.state, pool, None)
                if client is not None:
                    await client.aclose()

    app = FastAPI(
        title="Switchboard router",
        version="1.0.0",
        description="Strategy-driven, skills-based routing of contacts to agents, with offers and agent streams.",
        lifespan=lifespan,
        docs_url="/docs" if common.docs_enabled else None,
        redoc_url="/redoc" if common.docs_enabled else None,
        openapi_url="/openapi.json" if common.docs_enabled else None,
    )
    app.add_middleware(StandbyGuard, prefix="/v1/", exempt=("/v1/router/ownership",))
    if settings.ownership != WHOLE:
        # Outside the standby guard (a router owning nothing still forwards), inside the input limits
        # (what it buffers is bounded): requests for another router's domain go to that router.
        async def owner_of_request(scope: Scope, body: bytes) -> str | None:
            service = getattr(scope["app"].state, "service", None)
            return None if service is None else await request_owner.owner_url(service, scope, body)

        app.add_middleware(
            DomainForwarding,
            prefix="/v1/",
            resolve=owner_of_request,
            client_factory=peers_client,
            exempt=("/v1/router/ownership",),
            instance_id=settings.advertise_url,
        )
    app.add_middleware(RejectNulBytes)  # PostgreSQL text cannot hold NUL: 422, not 500
    install_input_limits(app, HttpServerSettings().max_body_bytes)  # 413, no 500s or echoes from bodies
    app.state.settings = settings
    app.state.runtime = runtime
    install_auth(app, authenticator)

    @app.exception_handler(OwnershipLost)
    async def _not_owner(_request: Request, _exc: OwnershipLost) -> JSONResponse:
        return JSONResponse(
            status_code=503, content={"detail": "this router is a standby; another instance owns the state"}
        )

    @app.exception_handler(RouterError)
    async def _router_error(_request: Request, exc: RouterError) -> JSONResponse:
        retry = {"Retry-After": "2"} if exc.status_code == 503 else None  # NotOwnedHere: ownership moving
        return JSONResponse(status_code=exc.status_code, content={"detail": exc.detail}, headers=retry)

    async def refresh_gauges() -> None:
        service = getattr(app.state, "service", None)
        if service is not None:
            metrics.OWNS_ROUTING_STATE.labels(service.ownership.name).set(1 if serving(service) else 0)
            metrics.OWNED_PARTITIONS.set(len(service.domains.partitions))
            metrics.OWNED_DOMAINS.set(len(service.domains.owned()) if not service.domains.whole else 0)
        if serving(service):
            try:
                metrics.refresh_gauges(await app.state.service.views.stats())
            except Exception:
                log.exception("router.metrics_refresh_failed")
        await refresh_bus_gauges(runtime.bus)

    # A plain ASGI wrapper, not @app.middleware("http"): that one (BaseHTTPMiddleware) costs every request
    # a task and a stream pair, for a refresh only /metrics needs.
    app.add_middleware(BeforePath, path="/metrics", action=refresh_gauges)

    async def routing_owner() -> bool:
        service = getattr(app.state, "service", None)
        return serving(service)

    install_unavailable_handler(app)
    # FastAPI tries the routes in the order they were included, twice a request, so the agents' two calls
    # of every contact come first (accept, complete), then the rest of the agents' API, then the others.
    for module in (offers, contacts, agents, ops, tokens, dashboard, promises, console):
        app.include_router(module.router)
    install_operations(
        app, {**runtime.checks(consumers=True), "routing_owner": routing_owner}, timeout=common.readiness_timeout
    )
    return app
