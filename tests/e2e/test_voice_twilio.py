"""Issue 16 across real processes: Twilio voice webhook -> queued -> offer -> accept -> the connector
redirects the call to ring the agent (a local fake of Twilio's REST API) -> the dial outcome comes back
signed as Twilio signs it: busy (requeued, place kept, missed offer), answered, caller hung up."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Callable
from typing import Any

import httpx
from twilio.request_validator import RequestValidator

from shared.events import contact_id_for
from tests.conftest import TEST_ADMIN_TOKEN
from tests.connector.fake_twilio import FakeTwilio, fake_twilio
from tests.e2e.conftest import ServiceProcess, wait_until

ADMIN = {"Authorization": f"Bearer {TEST_ADMIN_TOKEN}"}
TOKEN = "twilio-auth-token"
ACCOUNT = "AC" + "3" * 32
FIRST, SECOND = "CA" + "1" * 32, "CA" + "2" * 32


def signed_post(url: str, params: dict[str, str]) -> httpx.Response:
    signature = RequestValidator(TOKEN).compute_signature(url, params)
    return httpx.post(url, data=params, headers={"X-Twilio-Signature": signature}, timeout=10)


def twilio_call(sid: str, **extra: str) -> dict[str, str]:
    return {
        "CallSid": sid,
        "AccountSid": ACCOUNT,
        "From": "+4930901820",
        "To": "+15005550006",
        "CallStatus": "in-progress",
        **extra,
    }


def register(router: ServiceProcess, agent_id: str, status: str) -> dict[str, str]:
    r = httpx.post(
        f"{router.url}/v1/agents",
        headers=ADMIN,
        json={
            "agent_id": agent_id,
            "name": agent_id.title(),
            "roles": ["service"],
            "capacity": {"voice": 1},
            "status": status,
            "contact_uris": {"voice": f"client:{agent_id}"},
        },
    )
    assert r.status_code == 201, r.text
    return {"Authorization": f"Bearer {r.json()['token']}"}


def accept_next(router: ServiceProcess, agent_id: str, headers: dict[str, str], contact_id: str) -> None:
    def offer() -> dict[str, Any] | None:
        items = httpx.get(f"{router.url}/v1/agents/{agent_id}/offers", headers=headers).json()["items"]
        return next((o for o in items if o["contact_id"] == contact_id), None)

    found = wait_until(offer)
    r = httpx.post(f"{router.url}/v1/offers/{found['offer_id']}/accept", headers=headers)
    assert r.status_code == 200, r.text


def dialled(twilio: FakeTwilio, n: int) -> ET.Element:
    wait_until(lambda: len(twilio.requests) >= n)
    return ET.fromstring(twilio.requests[n - 1].form["Twiml"][0])[0]


def kinds(router: ServiceProcess, contact_id: str) -> list[str]:
    events = httpx.get(f"{router.url}/v1/contacts/{contact_id}/timeline", headers=ADMIN).json()["events"]
    return [e["kind"] for e in events]


def test_twilio_call_rings_the_accepting_agent_busy_requeues_answered_and_hang_up(
    services: Callable[..., ServiceProcess],
) -> None:
    with fake_twilio() as twilio:
        intake = services(
            "intake", env={"SWITCHBOARD_INTAKE_TWILIO_AUTH_TOKEN": TOKEN, "SWITCHBOARD_INTAKE_TWILIO_GATHER": "false"}
        )
        router = services("router", env={"SWITCHBOARD_ROUTER_PRESENCE_GRACE_SECONDS": "60"})
        services(
            "connector",
            env={
                "SWITCHBOARD_CONNECTOR_TWILIO_ACCOUNT_SID": ACCOUNT,
                "SWITCHBOARD_CONNECTOR_TWILIO_AUTH_TOKEN": TOKEN,
                "SWITCHBOARD_CONNECTOR_TWILIO_API_BASE_URL": twilio.url,
                "SWITCHBOARD_CONNECTOR_INTAKE_PUBLIC_URL": intake.url,
            },
        )
        alice = register(router, "alice", "available")
        bob = register(router, "bob", "offline")

        # A call comes in and waits in the Twilio queue.
        root = ET.fromstring(signed_post(f"{intake.url}/v1/webhooks/twilio/voice", twilio_call(FIRST)).text)
        assert root.findtext("Enqueue") == "switchboard-main"
        contact_id = contact_id_for("default", "twilio", FIRST)

        # Alice accepts: the connector redirects the call to ring her.
        accept_next(router, "alice", alice, contact_id)
        dial = dialled(twilio, 1)
        assert twilio.requests[0].path == f"/2010-04-01/Accounts/{ACCOUNT}/Calls/{FIRST}.json"
        action = f"{intake.url}/v1/webhooks/twilio/dial-result?agent=alice"
        assert dial.get("action") == action and [(e.tag, e.text) for e in dial] == [("Client", "alice")]

        # She is busy: the caller goes back into the Twilio queue and to the head of our line.
        busy = signed_post(action, twilio_call(FIRST, DialCallStatus="busy", DialCallSid="CA" + "b" * 32))
        assert ET.fromstring(busy.text).findtext("Enqueue") == "switchboard-main"
        wait_until(lambda: "requeued" in kinds(router, contact_id))
        assert httpx.get(f"{router.url}/v1/agents/alice", headers=ADMIN).json()["missed_offers"] == 1

        # Bob logs in and takes it; his phone answers; he completes with an outcome as usual.
        httpx.put(f"{router.url}/v1/agents/bob/status", headers=bob, json={"status": "available"})
        accept_next(router, "bob", bob, contact_id)
        assert [(e.tag, e.text) for e in dialled(twilio, 2)] == [("Client", "bob")]
        bob_action = f"{intake.url}/v1/webhooks/twilio/dial-result?agent=bob"
        answered = signed_post(bob_action, twilio_call(FIRST, DialCallStatus="completed", DialCallSid="CA" + "c" * 32))
        assert [e.tag for e in ET.fromstring(answered.text)] == ["Hangup"]
        done = httpx.post(f"{router.url}/v1/contacts/{contact_id}/complete", headers=bob, json={"resolved": True})
        assert done.status_code == 200, done.text

        # A second caller hangs up while Alice's phone rings: abandoned, Alice free again.
        signed_post(f"{intake.url}/v1/webhooks/twilio/voice", twilio_call(SECOND))
        second = contact_id_for("default", "twilio", SECOND)
        accept_next(router, "alice", alice, second)
        dialled(twilio, 3)
        gone = signed_post(
            action, twilio_call(SECOND, CallStatus="completed", DialCallStatus="no-answer", DialCallSid="CA" + "d" * 32)
        )
        assert list(ET.fromstring(gone.text)) == []
        wait_until(lambda: "abandoned" in kinds(router, second))
        assert kinds(router, second)[-2:] == ["dial_failed", "abandoned"]
