"""The voice bridge against a local fake of Twilio's REST API, with the real ``twilio`` client.

Asserts the exact request Twilio would receive (URL, method, auth, form fields, TwiML) and what the
bridge reports when the call cannot be redirected."""

from __future__ import annotations

import base64
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from datetime import timedelta

import pytest
from prometheus_client import REGISTRY

from services.connector.bridge import VoiceBridge
from services.connector.settings import ConnectorSettings
from services.connector.twilio_calls import TwilioCalls
from shared.events import (
    AgentDialed,
    CallbackDue,
    Channel,
    ContactAbandoned,
    ContactRequested,
    Customer,
    DialResult,
    OfferAccepted,
    contact_id_for,
    make_event,
    utcnow,
)
from tests.connector.fake_twilio import FakeTwilio, fake_twilio, twilio_error

ACCOUNT = "AC" + "1" * 32
TOKEN = "secret-token"
CALL = "CA" + "a" * 32


@pytest.fixture
def twilio() -> Iterator[FakeTwilio]:
    with fake_twilio() as fake:
        yield fake


def settings(fake: FakeTwilio, **changes: object) -> ConnectorSettings:
    values: dict[str, object] = dict(
        twilio_account_sid=ACCOUNT,
        twilio_auth_token=TOKEN,
        twilio_api_base_url=fake.url,
        intake_public_url="https://intake.example.com",
        dial_timeout_seconds=25,
    )
    values.update(changes)
    return ConnectorSettings(**values)  # type: ignore[arg-type]


class Bridge:
    def __init__(self, s: ConnectorSettings) -> None:
        self.published: list[tuple[AgentDialed, str]] = []

        async def publish(event: AgentDialed, event_id: str) -> None:
            self.published.append((event, event_id))

        self.bridge = VoiceBridge(s, TwilioCalls(s), publish)

    async def call_queued(self, call_sid: str = CALL, phone: str | None = "+4930901820") -> str:
        contact_id = contact_id_for("default", "twilio", call_sid)
        customer = Customer(id=f"tel:{phone}" if phone else "anonymous", phone=phone)
        requested = ContactRequested(
            contact_id=contact_id, source="twilio", external_id=call_sid, channel=Channel.VOICE, customer=customer
        )
        await self.bridge.handle(make_event(requested, source="test"))
        return contact_id

    async def accepted(self, contact_id: str, uri: str | None, offer_id: str = "offer-1") -> DialResult | None:
        event = OfferAccepted(
            offer_id=offer_id, contact_id=contact_id, agent_id="alice", channel=Channel.VOICE, contact_uri=uri
        )
        return await self.bridge.handle(make_event(event, source="test"))


async def test_accepted_twilio_call_is_redirected_to_dial_the_agent(twilio: FakeTwilio) -> None:
    b = Bridge(settings(twilio))
    contact_id = await b.call_queued()
    placed = dials("ring", "placed")
    assert await b.accepted(contact_id, "client:alice") is None
    assert dials("ring", "placed") == placed + 1
    (req,) = twilio.requests
    assert req.method == "POST"
    assert req.path == f"/2010-04-01/Accounts/{ACCOUNT}/Calls/{CALL}.json"
    assert req.headers["Authorization"] == "Basic " + base64.b64encode(f"{ACCOUNT}:{TOKEN}".encode()).decode()
    assert set(req.form) == {"Twiml"}
    root = ET.fromstring(req.form["Twiml"][0])
    (dial,) = root
    assert root.tag == "Response" and dial.tag == "Dial"
    assert dial.attrib == {
        "action": "https://intake.example.com/v1/webhooks/twilio/dial-result?agent=alice",
        "method": "POST",
        "timeout": "25",
        "callerId": "+4930901820",  # the caller's number, shown on the agent's client
    }
    assert [(el.tag, el.text) for el in dial] == [("Client", "alice")]
    assert b.published == []


