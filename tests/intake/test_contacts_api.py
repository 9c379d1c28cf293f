"""POST /v1/contacts and /v1/contacts/abandoned over HTTP against the real app, real embedded bus."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest

from services.intake.service import event_id_for
from shared.events import ContactAbandoned, ContactRequested, Intent, contact_id_for
from shared.topics import CONTACTS
from tests.intake.conftest import SECRET, IntakeFactory, contact_payload, sign

SECRETS = {"source_secrets": {"acme": SECRET}}


async def test_contact_is_accepted_enriched_and_published_keyed_by_routing_domain(intake: IntakeFactory) -> None:
    app = await intake(**SECRETS)
    resp = await app.post_signed("/v1/contacts", contact_payload())
    assert resp.status_code == 202, resp.text
    body = resp.json()
    expected_id = contact_id_for("default", "acme", "call-1")
    assert body == {
        "contact_id": expected_id,
        "duplicate": False,
        "intent": "cancellation",  # from the summary's keywords
        "expected_handling_seconds": 540,
        "within_business_hours": True,
    }
    [(topic, key, env)] = app.events()
    assert (topic, key) == (CONTACTS, "default/main")
    assert env.id == event_id_for(ContactRequested.event_type, expected_id)
    event = env.payload
    assert isinstance(event, ContactRequested)
    assert event.contact_id == expected_id
    assert event.customer.phone == "+4930901820"  # normalised to E.164
    assert event.intent is Intent.CANCELLATION
    assert event.customer_local_time is not None and event.customer_local_time.hour == 11  # Berlin
    assert event.within_business_hours is True
    assert event.received_at == app.clock()


async def test_same_source_and_external_id_is_a_duplicate_and_publishes_nothing(intake: IntakeFactory) -> None:
    app = await intake(**SECRETS)
    first = await app.post_signed("/v1/contacts", contact_payload())
    app.clock.now += timedelta(seconds=30)  # a telephony retry, freshly signed
    again = await app.post_signed("/v1/contacts", contact_payload(summary="different text this time"))
    assert first.status_code == again.status_code == 202
    assert again.json()["contact_id"] == first.json()["contact_id"]
    assert again.json()["duplicate"] is True
    assert len(app.events()) == 1
    other = await app.post_signed("/v1/contacts", contact_payload("call-2"))
    assert other.json()["duplicate"] is False and other.json()["contact_id"] != first.json()["contact_id"]
    assert len(app.events()) == 2


async def test_idempotency_key_header_is_honoured_and_refuses_a_different_payload(intake: IntakeFactory) -> None:
    app = await intake()
    headers = {"Idempotency-Key": '"4f1d7c1e-key"'}
    first = await app.client.post("/v1/contacts", json=contact_payload("a"), headers=headers)
    again = await app.client.post("/v1/contacts", json=contact_payload("a"), headers=headers)
    assert first.status_code == again.status_code == 202
    assert again.json() == {**first.json(), "duplicate": True}
    reused = await app.client.post("/v1/contacts", json=contact_payload("b"), headers=headers)
    assert reused.status_code == 422 and reused.json()["reason"] == "idempotency_key_reused"
    assert len(app.events()) == 1


async def test_concurrent_identical_requests_publish_once(intake: IntakeFactory) -> None:
    import asyncio

    app = await intake()
    results = await asyncio.gather(*(app.client.post("/v1/contacts", json=contact_payload()) for _ in range(8)))
    assert {r.status_code for r in results} == {202}
    assert sorted(r.json()["duplicate"] for r in results) == [False] + [True] * 7
    assert len({r.json()["contact_id"] for r in results}) == 1
    assert len(app.events()) == 1


# ------------------------------------------------------------------------------------ signatures


async def test_unsigned_or_badly_signed_requests_are_refused_with_401(intake: IntakeFactory) -> None:
    app = await intake(**SECRETS)
    body = json.dumps(contact_payload()).encode()
    ts = int(app.clock().timestamp())
    cases = {
        "signature_missing": {},
        "signature_mismatch": sign(body, ts, secret="not-the-secret"),
        "signature_malformed": {**sign(body, ts), "X-Switchboard-Timestamp": "soon"},
    }
    for reason, headers in cases.items():
        resp = await app.client.post(
            "/v1/contacts", content=body, headers={"content-type": "application/json", **headers}
        )
        assert resp.status_code == 401, (reason, resp.text)
        assert resp.json()["reason"] == reason
    tampered = body.replace(b"cust-42", b"cust-43")
    resp = await app.client.post(
        "/v1/contacts", content=tampered, headers={"content-type": "application/json", **sign(body, ts)}
    )
    assert resp.status_code == 401
    assert app.events() == []


async def test_replayed_request_outside_the_window_is_refused(intake: IntakeFactory) -> None:
    app = await intake(**SECRETS, signature_tolerance_seconds=300)
    body = json.dumps(contact_payload()).encode()
    captured = {"content-type": "application/json", **sign(body, int(app.clock().timestamp()))}
    app.clock.now += timedelta(minutes=10)
    resp = await app.client.post("/v1/contacts", content=body, headers=captured)
    assert resp.status_code == 401 and resp.json()["reason"] == "replay"
    assert app.events() == []


async def test_rejected_signature_is_logged_without_the_body(
    intake: IntakeFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    app = await intake(**SECRETS)
    resp = await app.client.post("/v1/contacts", json=contact_payload(summary="my secret medical history"))
    assert resp.status_code == 401
    logged = capsys.readouterr()
    text = logged.out + logged.err
    assert "intake.signature_rejected" in text
    assert "medical history" not in text


async def test_source_header_must_match_the_body_and_unknown_sources_can_be_refused(intake: IntakeFactory) -> None:
    app = await intake(**SECRETS, require_signatures=True)
    signed_as_acme = await app.post_signed(
        "/v1/contacts", contact_payload(source="globex"), **{"X-Switchboard-Source": "acme"}
    )
    assert signed_as_acme.status_code == 401
    unknown = await app.client.post("/v1/contacts", json=contact_payload(source="nobody"))
    assert unknown.status_code == 401 and unknown.json()["reason"] == "unknown_source"
    via_header = await app.post_signed("/v1/contacts", contact_payload(), **{"X-Switchboard-Source": "acme"})
    assert via_header.status_code == 202
    assert len(app.events()) == 1


# ---------------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("mutate", "loc"),
    [
        (lambda p: p.pop("external_id"), ["body", "external_id"]),
        (lambda p: p.update(channel="fax"), ["body", "channel"]),
        (lambda p: p["customer"].update(tier="platinum"), ["body", "customer", "tier"]),
        (lambda p: p["customer"].update(phone="030 901820"), ["body", "customer", "phone"]),
        (lambda p: p["customer"].update(phone="+49 1"), ["body", "customer", "phone"]),
        (lambda p: p["customer"].update(timezone="Mars/Olympus"), ["body", "customer", "timezone"]),
        (lambda p: p.update(intent="teleport"), ["body", "intent"]),
        (lambda p: p.update(ivr_selections="1"), ["body", "ivr_selections"]),
        (lambda p: p.update(callback_requested="perhaps"), ["body", "callback_requested"]),
        (
            lambda p: p.update(preferred_window={"start": "2026-11-25T10:00:00", "end": "2026-11-25T11:00:00Z"}),
            ["body", "preferred_window", "start"],
        ),
        (lambda p: p.update(unexpected="field"), ["body", "unexpected"]),
    ],
)
async def test_invalid_input_gets_422_with_the_field(intake: IntakeFactory, mutate, loc) -> None:  # type: ignore[no-untyped-def]
    app = await intake()
    payload = contact_payload()
    mutate(payload)
    resp = await app.client.post("/v1/contacts", json=payload)
    assert resp.status_code == 422, resp.text
    assert loc in [err["loc"] for err in resp.json()["detail"]], resp.json()
    assert app.events() == []


async def test_malformed_json_and_non_object_bodies_get_422(intake: IntakeFactory) -> None:
    app = await intake()
    for raw in (b"{not json", b"", b"[1, 2]", b"\xff\xfe", b"null"):
        resp = await app.client.post("/v1/contacts", content=raw, headers={"content-type": "application/json"})
        assert resp.status_code == 422, (raw, resp.text)
        assert resp.json()["detail"][0]["loc"][0] == "body"


async def test_wrong_content_type_gets_415(intake: IntakeFactory) -> None:
    app = await intake()
    body = json.dumps(contact_payload()).encode()
    for ctype in ("text/plain", "application/x-www-form-urlencoded", ""):
        resp = await app.client.post("/v1/contacts", content=body, headers={"content-type": ctype})
        assert resp.status_code == 415, ctype
    utf8 = {"content-type": "application/json; charset=utf-8"}
    ok = await app.client.post("/v1/contacts", content=body, headers=utf8)
    assert ok.status_code == 202


async def test_body_over_the_limit_gets_413_declared_or_streamed(intake: IntakeFactory) -> None:
    app = await intake(max_body_bytes=2048)
    big = json.dumps(contact_payload(summary="x" * 3000)).encode()
    resp = await app.client.post("/v1/contacts", content=big, headers={"content-type": "application/json"})
    assert resp.status_code == 413

    async def chunks():  # type: ignore[no-untyped-def]
        for i in range(0, len(big), 500):
            yield big[i : i + 500]

    streamed = await app.client.post("/v1/contacts", content=chunks(), headers={"content-type": "application/json"})
    assert "content-length" not in streamed.request.headers
    assert streamed.status_code == 413
    assert app.events() == []


async def test_metrics_count_received_accepted_duplicates_and_rejections(intake: IntakeFactory) -> None:
    app = await intake()

    def value(name: str, text: str) -> float:
        return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name))

    before = (await app.client.get("/metrics")).text
    await app.client.post("/v1/contacts", json=contact_payload("m1"))
    await app.client.post("/v1/contacts", json=contact_payload("m1"))
    await app.client.post("/v1/contacts", content=b"x", headers={"content-type": "text/plain"})
    after = (await app.client.get("/metrics")).text
    for name, delta in [
        ('switchboard_intake_received_total{endpoint="contacts"}', 3),
        ('switchboard_intake_accepted_total{endpoint="contacts"', 1),
        ('switchboard_intake_duplicates_total{endpoint="contacts"}', 1),
        ('switchboard_intake_rejected_total{endpoint="contacts",reason="unsupported_media_type"}', 1),
        ('switchboard_intake_publish_seconds_count{event="switchboard.contact.requested.v1"}', 1),
    ]:
        assert value(name, after) - value(name, before) == delta, name


# ------------------------------------------------------------------------------------ abandon


async def test_abandon_publishes_contact_abandoned_on_the_contacts_domain_once(intake: IntakeFactory) -> None:
    app = await intake(**SECRETS, sites={"sites": {"berlin": {}}})  # a configured site (issue 12)
    accepted = await app.post_signed("/v1/contacts", contact_payload(site="berlin"))
    contact_id = accepted.json()["contact_id"]
    notice = {"source": "acme", "external_id": "call-1"}
    first = await app.post_signed("/v1/contacts/abandoned", notice)
    again = await app.post_signed("/v1/contacts/abandoned", notice)
    assert first.status_code == again.status_code == 202
    assert first.json() == {"contact_id": contact_id, "duplicate": False}
    assert again.json()["duplicate"] is True
    events = app.events(CONTACTS)
    assert [e.type for _, _, e in events] == [ContactRequested.event_type, ContactAbandoned.event_type]
    assert {key for _, key, _ in events} == {"default/berlin"}  # same key: same partition, same order
    abandoned = events[1][2].payload
    assert isinstance(abandoned, ContactAbandoned) and abandoned.site == "berlin"


async def test_abandon_of_an_unknown_contact_is_404(intake: IntakeFactory) -> None:
    app = await intake(**SECRETS)
    resp = await app.post_signed("/v1/contacts/abandoned", {"source": "acme", "external_id": "never-seen"})
    assert resp.status_code == 404
    assert app.events() == []


async def test_refusals_before_any_endpoint_are_still_counted_at_the_edge(intake: IntakeFactory) -> None:
    """A NUL byte (refused by middleware) and an unknown path never reach an endpoint: without the edge
    counter they would be neither received nor rejected in /metrics. A refusal an endpoint counts itself
    is not counted twice."""
    app = await intake()

    def value(name: str, text: str) -> float:
        return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name))

    before = (await app.client.get("/metrics")).text
    nul = await app.client.post(
        "/v1/contacts", content=b'{"external_id": "a\\u0000b"}', headers={"content-type": "application/json"}
    )
    missing = await app.client.post("/v1/no-such-webhook", json={})
    typed = await app.client.post("/v1/contacts", content=b"x", headers={"content-type": "text/plain"})
    assert (nul.status_code, missing.status_code, typed.status_code) == (422, 404, 415)
    after = (await app.client.get("/metrics")).text
    for name, delta in [
        ('switchboard_intake_received_total{endpoint="edge"}', 2),
        ('switchboard_intake_rejected_total{endpoint="edge",reason="nul_bytes"}', 1),
        ('switchboard_intake_rejected_total{endpoint="edge",reason="not_found"}', 1),
        ('switchboard_intake_received_total{endpoint="contacts"}', 1),
        ('switchboard_intake_rejected_total{endpoint="contacts",reason="unsupported_media_type"}', 1),
    ]:
        assert value(name, after) - value(name, before) == delta, name
