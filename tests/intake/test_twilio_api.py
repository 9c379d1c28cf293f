"""The Twilio voice webhooks, signed by the official ``twilio`` package's RequestValidator."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import Any

import httpx
from twilio.request_validator import RequestValidator

from shared.events import (
    CallbackOrigin,
    CallbackRequested,
    ContactAbandoned,
    ContactRequested,
    Intent,
    contact_id_for,
)
from shared.topics import CALLBACKS, CONTACTS
from tests.intake.conftest import CLOSED_TIME, Clock, Intake, IntakeFactory

TOKEN = "twilio-auth-token"
PUBLIC = "https://cc.example.com"
VOICE = "/v1/webhooks/twilio/voice"
QUEUE_RESULT = "/v1/webhooks/twilio/queue-result"
CALLER = "+4930901820"


def call(sid: str = "CA0123456789abcdef0123456789abcdef", **extra: str) -> dict[str, str]:
    params = {
        "CallSid": sid,
        "AccountSid": "AC0123456789abcdef0123456789abcdef",
        "From": CALLER,
        "To": "+15005550006",
        "CallStatus": "ringing",
        "Direction": "inbound",
        "ApiVersion": "2010-04-01",
        "CallerCountry": "DE",
    }
    params.update(extra)
    return params


async def post_twilio(
    app: Intake, path: str, params: dict[str, str], *, url: str | None = None, token: str = TOKEN, **headers: str
) -> httpx.Response:
    signature = RequestValidator(token).compute_signature(url or PUBLIC + path, params)
    return await app.client.post(path, data=params, headers={"X-Twilio-Signature": signature, **headers})


def twiml(resp: httpx.Response) -> ET.Element:
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"].startswith("text/xml")
    root = ET.fromstring(resp.text)
    assert root.tag == "Response"
    return root


async def start(intake: IntakeFactory, **settings: Any) -> Intake:
    return await intake(twilio_auth_token=TOKEN, public_base_url=PUBLIC, **settings)


async def test_first_webhook_asks_the_menu_and_publishes_nothing(intake: IntakeFactory) -> None:
    app = await start(intake)
    root = twiml(await post_twilio(app, VOICE, call()))
    gather = root.find("Gather")
    assert gather is not None and gather.get("numDigits") == "1"
    assert gather.get("action") == f"{PUBLIC}{VOICE}?ivr=menu"  # absolute public URL: signatures match
    assert root.findtext("Redirect") == f"{PUBLIC}{VOICE}?ivr=none"
    assert app.events() == []


async def test_menu_choice_enqueues_and_publishes_contact_requested_with_the_ivr_intent(intake: IntakeFactory) -> None:
    app = await start(intake, twilio_sites={"+15005550006": "berlin"})
    resp = await post_twilio(app, VOICE + "?ivr=menu", call(Digits="2"))
    root = twiml(resp)
    assert root.find("Say") is not None
    enqueue = root.find("Enqueue")
    assert enqueue is not None and enqueue.text == "switchboard-berlin"
    assert enqueue.get("action") == f"{PUBLIC}{QUEUE_RESULT}"
    [(topic, key, env)] = app.events()
    assert (topic, key) == (CONTACTS, "default/berlin")
    event = env.payload
    assert isinstance(event, ContactRequested)
    assert event.contact_id == contact_id_for("default", "twilio", call()["CallSid"])
    assert event.intent is Intent.PURCHASE and event.ivr_selections == ["2"]
    assert event.customer.phone == CALLER and event.customer.timezone == "Europe/Berlin"
    assert event.within_business_hours is True


async def test_twilio_retry_of_the_same_call_gets_the_same_twiml_and_publishes_nothing(intake: IntakeFactory) -> None:
    app = await start(intake)
    first = await post_twilio(app, VOICE + "?ivr=menu", call(Digits="1"))
    again = await post_twilio(app, VOICE + "?ivr=menu", call(Digits="1"))
    assert first.text == again.text and first.status_code == again.status_code == 200
    assert len(app.events()) == 1


async def test_no_input_falls_through_to_the_queue_without_intent(intake: IntakeFactory) -> None:
    app = await start(intake)
    root = twiml(await post_twilio(app, VOICE + "?ivr=none", call()))
    assert root.find("Enqueue") is not None
    [(_, _, env)] = app.events()
    assert env.payload.intent is None  # type: ignore[attr-defined]


async def test_callback_digit_promises_a_same_day_callback(intake: IntakeFactory) -> None:
    app = await start(intake)
    root = twiml(await post_twilio(app, VOICE + "?ivr=menu", call(Digits="9")))
    assert root.find("Enqueue") is None and root.find("Hangup") is not None
    # Default calendar Mon-Fri 08-18 UTC; the caller is in Berlin: "today by 19:00" Berlin time.
    assert "today by 19:00" in (root.findtext("Say") or "")
    [(topic, key, env)] = app.events()
    assert topic == CALLBACKS and key == f"default/tel:{CALLER}"
    event = env.payload
    assert isinstance(event, CallbackRequested)
    assert event.origin is CallbackOrigin.CUSTOMER_REQUEST
    assert event.contact_id == contact_id_for("default", "twilio", call()["CallSid"])
    assert event.virtual_start_time == app.clock()


async def test_outside_business_hours_the_caller_gets_an_honest_next_day_promise(intake: IntakeFactory) -> None:
    app = await start(intake, clock=Clock(CLOSED_TIME))
    root = twiml(await post_twilio(app, VOICE, call()))  # closed: no menu, decide at once
    text = root.findtext("Say") or ""
    assert "Thursday" in text and "by 19:00" in text, text
    [(topic, _, env)] = app.events()
    assert topic == CALLBACKS
    assert env.payload.origin is CallbackOrigin.ROUTER_POLICY  # type: ignore[attr-defined]
    assert env.payload.reason == "outside_business_hours"  # type: ignore[attr-defined]


async def test_withheld_number_outside_hours_hears_the_hours_and_nothing_is_promised(intake: IntakeFactory) -> None:
    app = await start(intake, clock=Clock(CLOSED_TIME))
    root = twiml(await post_twilio(app, VOICE, call(From="anonymous")))
    assert "We open again on Thursday at 08:00" in (root.findtext("Say") or "")
    assert app.events() == []


async def test_caller_hanging_up_in_the_queue_is_abandoned_once(intake: IntakeFactory) -> None:
    app = await start(intake)
    await post_twilio(app, VOICE + "?ivr=none", call())
    left = call(QueueResult="hangup", QueueTime="42", CallStatus="in-progress")
    first = await post_twilio(app, QUEUE_RESULT, left)
    again = await post_twilio(app, QUEUE_RESULT, left)
    assert twiml(first) is not None and first.text == again.text
    events = app.events(CONTACTS)
    assert [e.type for _, _, e in events] == [ContactRequested.event_type, ContactAbandoned.event_type]
    assert events[0][1] == events[1][1]  # same routing-domain key: ordered after the request


async def test_bridged_calls_and_plain_status_callbacks_publish_nothing(intake: IntakeFactory) -> None:
    app = await start(intake)
    await post_twilio(app, VOICE + "?ivr=none", call())
    twiml(await post_twilio(app, QUEUE_RESULT, call(QueueResult="bridged")))
    twiml(await post_twilio(app, QUEUE_RESULT, call(CallStatus="completed")))
    twiml(await post_twilio(app, QUEUE_RESULT, call("CAunknown", QueueResult="hangup")))  # not ours
    assert len(app.events()) == 1


async def test_a_failed_queue_turns_the_waiting_caller_into_a_callback(intake: IntakeFactory) -> None:
    app = await start(intake)
    await post_twilio(app, VOICE + "?ivr=none", call())
    root = twiml(await post_twilio(app, QUEUE_RESULT, call(QueueResult="queue-full")))
    assert "call you back" in (root.findtext("Say") or "")
    [(_, _, env)] = app.events(CALLBACKS)
    assert env.payload.reason == "queue_queue-full"  # type: ignore[attr-defined]


async def test_twilio_signature_failures_are_401(intake: IntakeFactory) -> None:
    app = await start(intake)
    unsigned = await app.client.post(VOICE, data=call())
    assert unsigned.status_code == 401 and unsigned.json()["reason"] == "signature_missing"
    wrong_token = await post_twilio(app, VOICE, call(), token="someone-elses-token")
    assert wrong_token.status_code == 401 and wrong_token.json()["reason"] == "signature_mismatch"
    signed = RequestValidator(TOKEN).compute_signature(PUBLIC + VOICE, call())
    tampered = await app.client.post(VOICE, data=call(Digits="9"), headers={"X-Twilio-Signature": signed})
    assert tampered.status_code == 401
    assert app.events() == []


async def test_behind_a_proxy_the_url_twilio_signed_is_rebuilt(intake: IntakeFactory) -> None:
    # Without a public base URL, the URL we see (http://intake.test) is not the one Twilio signed.
    bare = await intake(twilio_auth_token=TOKEN)
    assert (await post_twilio(bare, VOICE, call())).status_code == 401
    # Trusting the proxy's X-Forwarded-* headers rebuilds it.
    proxied = await intake(twilio_auth_token=TOKEN, trust_forwarded_headers=True, data_dir=bare.data_dir / "p")
    resp = await post_twilio(
        proxied, VOICE, call(), **{"X-Forwarded-Proto": "https", "X-Forwarded-Host": "cc.example.com"}
    )
    assert resp.status_code == 200, resp.text


async def test_twilio_bad_requests(intake: IntakeFactory) -> None:
    app = await start(intake)
    as_json = await app.client.post(VOICE, json=call())
    assert as_json.status_code == 415
    no_sid = {k: v for k, v in call().items() if k != "CallSid"}
    missing = await post_twilio(app, VOICE, no_sid)
    assert missing.status_code == 422 and ["body", "CallSid"] in [e["loc"] for e in missing.json()["detail"]]
    bad_digits = await post_twilio(app, VOICE, call(Digits="1; DROP TABLE"))
    assert bad_digits.status_code == 422
    assert app.events() == []


async def test_status_callback_url_is_handled_like_the_enqueue_action(intake: IntakeFactory) -> None:
    app = await start(intake)
    await post_twilio(app, VOICE + "?ivr=none", call())
    twiml(await post_twilio(app, "/v1/webhooks/twilio/status", call(CallStatus="completed")))
    assert len(app.events()) == 1
    twiml(await post_twilio(app, "/v1/webhooks/twilio/status", call(QueueResult="hangup")))
    assert [e.type for _, _, e in app.events(CONTACTS)][-1] == ContactAbandoned.event_type
