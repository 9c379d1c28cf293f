"""POST /v1/contacts/dial-result: a PBX reports how ringing the accepting agent ended (signed, generic)."""

from __future__ import annotations

from typing import Any

from shared.events import AgentDialed, DialResult
from shared.topics import CONTACTS
from tests.intake.conftest import Intake, IntakeFactory, contact_payload
from tests.intake.test_contacts_api import SECRETS

PATH = "/v1/contacts/dial-result"


def dialled(app: Intake) -> list[AgentDialed]:
    return [env.payload for _, _, env in app.events(CONTACTS) if isinstance(env.payload, AgentDialed)]


def notice(**changes: Any) -> dict[str, Any]:
    return {"source": "acme", "external_id": "call-1", "agent_id": "alice", "result": "busy", **changes}


async def test_publishes_agent_dialed_once_per_attempt(intake: IntakeFactory) -> None:
    app = await intake(**SECRETS)
    contact_id = (await app.post_signed("/v1/contacts", contact_payload())).json()["contact_id"]
    first = await app.post_signed(PATH, notice(attempt_id="leg-1"))
    again = await app.post_signed(PATH, notice(attempt_id="leg-1"))  # the PBX retrying
    second = await app.post_signed(PATH, notice(attempt_id="leg-2", result="no_answer"))
    assert (first.status_code, again.status_code, second.status_code) == (202, 202, 202)
    assert first.json() == {"contact_id": contact_id, "duplicate": False} and again.json()["duplicate"] is True
    events = dialled(app)
    assert [(e.contact_id, e.agent_id, e.result) for e in events] == [
        (contact_id, "alice", DialResult.BUSY),
        (contact_id, "alice", DialResult.NO_ANSWER),
    ]
    ids = [env.id for _, _, env in app.events(CONTACTS) if isinstance(env.payload, AgentDialed)]
    assert len(set(ids)) == 2  # distinct event ids: the router does not drop the second as a duplicate


async def test_unsigned_unknown_or_bad_input_is_refused(intake: IntakeFactory) -> None:
    app = await intake(**SECRETS)
    await app.post_signed("/v1/contacts", contact_payload())
    unsigned = await app.client.post(PATH, json=notice())
    assert unsigned.status_code == 401
    assert (await app.post_signed(PATH, notice(external_id="never-seen"))).status_code == 404
    bad = await app.post_signed(PATH, notice(result="rang_forever"))
    assert bad.status_code == 422 and "result" in bad.text
    assert (await app.post_signed(PATH, notice(agent_id="has space"))).status_code == 422
    assert dialled(app) == []
