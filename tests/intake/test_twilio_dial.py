"""Intake's ``<Dial action>`` webhook: the outcome of ringing the agent, signed as Twilio signs it."""

from __future__ import annotations

import pytest

from shared.events import AgentDialed, AttemptResult, CustomerDialed, DialResult, contact_id_for
from shared.topics import CONTACTS
from tests.intake.conftest import Intake, IntakeFactory
from tests.intake.test_twilio_api import PUBLIC, QUEUE_RESULT, VOICE, call, post_twilio, start, twiml

DIAL = "/v1/webhooks/twilio/dial-result"
SID = "CA0123456789abcdef0123456789abcdef"
LEG = "CAffffffffffffffffffffffffffffffff"


async def queued(intake: IntakeFactory) -> Intake:
    app = await start(intake, twilio_sites={"+15005550006": "berlin"})
    twiml(await post_twilio(app, VOICE + "?ivr=none", call(SID)))
    return app


def dialled(app: Intake) -> list[AgentDialed]:
    return [env.payload for _, _, env in app.events(CONTACTS) if isinstance(env.payload, AgentDialed)]


async def post_dial(app: Intake, status: str, *, call_status: str = "in-progress", agent: str = "alice") -> object:
    path = f"{DIAL}?agent={agent}"
    params = call(SID, DialCallStatus=status, DialCallSid=LEG, CallStatus=call_status)
    return await post_twilio(app, path, params)


@pytest.mark.parametrize(
    ("status", "result"),
    [
        ("busy", DialResult.BUSY),
        ("no-answer", DialResult.NO_ANSWER),
        ("failed", DialResult.FAILED),
        ("canceled", DialResult.FAILED),
    ],
)
async def test_agent_not_reached_requeues_the_caller_and_publishes(
    intake: IntakeFactory, status: str, result: DialResult
) -> None:
    app = await queued(intake)
    root = twiml(await post_dial(app, status))
    enqueue = root.find("Enqueue")
    assert enqueue is not None and enqueue.text == "switchboard-berlin"
    assert enqueue.get("action") == f"{PUBLIC}{QUEUE_RESULT}"
    (event,) = dialled(app)
    assert event.contact_id == contact_id_for("default", "twilio", SID)
    assert (event.agent_id, event.site, event.result, event.call_ref) == ("alice", "berlin", result, SID)


async def test_answered_publishes_nothing_and_hangs_up(intake: IntakeFactory) -> None:
    app = await queued(intake)
    root = twiml(await post_dial(app, "completed"))
    assert [el.tag for el in root] == ["Hangup"]
    assert dialled(app) == []


async def test_caller_gone_is_reported_once(intake: IntakeFactory) -> None:
    app = await queued(intake)
    first = twiml(await post_dial(app, "no-answer", call_status="completed"))
    again = twiml(await post_dial(app, "no-answer", call_status="completed"))  # Twilio retrying
    assert list(first) == [] and list(again) == []
    (event,) = dialled(app)
    assert event.result is DialResult.CALLER_GONE


async def test_unsigned_or_unknown_or_bad_agent_is_refused(intake: IntakeFactory) -> None:
    app = await queued(intake)
    params = call(SID, DialCallStatus="busy", CallStatus="in-progress")
    unsigned = await app.client.post(f"{DIAL}?agent=alice", data=params, headers={"X-Twilio-Signature": "bad"})
    assert unsigned.status_code == 401
    bad_agent = await post_twilio(app, f"{DIAL}?agent=has%20space", params)
    assert bad_agent.status_code == 422 and "agent" in bad_agent.text
    no_status = await post_twilio(app, f"{DIAL}?agent=alice", call(SID))
    assert no_status.status_code == 422 and "DialCallStatus" in no_status.text
    other = await post_twilio(app, f"{DIAL}?agent=alice", call("CA" + "9" * 32, DialCallStatus="busy"))
    assert list(twiml(other)) == []  # not a call we queued
    assert dialled(app) == []


CALLBACK = "/v1/webhooks/twilio/callback-result"
OUT = "CA" + "e" * 32  # the outbound call the connector placed


def customer_dialled(app: Intake) -> list[CustomerDialed]:
    return [env.payload for _, _, env in app.events(CONTACTS) if isinstance(env.payload, CustomerDialed)]


@pytest.mark.parametrize(
    ("status", "result"),
    [
        ("completed", AttemptResult.REACHED),
        ("busy", AttemptResult.BUSY),
        ("no-answer", AttemptResult.NO_ANSWER),
        ("failed", AttemptResult.WRONG_NUMBER),
    ],
)
async def test_callback_customer_leg_reports_the_attempt_result(
    intake: IntakeFactory, status: str, result: AttemptResult
) -> None:
    app = await start(intake)
    url = f"{CALLBACK}?callback=cb-1&agent=alice&site=berlin&leg=customer"
    params = call(OUT, DialCallStatus=status, DialCallSid=LEG)
    root = twiml(await post_twilio(app, url, params))
    assert [el.tag for el in root] == ["Hangup"]
    twiml(await post_twilio(app, url, params))  # Twilio retrying: published once
    (event,) = customer_dialled(app)
    assert (event.contact_id, event.agent_id, event.site, event.result, event.call_ref) == (
        "cb-1",
        "alice",
        "berlin",
        result,
        OUT,
    )
    assert dialled(app) == []


async def test_callback_agent_leg_unanswered_requeues_and_answered_publishes_nothing(intake: IntakeFactory) -> None:
    app = await start(intake)
    url = f"{CALLBACK}?callback=cb-1&agent=alice&site=main&leg=agent"
    twiml(await post_twilio(app, url, call(OUT, CallStatus="completed")))
    assert dialled(app) == []
    twiml(await post_twilio(app, url, call(OUT, CallStatus="no-answer")))
    (event,) = dialled(app)
    assert (event.contact_id, event.result) == ("cb-1", DialResult.NO_ANSWER)
    bad = await post_twilio(app, f"{CALLBACK}?callback=cb-1&agent=alice&site=main&leg=both", call(OUT))
    assert bad.status_code == 422 and "leg" in bad.text
