"""Intake (placeholder until the full service lands): accepts a contact and publishes contact.requested."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from pydantic import BaseModel

from shared.events import Channel, ContactRequested, Customer, contact_id_for
from shared.observability import configure_logging, install_operations
from shared.runtime import ServiceRuntime
from shared.settings import CommonSettings


class ContactIn(BaseModel):
    external_id: str
    source: str
    channel: Channel
    customer: Customer


def create_app(common: CommonSettings | None = None) -> FastAPI:
    common = common or CommonSettings()
    configure_logging("intake", level=common.log_level, json=common.log_json)
    runtime = ServiceRuntime("intake", common)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        await runtime.start()
        yield
        await runtime.stop()

    app = FastAPI(title="Switchboard intake", lifespan=lifespan)
    install_operations(app, runtime.checks())

    @app.post("/v1/contacts", status_code=202)
    async def post_contact(body: ContactIn) -> dict[str, str]:
        cid = contact_id_for(common.tenant_id, body.source, body.external_id)
        data = ContactRequested(contact_id=cid, source=body.source, external_id=body.external_id,
                                channel=body.channel, customer=body.customer)
        await runtime.bus.emit(data, source=runtime.source, event_id=cid)
        return {"contact_id": cid}

    return app
