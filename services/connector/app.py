"""Connector service: telephone-system glue kept out of the router.

``uvicorn services.connector.app:create_app --factory``. Consumes ``contacts`` and ``routing``; with Twilio
credentials configured it rings the agent who accepted a Twilio voice contact (:mod:`.bridge`), and it
sends signed webhooks to each subscribed telephone system (:mod:`.webhooks`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import structlog
from fastapi import FastAPI

from services.connector import metrics  # noqa: F401  (the connector's counters exist from the start)
from services.connector.bridge import VoiceBridge
from services.connector.settings import ConnectorSettings
from services.connector.twilio_calls import TwilioCalls
from services.connector.webhooks import WebhookSender
from shared.bus import EventBus
from shared.events import AgentDialed
from shared.observability import (
    BeforePath,
    configure_logging,
    install_operations,
    install_unavailable_handler,
    refresh_bus_gauges,
)
from shared.runtime import ServiceRuntime
from shared.settings import CommonSettings
from shared.topics import CONTACTS, ROUTING

log = structlog.get_logger(__name__)


def create_app(
    common: CommonSettings | None = None,
    settings: ConnectorSettings | None = None,
    *,
    bus: EventBus | None = None,
    calls: TwilioCalls | None = None,
) -> FastAPI:
    common = common or CommonSettings()
    settings = settings or ConnectorSettings()
    configure_logging("connector", level=common.log_level, json=common.log_json)
    runtime = ServiceRuntime("connector", common, bus=bus)
    if calls is None and settings.twilio_account_sid and settings.twilio_auth_token is not None:
        calls = TwilioCalls(settings)  # fails here, at start-up, on bad settings

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await runtime.start()
        app.state.runtime = runtime
        if calls is not None:

            async def publish(event: AgentDialed, event_id: str) -> None:
                await runtime.bus.emit(event, source=runtime.source, event_id=event_id)

            bridge = VoiceBridge(settings, calls, publish)
            app.state.bridge = bridge
            # A new group starts at the end: history holds calls long gone (redirecting them would only
            # earn 404s); after that, committed offsets carry it across restarts.
            sub = await runtime.bus.subscribe([CONTACTS, ROUTING], "connector-twilio", bridge, from_beginning=False)
            runtime.subscriptions.append(sub)
        else:
            log.warning("connector.twilio_disabled", reason="no SWITCHBOARD_CONNECTOR_TWILIO_ACCOUNT_SID/_AUTH_TOKEN")
        client = httpx.AsyncClient(follow_redirects=False)
        for subscription in settings.webhooks:
            # One attempt as far as the bus is concerned: the sender already retried with backoff, so an
            # event it gives up on goes straight to the DLQ (tagged with this subscription's group).
            # A new subscription starts at the end too: a PBX is not sent the history of the deployment.
            sub = await runtime.bus.subscribe(
                subscription.topics,
                subscription.group,
                WebhookSender(subscription, client),
                max_attempts=1,
                from_beginning=False,
            )
            runtime.subscriptions.append(sub)
        try:
            yield
        finally:
            await runtime.stop()
            await client.aclose()

    app = FastAPI(
        title="Switchboard connector",
        description="Connects accepted voice contacts to agents' phones (Twilio) and notifies PBXs.",
        version="1",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    consumers = calls is not None or bool(settings.webhooks)
    # Consumer lag and DLQ size of the connector's subscriptions, read when Prometheus scrapes.
    app.add_middleware(BeforePath, path="/metrics", action=lambda: refresh_bus_gauges(runtime.bus))
    install_operations(app, runtime.checks(consumers=consumers), timeout=common.readiness_timeout)
    install_unavailable_handler(app)
    return app
