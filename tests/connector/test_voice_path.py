"""Router and connector on one embedded bus, Twilio faked: a Twilio call accepted by an agent is
redirected to ring that agent; a busy agent sends the call back to its place in line."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI

from services.connector.app import create_app
from services.connector.settings import ConnectorSettings
from shared.events import AgentDialed, Channel, ContactRequested, Customer, DialResult, contact_id_for
from shared.settings import CommonSettings
from tests.connector.fake_twilio import FakeTwilio, fake_twilio
from tests.router.conftest import Router, eventually, running_router

ACCOUNT = "AC" + "2" * 32
CALL = "CA" + "c" * 32


@asynccontextmanager
async def connector(data_dir: Path, twilio: FakeTwilio) -> AsyncIterator[FastAPI]:
    common = CommonSettings(data_dir=data_dir, log_json=False, log_level="WARNING", embedded_partitions=2)
    settings = ConnectorSettings(
        twilio_account_sid=ACCOUNT,
        twilio_auth_token="tok",  # type: ignore[arg-type]
        twilio_api_base_url=twilio.url,
        intake_public_url="https://intake.example.com",
    )
    app = create_app(common, settings)
    async with app.router.lifespan_context(app):
        yield app


async def test_accepted_twilio_call_rings_the_agent_and_busy_requeues(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with fake_twilio() as twilio:
        async with running_router(data) as router, connector(data, twilio):
            await run_path(router, twilio)


async def run_path(router: Router, twilio: FakeTwilio) -> None:
    _, alice = await router.register("alice", capacity={"voice": 1}, contact_uris={"voice": "client:alice"})
    contact_id = contact_id_for("default", "twilio", CALL)
    await router.emit(
        ContactRequested(
            contact_id=contact_id,
            source="twilio",
            external_id=CALL,
            channel=Channel.VOICE,
            customer=Customer(id="tel:+4930901820", phone="+4930901820"),
        )
    )
    offer = await router.wait_offer("alice", alice)
    assert (await router.client.post(f"/v1/offers/{offer['offer_id']}/accept", headers=alice)).status_code == 200

    async def rung() -> bool:
        return bool(twilio.requests)

    await eventually(rung)
    (req,) = twilio.requests
    assert req.path == f"/2010-04-01/Accounts/{ACCOUNT}/Calls/{CALL}.json"
    dial = ET.fromstring(req.form["Twiml"][0])[0]
    assert dial.get("action") == "https://intake.example.com/v1/webhooks/twilio/dial-result?agent=alice"
    assert [(el.tag, el.text) for el in dial] == [("Client", "alice")]

    # What intake publishes when Twilio reports the agent busy:
    await router.emit(AgentDialed(contact_id=contact_id, agent_id="alice", result=DialResult.BUSY, call_ref=CALL))

    async def back_in_line() -> bool:
        return await router.queue_ids() == [contact_id]

    await eventually(back_in_line)
    agent = (await router.client.get("/v1/agents/alice", headers=alice)).json()
    assert agent["missed_offers"] == 1