@pytest.mark.parametrize(
    ("uri", "noun", "text"),
    [("sip:alice@pbx.example.com", "Sip", "sip:alice@pbx.example.com"), ("+4930901821", "Number", "+4930901821")],
)
async def test_sip_and_number_agents_and_a_configured_caller_id(
    twilio: FakeTwilio, uri: str, noun: str, text: str
) -> None:
    b = Bridge(settings(twilio, dial_caller_id="+4930901899"))
    await b.accepted(await b.call_queued(), uri)
    dial = ET.fromstring(twilio.requests[0].form["Twiml"][0])[0]
    assert dial.attrib["callerId"] == "+4930901899"
    assert [(el.tag, el.text) for el in dial] == [(noun, text)]


async def test_redelivered_acceptance_does_not_ring_again(twilio: FakeTwilio) -> None:
    b = Bridge(settings(twilio))
    contact_id = await b.call_queued()
    await b.accepted(contact_id, "client:alice")
    await b.accepted(contact_id, "client:alice")
    assert len(twilio.requests) == 1
    await b.accepted(contact_id, "client:bob", offer_id="offer-2")  # requeued and accepted by someone else
    assert len(twilio.requests) == 2


async def test_calls_not_from_twilio_and_other_channels_are_left_alone(twilio: FakeTwilio) -> None:
    b = Bridge(settings(twilio))
    assert await b.accepted("some-chat", "client:alice") is None
    contact_id = await b.call_queued()
    await b.bridge.handle(make_event(ContactAbandoned(contact_id=contact_id), source="test"))
    assert await b.accepted(contact_id, "client:alice") is None
    assert twilio.requests == [] and b.published == []


def dials(kind: str, outcome: str) -> float:
    return REGISTRY.get_sample_value("switchboard_connector_dials_total", {"kind": kind, "outcome": outcome}) or 0.0


async def test_ended_call_is_reported_caller_gone(twilio: FakeTwilio) -> None:
    twilio.script[CALL] = [twilio_error(400, 21220, "Call is not in-progress. Cannot redirect.")]
    b = Bridge(settings(twilio))
    contact_id = await b.call_queued()
    placed, gone = dials("ring", "placed"), dials("ring", "caller_gone")
    assert await b.accepted(contact_id, "client:alice") is DialResult.CALLER_GONE
    assert (dials("ring", "placed") - placed, dials("ring", "caller_gone") - gone) == (0, 1)
    ((event, event_id),) = b.published
    assert (event.contact_id, event.agent_id, event.result, event.call_ref) == (
        contact_id,
        "alice",
        DialResult.CALLER_GONE,
        CALL,
    )
    assert "21220" in (event.detail or "") and event_id


async def test_server_error_is_retried_then_rings(twilio: FakeTwilio) -> None:
    twilio.script[CALL] = [twilio_error(503, 20503, "unavailable"), (200, {"sid": CALL, "status": "in-progress"})]
    b = Bridge(settings(twilio))
    assert await b.accepted(await b.call_queued(), "client:alice") is None
    assert len(twilio.requests) == 2 and b.published == []


async def test_persistent_refusal_is_not_connected_and_no_address_is_failed(twilio: FakeTwilio) -> None:
    twilio.script[CALL] = [twilio_error(500, 20500, "internal")]
    b = Bridge(settings(twilio, redirect_attempts=2))
    assert await b.accepted(await b.call_queued(), "client:alice") is DialResult.NOT_CONNECTED
    assert len(twilio.requests) == 2
    other = "CA" + "b" * 32
    assert await b.accepted(await b.call_queued(other), None) is DialResult.FAILED
    assert len(twilio.requests) == 2  # nothing to dial: Twilio is not asked
    assert [e.result for e, _ in b.published] == [DialResult.NOT_CONNECTED, DialResult.FAILED]


