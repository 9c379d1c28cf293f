"""Event contracts: every event survives the envelope, bad bytes are rejected with a reason."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared import topics
from shared.events import (
    EVENT_TYPES,
    ID_NAMESPACE,
    CallbackOrigin,
    CallbackRequested,
    Channel,
    ContactRequested,
    Customer,
    MalformedEvent,
    contact_id_for,
    decode_event,
    deterministic_id,
    encode_event,
    make_event,
)


def _contact(**kw: object) -> ContactRequested:
    base = dict(
        contact_id=contact_id_for("default", "twilio", "CA1"),
        source="twilio",
        external_id="CA1",
        channel=Channel.VOICE,
        customer=Customer(id="cust-1", phone="+4930123456", tier="vip"),
        site="berlin",
    )
    base.update(kw)
    return ContactRequested(**base)  # type: ignore[arg-type]


def test_round_trip_keeps_typed_payload_and_cloudevents_attributes() -> None:
    data = _contact()
    env = make_event(data, source="switchboard/intake", event_id="e-1")
    raw = json.loads(env.to_bytes())
    assert raw["specversion"] == "1.0"
    assert raw["type"] == "switchboard.contact.requested.v1"
    assert raw["id"] == "e-1" and raw["source"] == "switchboard/intake"
    assert raw["subject"] == data.contact_id
    assert raw["tenantid"] == "default" and raw["data"]["tenant_id"] == "default"
    assert raw["datacontenttype"] == "application/json"
    back = decode_event(env.to_bytes())
    assert back.payload == data
    assert back.time.tzinfo is not None


@given(
    summary=st.none() | st.text(max_size=40),
    external_id=st.text(min_size=1, max_size=20),
    name=st.none() | st.text(max_size=10),
    micros=st.integers(0, 999_999),
    offset_minutes=st.sampled_from([0, 60, -330]),
)
def test_encode_event_gives_the_bytes_of_the_envelope_model(
    summary: str | None, external_id: str, name: str | None, micros: int, offset_minutes: int
) -> None:
    from datetime import timedelta, timezone

    at = datetime(2026, 11, 25, 10, 0, 0, micros, tzinfo=timezone(timedelta(minutes=offset_minutes)))
    data = _contact(
        summary=summary,
        external_id=external_id,
        customer=Customer(id="c", phone="+4930123456", name=name),
        received_at=at,
    )
    assert (
        encode_event(data, source="switchboard/intake", event_id="e-1", time=at)
        == make_event(data, source="switchboard/intake", event_id="e-1", time=at).to_bytes()
    )


def test_encode_event_without_a_subject_and_with_a_fresh_id() -> None:
    data = CallbackRequested.model_validate(
        {
            "request_id": "r-1",
            "customer": {"id": "c", "phone": "+4930123456"},
            "origin": CallbackOrigin.WEB_FORM,
            "requested_at": datetime(2026, 11, 25, 10, tzinfo=UTC),
        }
    )
    raw = encode_event(data, source="s")
    env = decode_event(raw)
    assert env.payload == data
    assert raw == make_event(data, source="s", event_id=env.id, time=env.time).to_bytes()


def test_every_event_type_is_versioned_and_has_a_topic() -> None:
    for event_type, cls in EVENT_TYPES.items():
        assert event_type.startswith("switchboard.") and event_type.endswith(".v1")
        assert "tenant_id" in cls.model_fields
        assert topics._TOPIC_OF[cls] in topics.ALL_TOPICS


def test_contact_id_is_deterministic_per_tenant_source_and_external_id() -> None:
    a = contact_id_for("default", "twilio", "CA1")
    assert a == contact_id_for("default", "twilio", "CA1")
    assert a != contact_id_for("default", "twilio", "CA2")
    assert a != contact_id_for("default", "genesys", "CA1")
    assert a != contact_id_for("acme", "twilio", "CA1")


@given(st.lists(st.text(st.characters(exclude_categories=["Cs"])), min_size=1, max_size=5))
def test_deterministic_ids_are_the_uuid5_they_always_were(parts: list[str]) -> None:
    # Ids already stored and published must keep matching: the fast path is exactly uuid5.
    assert deterministic_id(*parts) == str(uuid.uuid5(ID_NAMESPACE, "\x1f".join(parts)))


def test_keys_route_contacts_by_domain_and_callbacks_by_customer() -> None:
    assert topics.route(_contact()) == (topics.CONTACTS, "default/berlin")
    cb = CallbackRequested(
        request_id="r1", customer=Customer(id="cust-9"), origin=CallbackOrigin.WEB_FORM, site="berlin"
    )
    assert topics.route(cb) == (topics.CALLBACKS, "default/cust-9")
    assert topics.dlq(topics.CONTACTS) == "contacts.dlq"


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"\xff\xfe not json", "not JSON"),
        (b"[1, 2]", "not a JSON object"),
        (b'{"id": "x"}', "not a CloudEvents"),
        (
            json.dumps(
                {
                    "specversion": "1.0",
                    "id": "x",
                    "source": "s",
                    "type": "switchboard.nope.v1",
                    "time": datetime.now(UTC).isoformat(),
                    "data": {},
                }
            ).encode(),
            "unknown event type",
        ),
        (
            json.dumps(
                {
                    "specversion": "1.0",
                    "id": "x",
                    "source": "s",
                    "type": "switchboard.contact.requested.v1",
                    "time": datetime.now(UTC).isoformat(),
                    "data": {"contact_id": "c"},
                }
            ).encode(),
            "invalid switchboard.contact.requested.v1 payload",
        ),
        (
            json.dumps(
                {
                    "specversion": "0.3",
                    "id": "x",
                    "source": "s",
                    "type": "switchboard.contact.requested.v1",
                    "time": datetime.now(UTC).isoformat(),
                    "data": {},
                }
            ).encode(),
            "not a CloudEvents",
        ),
    ],
)
def test_malformed_events_are_rejected_with_the_reason(raw: bytes, reason: str) -> None:
    with pytest.raises(MalformedEvent, match=reason):
        decode_event(raw)


def test_additive_fields_from_a_newer_producer_are_tolerated() -> None:
    """Within a version only additive changes are allowed, so an older consumer must accept them."""
    data = _contact()
    newer = json.loads(make_event(data, source="t").to_bytes())
    newer["data"]["sentiment"] = "angry"
    assert decode_event(json.dumps(newer).encode()).payload == data


_RECEIVED = datetime(2026, 11, 25, 9, 59, tzinfo=UTC)


def _envelope_json(**changes: object) -> bytes:
    data = _contact(received_at=_RECEIVED)
    obj = json.loads(make_event(data, source="switchboard/intake", event_id="e-1").to_bytes())
    obj.update(changes)
    return json.dumps({k: v for k, v in obj.items() if v is not None}).encode()


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"id": ""}, "id"),
        ({"source": ""}, "source"),
        ({"time": "2026-11-25T10:00:00"}, "RFC 3339"),  # naive
        ({"time": "2026-11-25T10:00:00.123456"}, "RFC 3339"),
        ({"time": "2026-11-25 10:00:00Z"}, "RFC 3339"),
        ({"time": "2026-11-25T10:00:00+0100"}, "RFC 3339"),
        ({"time": "2026-11-25"}, "RFC 3339"),
        ({"time": 1795600000}, "RFC 3339"),
        ({"time": ""}, "RFC 3339"),
        ({"datacontenttype": "text/plain"}, "datacontenttype"),
        ({"datacontenttype": "application/xml; charset=utf-8"}, "datacontenttype"),
    ],
)
def test_cloudevents_attributes_are_validated_strictly(changes: dict[str, object], reason: str) -> None:
    with pytest.raises(MalformedEvent, match=reason):
        decode_event(_envelope_json(**changes))


@pytest.mark.parametrize(
    "changes",
    [
        {"time": "2026-11-25T10:00:00Z"},
        {"time": "2026-11-25t10:00:00z"},
        {"time": "2026-11-25T10:00:00.123456789+05:30"},
        {"time": "2026-11-25T10:00:00-00:00"},
        {"datacontenttype": "application/json; charset=utf-8"},
        {"datacontenttype": "Application/JSON;charset=UTF-8"},
        {"datacontenttype": None},  # absent: JSON (CloudEvents JSON format)
    ],
)
def test_valid_variants_of_time_and_datacontenttype_are_accepted(changes: dict[str, object]) -> None:
    env = decode_event(_envelope_json(**changes))
    assert env.payload == _contact(received_at=_RECEIVED)
    assert env.time.tzinfo is not None


def test_an_empty_subject_reads_as_absent_and_is_never_written() -> None:
    assert decode_event(_envelope_json(subject="")).subject is None
    data = _contact(contact_id="")
    assert "subject" not in json.loads(make_event(data, source="s").to_bytes())
    assert "subject" not in json.loads(encode_event(data, source="s"))


def test_producers_refuse_naive_times_and_empty_ids() -> None:
    naive = datetime(2026, 11, 25, 10, 0)
    with pytest.raises(ValueError, match="timezone"):
        encode_event(_contact(), source="s", time=naive)
    with pytest.raises(ValueError, match="timezone"):
        make_event(_contact(), source="s", time=naive)
    with pytest.raises(ValueError, match="id"):
        encode_event(_contact(), source="s", event_id="")
    with pytest.raises(ValueError):
        make_event(_contact(), source="s", event_id="")
