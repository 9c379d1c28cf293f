"""CloudEvents conformance, with the official CloudEvents Python SDK (PyPI ``cloudevents``) as the oracle.

* Records the project writes are read by the SDK's Kafka structured-mode conversion, after the protocol
  binding's mode rule (``content-type`` prefixed ``application/cloudevents``: structured, else binary) that a
  standard receiver applies: on the embedded bus (its SQLite log) and on real Kafka (a plain aiokafka
  consumer), raw, not through the project's own reader.
* Records the SDK writes (``to_structured``) are accepted by the project's parser and delivered by both
  buses; what the SDK refuses, the project refuses too; binary mode goes to the DLQ with the reason.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from cloudevents.core.base import BaseCloudEvent
from cloudevents.core.bindings import kafka as ce_kafka
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent

from shared.bus.base import DLQ_ERROR
from shared.events import (
    STRUCTURED_HEADERS,
    Envelope,
    EventData,
    MalformedEvent,
    decode_record,
    encode_event,
    make_event,
    schema_url,
)
from shared.topics import ALL_TOPICS, route
from tests.contract.samples import sample_events
from tests.contract.support import WAIT, BusHarness, Collector, header

FORMAT = JSONFormat()
SDK_SOURCE = "urn:example:cloudevents-sdk"


def sdk_read(headers: Sequence[tuple[str, bytes]], key: str | bytes | None, value: bytes) -> BaseCloudEvent:
    """What a standard receiver makes of a Kafka record (CloudEvents Kafka protocol binding, section 3)."""
    content_type = next((v.decode() for k, v in headers if k.lower() == "content-type"), None)
    assert content_type is not None, "no content-type header: a receiver would take the record for binary mode"
    assert content_type.lower().startswith("application/cloudevents"), f"binary mode: {content_type}"
    assert content_type.split(";")[0].strip().lower() == FORMAT.get_content_type()
    return ce_kafka.from_structured(ce_kafka.KafkaMessage(headers=dict(headers), key=key, value=value), FORMAT)


def assert_same(sdk_event: BaseCloudEvent, envelope: Envelope, data: EventData) -> None:
    assert isinstance(sdk_event, CloudEvent)
    assert sdk_event.get_specversion() == "1.0"
    assert sdk_event.get_id() == envelope.id
    assert sdk_event.get_source() == envelope.source
    assert sdk_event.get_type() == data.event_type
    assert sdk_event.get_time() == envelope.time
    assert sdk_event.get_subject() == (data.subject() or None)
    assert sdk_event.get_datacontenttype() == "application/json"
    assert sdk_event.get_dataschema() == schema_url(data.event_type)
    assert sdk_event.get_extension("tenantid") == data.tenant_id
    assert sdk_event.get_data() == data.model_dump(mode="json")


def sdk_event(data: EventData, datacontenttype: str | None = "application/json", **attributes: Any) -> CloudEvent:
    attrs: dict[str, Any] = {
        "type": data.event_type,
        "source": SDK_SOURCE,
        "dataschema": schema_url(data.event_type),
        "tenantid": data.tenant_id,
        **attributes,
    }
    if data.subject():
        attrs["subject"] = data.subject()
    if datacontenttype is not None:
        attrs["datacontenttype"] = datacontenttype
    return CloudEvent(attrs, data.model_dump(mode="json"))


def sdk_structured(event: BaseCloudEvent, key: str) -> ce_kafka.KafkaMessage:
    return ce_kafka.to_structured(event, FORMAT, key_mapper=lambda _event: key)


# ------------------------------------------------------------------------------------- the parser


@pytest.mark.parametrize("full", [True, False], ids=["every-field", "required-fields"])
def test_every_event_the_project_encodes_is_read_by_the_sdk(full: bool) -> None:
    at = datetime(2026, 3, 2, 10, 0, 0, 5, tzinfo=timezone(timedelta(hours=5, minutes=30)))
    for data in sample_events(full):
        for value in (
            encode_event(data, source="switchboard/intake", event_id=f"e-{data.event_type}", time=at),
            make_event(data, source="switchboard/intake", event_id=f"e-{data.event_type}", time=at).to_bytes(),
        ):
            envelope = decode_record(value, STRUCTURED_HEADERS)
            assert_same(sdk_read(STRUCTURED_HEADERS, route(data)[1], value), envelope, data)
            assert envelope.time == at


@pytest.mark.parametrize(
    "datacontenttype",
    # Not "APPLICATION/JSON": the SDK matches JSON media types case-sensitively and would write data as a Python
    # repr string (tests/shared/test_events.py checks the project's case-insensitive comparison on its own).
    ["application/json", "application/json; charset=utf-8", "application/json;charset=UTF-8", None],
)
def test_every_event_the_sdk_writes_is_accepted_by_the_project(datacontenttype: str | None) -> None:
    for data in sample_events():
        event = sdk_event(data, datacontenttype)
        message = sdk_structured(event, route(data)[1])
        assert message.headers == {"content-type": b"application/cloudevents+json"}
        envelope = decode_record(message.value, list(message.headers.items()))
        assert envelope.payload == data
        assert envelope.id == event.get_id() and envelope.time == event.get_time()
        assert envelope.source == SDK_SOURCE and envelope.subject == (data.subject() or None)


def _valid() -> dict[str, Any]:
    data = sample_events()[0]
    return json.loads(make_event(data, source="switchboard/intake").to_bytes())


@pytest.mark.parametrize(
    ("attribute", "value"),
    [
        ("id", ""),
        ("source", ""),
        ("type", ""),
        ("time", "2026-03-02T09:30:15"),  # naive: no offset
        ("time", "2026-03-02T09:30:15.5"),
        ("time", "2026-03-02"),
        ("datacontenttype", ""),
    ],
)
def test_what_the_sdk_refuses_the_project_refuses(attribute: str, value: str) -> None:
    bad = json.dumps({**_valid(), attribute: value}).encode()
    with pytest.raises(Exception):  # noqa: B017 - the SDK raises its own validation errors or ValueError
        ce_kafka.from_structured(ce_kafka.KafkaMessage(dict(STRUCTURED_HEADERS), None, bad), FORMAT)
    with pytest.raises(MalformedEvent):
        decode_record(bad, STRUCTURED_HEADERS)


def test_headers_decide_the_content_mode() -> None:
    value = make_event(sample_events()[0], source="switchboard/intake").to_bytes()
    # Structured mode, whatever the parameters and case of the media type.
    for content_type in (b"application/cloudevents+json", b"Application/CloudEvents+JSON; charset=UTF-8"):
        assert decode_record(value, [("content-type", content_type)]).id
    # Records written before the header existed: read as structured.
    assert decode_record(value, ()).id == decode_record(value, [("x-replayed-from", b"contacts.dlq/0:1")]).id
    # The content-type decides: stray ce_* headers on a structured record do not make it binary.
    assert decode_record(value, [("ce_id", b"other"), *STRUCTURED_HEADERS]).id == json.loads(value)["id"]
    # Binary mode (the SDK's own binary conversion) and other formats: refused, with the reason.
    binary = ce_kafka.to_binary(sdk_event(sample_events()[0]), FORMAT)
    with pytest.raises(MalformedEvent, match="binary"):
        decode_record(binary.value, list(binary.headers.items()))
    with pytest.raises(MalformedEvent, match="binary"):
        decode_record(value, [("ce_id", b"x"), ("ce_specversion", b"1.0")])
    for content_type in (b"application/json", b"application/cloudevents-batch+json", b"application/cloudevents+avro"):
        with pytest.raises(MalformedEvent, match="not a structured-mode CloudEvent"):
            decode_record(value, [("content-type", content_type)])


# ------------------------------------------------------------------------------------------ the buses


async def test_records_the_bus_writes_are_structured_mode_cloudevents(harness: BusHarness) -> None:
    """Every path a service publishes by (emit/publish, publish_many as intake does, publish_raw as the outbox
    relay does) writes a record a standard CloudEvents receiver reads: checked on the raw stored record."""
    bus = await harness.new_bus()
    emitted: dict[str, tuple[Envelope, EventData]] = {}
    events = sample_events()
    for data in events:
        envelope = await bus.emit(data, source="switchboard/contract")
        emitted[envelope.id] = (envelope, data)
    batch = []
    for n, data in enumerate(events[:3]):
        topic, key = route(data)
        value = encode_event(data, source="switchboard/intake", event_id=f"batch-{n}-{harness.unique('e')}")
        batch.append((topic, key, value))
        emitted[json.loads(value)["id"]] = (decode_record(value), data)
    assert await bus.publish_many(batch) == [None] * len(batch)
    data = events[-1]
    relayed = make_event(data, source="switchboard/callback")
    await bus.publish_raw(*route(data), relayed.to_bytes())
    emitted[relayed.id] = (relayed, data)

    seen = set()
    for topic in ALL_TOPICS:
        for record in await harness.raw_records(topic):
            envelope, data = emitted[json.loads(record.value)["id"]]
            assert route(data) == (topic, record.key)
            assert_same(sdk_read(record.headers, record.key, record.value), envelope, data)
            seen.add(envelope.id)
    assert seen == set(emitted)


async def _produce_foreign(harness: BusHarness, records: list[tuple[str, str, bytes, list[tuple[str, bytes]]]]) -> None:
    """Write records as another system would. Kafka: a plain aiokafka producer, not the project's bus."""
    if harness.kind != "kafka":
        bus = await harness.new_bus()
        for topic, key, value, headers in records:
            await bus.publish_raw(topic, key, value, headers)
        return
    producer = AIOKafkaProducer(bootstrap_servers=harness.config["bootstrap_servers"], acks="all")
    await producer.start()
    try:
        for topic, key, value, headers in records:
            await producer.send_and_wait(
                harness.config["topic_prefix"] + topic, value=value, key=key.encode(), headers=headers
            )
    finally:
        await producer.stop()