async def test_offer_accepted_naming_the_call_rings_without_having_seen_the_contact(twilio: FakeTwilio) -> None:
    b = Bridge(settings(twilio))  # e.g. a connector restarted after the call was queued
    event = OfferAccepted(
        offer_id="o-1",
        contact_id="c-1",
        agent_id="alice",
        channel=Channel.VOICE,
        contact_uri="client:alice",
        source="twilio",
        external_id=CALL,
    )
    assert await b.bridge.handle(make_event(event, source="test")) is None
    (req,) = twilio.requests
    assert req.path == f"/2010-04-01/Accounts/{ACCOUNT}/Calls/{CALL}.json"
    dial = ET.fromstring(req.form["Twiml"][0])[0]
    assert "callerId" not in dial.attrib  # unknown caller: Twilio shows the caller's own number
    other = event.model_copy(update={"offer_id": "o-2", "contact_id": "c-2", "source": "asterisk"})
    assert await b.bridge.handle(make_event(other, source="test")) is None
    assert len(twilio.requests) == 1  # another system's call is not Twilio's to redirect


async def test_a_hung_api_times_out_and_is_reported_not_connected(twilio: FakeTwilio) -> None:
    twilio.delay_seconds = 2.0
    b = Bridge(settings(twilio, twilio_timeout_seconds=0.3, redirect_attempts=2))
    assert await b.accepted(await b.call_queued(), "client:alice") is DialResult.NOT_CONNECTED
    assert len(twilio.requests) == 2  # retried once, then given up
    assert "unreachable" in (b.published[0][0].detail or "")


async def due_and_accepted(b: Bridge, uri: str | None = "client:alice") -> DialResult | None:
    due = CallbackDue(
        callback_id="cb-1",
        customer=Customer(id="tel:+4930901820", phone="+4930901820"),
        site="berlin",
        channel=Channel.VOICE,
        deadline=utcnow() + timedelta(hours=1),
    )
    await b.bridge.handle(make_event(due, source="test"))
    accepted = OfferAccepted(
        offer_id="o-cb", contact_id="cb-1", agent_id="alice", site="berlin", channel=Channel.VOICE, contact_uri=uri
    )
    return await b.bridge.handle(make_event(accepted, source="test"))


async def test_accepted_callback_rings_the_agent_then_the_customer(twilio: FakeTwilio) -> None:
    b = Bridge(settings(twilio, callback_dial_out=True, dial_caller_id="+15005550006"))
    assert await due_and_accepted(b) is None
    (req,) = twilio.requests
    assert req.method == "POST" and req.path == f"/2010-04-01/Accounts/{ACCOUNT}/Calls.json"
    result = "https://intake.example.com/v1/webhooks/twilio/callback-result?callback=cb-1&agent=alice&site=berlin"
    assert {k: v for k, v in req.form.items() if k != "Twiml"} == {
        "To": ["client:alice"],
        "From": ["+15005550006"],
        "Timeout": ["25"],
        "StatusCallback": [result + "&leg=agent"],
        "StatusCallbackEvent": ["completed"],
        "StatusCallbackMethod": ["POST"],
    }
    dial = ET.fromstring(req.form["Twiml"][0])[0]
    assert dial.attrib == {
        "action": result + "&leg=customer",
        "method": "POST",
        "timeout": "25",
        "callerId": "+15005550006",
    }
    assert [(el.tag, el.text) for el in dial] == [("Number", "+4930901820")]
    assert await due_and_accepted(b) is None and len(twilio.requests) == 1  # redelivered: placed once


async def test_callbacks_are_left_to_the_agent_unless_enabled_with_a_caller_id(twilio: FakeTwilio) -> None:
    assert await due_and_accepted(Bridge(settings(twilio))) is None
    assert await due_and_accepted(Bridge(settings(twilio, callback_dial_out=True))) is None  # no caller id
    assert twilio.requests == []


async def test_a_callback_twilio_refuses_is_requeued_without_blaming_the_agent(twilio: FakeTwilio) -> None:
    twilio.script["Calls"] = [twilio_error(400, 21211, "Invalid 'To' Phone Number")]
    b = Bridge(settings(twilio, callback_dial_out=True, dial_caller_id="+15005550006"))
    assert await due_and_accepted(b) is DialResult.NOT_CONNECTED
    ((event, _),) = b.published
    assert (event.contact_id, event.site, event.call_ref) == ("cb-1", "berlin", None)
    assert "21211" in (event.detail or "")
