"""Router (placeholder until the full service lands): consumes contacts and shows the waiting queue."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from shared import topics
from shared.bus import Record
from shared.events import ContactRequested, Envelope
from shared.observability import configure_logging, install_operations
from shared.runtime import ServiceRuntime
from shared.settings import CommonSettings


def create_app(common: CommonSettings | None = None) -> FastAPI:
    common = common or CommonSettings()
    configure_logging("router", level=common.log_level, json=common.log_json)
    runtime = ServiceRuntime("router", common)
    queue: dict[str, ContactRequested] = {}

    async def on_contact(env: Envelope, _rec: Record) -> None:
        if isinstance(env.payload, ContactRequested):
            queue[env.payload.contact_id] = env.payload

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        await runtime.start()
        await runtime.consume([topics.CONTACTS], on_contact)
        yield
        await runtime.stop()

    app = FastAPI(title="Switchboard router", lifespan=lifespan)
    install_operations(app, runtime.checks())

    @app.get("/v1/queue")
    async def get_queue() -> list[dict[str, str]]:
        return [{"contact_id": c.contact_id, "channel": c.channel} for c in queue.values()]

    return app