async def test_events_the_sdk_writes_are_delivered_and_binary_mode_is_dead_lettered(harness: BusHarness) -> None:
    bus = await harness.new_bus()
    got = Collector()
    sub = await bus.subscribe(list(ALL_TOPICS), harness.unique("g"), got)
    async with asyncio.timeout(WAIT):
        await sub.ready.wait()

    expected: dict[str, EventData] = {}
    records: list[tuple[str, str, bytes, list[tuple[str, bytes]]]] = []
    contenttypes = ["application/json", "application/json; charset=utf-8", None]
    for n, data in enumerate(sample_events()):
        event = sdk_event(data, contenttypes[n % len(contenttypes)])
        message = sdk_structured(event, route(data)[1])
        records.append((route(data)[0], route(data)[1], message.value, list(message.headers.items())))
        expected[event.get_id()] = data
    # A record from before the content-type header: still read.
    legacy = sample_events()[0]
    old = make_event(legacy, source="switchboard/intake")
    records.append((*route(legacy), old.to_bytes(), []))
    expected[old.id] = legacy

    # Refused, each with its reason, and dead-lettered with the original headers.
    poison = sample_events()[1]
    topic, key = route(poison)
    binary = ce_kafka.to_binary(sdk_event(poison), FORMAT)
    naive = json.loads(make_event(poison, source="switchboard/intake").to_bytes())
    naive["time"] = "2026-03-02T09:30:15"
    no_id = {**naive, "time": "2026-03-02T09:30:15Z", "id": ""}
    refused = [
        (topic, key, binary.value, list(binary.headers.items())),
        (topic, key, json.dumps(naive).encode(), list(STRUCTURED_HEADERS)),
        (topic, key, json.dumps(no_id).encode(), list(STRUCTURED_HEADERS)),
    ]
    await _produce_foreign(harness, records + refused)

    await got.wait_for(lambda ids: set(expected) <= set(ids))
    for envelope, _record in got.deliveries:
        assert envelope.payload == expected[envelope.id]
    async with asyncio.timeout(WAIT):
        while len(dead := await harness.dead_letters(topic)) < len(refused):
            await asyncio.sleep(0.05)
    assert [r.value for r in dead] == [value for _, _, value, _ in refused]
    assert "binary content mode is not accepted" in (header(dead[0], DLQ_ERROR) or "")
    assert header(dead[0], "ce_id") == binary.headers["ce_id"].decode()
    assert "RFC 3339" in (header(dead[1], DLQ_ERROR) or "")
    assert header(dead[1], "content-type") == "application/cloudevents+json"
    assert "id" in (header(dead[2], DLQ_ERROR) or "")
    assert len(got.deliveries) == len(expected)


def test_sdk_times_are_rfc3339() -> None:
    """The SDK's default time (now, UTC) is a time the project accepts."""
    data = sample_events()[0]
    message = sdk_structured(
        CloudEvent({"type": data.event_type, "source": SDK_SOURCE}, data.model_dump(mode="json")), "k"
    )
    assert decode_record(message.value, list(message.headers.items())).time.tzinfo is not None
    assert abs(decode_record(message.value).time - datetime.now(UTC)) < timedelta(minutes=1)
