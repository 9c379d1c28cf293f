"""Nothing lost, nothing a client sends is a 500: bus down -> 503 (never 202), fuzzed input -> 4xx."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.intake.app import create_app
from services.intake.settings import IntakeSettings
from shared.bus.embedded import EmbeddedBus
from shared.settings import CommonSettings
from tests.intake.conftest import Clock, IntakeFactory, bus_events, contact_payload


class DiskFailingEmbeddedBus(EmbeddedBus):
    """The real embedded bus whose SQLite writes fail while ``failing`` is set (a full or broken disk).

    Only the innermost write is replaced; batching, error mapping (-> BusUnavailable) and acks are the
    real bus's code.
    """

    failing = False

    def _write_batch(self, batch: Any) -> None:
        if self.failing:
            raise sqlite3.OperationalError("disk I/O error")
        super()._write_batch(batch)


async def test_bus_write_failure_is_503_with_retry_after_and_nothing_is_remembered(
    intake: IntakeFactory, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    bus = DiskFailingEmbeddedBus(data / "bus.sqlite3")
    app = await intake(bus=bus, data_dir=data, retry_after_seconds=7)
    bus.failing = True
    down = await app.client.post("/v1/contacts", json=contact_payload())
    assert down.status_code == 503
    assert down.headers["retry-after"] == "7"
    assert down.json()["reason"] == "bus_unavailable"
    call = {"CallSid": "CA1", "From": "+4930901820"}
    twilio_down = await app.client.post("/v1/webhooks/twilio/voice?ivr=none", data=call)
    assert twilio_down.status_code == 503  # Twilio retries / falls back; we never say "queued"
    assert app.events() == []

    bus.failing = False
    retry = await app.client.post("/v1/contacts", json=contact_payload())
    assert retry.status_code == 202
    assert retry.json()["duplicate"] is False  # the 503 was not recorded as seen
    assert len(app.events()) == 1


async def test_bus_locked_beyond_the_publish_timeout_is_503_and_the_retry_keeps_the_event_id(
    intake: IntakeFactory, tmp_path: Path
) -> None:
    """Another process holds the bus file's write lock: the real bus cannot commit in time."""
    data = tmp_path / "data"
    app = await intake(data_dir=data, publish_timeout_seconds=0.3)
    assert (await app.client.post("/v1/contacts", json=contact_payload("warm-up"))).status_code == 202
    locker = sqlite3.connect(data / "bus.sqlite3", timeout=1, isolation_level=None)
    locker.execute("BEGIN EXCLUSIVE")
    try:
        down = await app.client.post("/v1/contacts", json=contact_payload())
        assert down.status_code == 503 and "retry-after" in down.headers
    finally:
        locker.execute("ROLLBACK")
        locker.close()
    # The write that timed out may still land once the lock is gone; the client's retry is then
    # published again under the *same* event id, which consumers drop (inbox dedupe).
    retry = await app.client.post("/v1/contacts", json=contact_payload())
    assert retry.status_code == 202
    await asyncio.sleep(0)  # let a late write finish its batch
    ids = [env.id for _, _, env in app.events() if env.subject == retry.json()["contact_id"]]
    assert ids and len(set(ids)) == 1


async def test_idempotency_store_unreadable_is_503_not_a_guess(intake: IntakeFactory, tmp_path: Path) -> None:
    data = tmp_path / "data"
    app = await intake(data_dir=data)
    with sqlite3.connect(data / "intake.sqlite3") as conn:
        conn.execute("ALTER TABLE intake_requests RENAME TO intake_requests_gone")
    resp = await app.client.post("/v1/contacts", json=contact_payload())
    assert resp.status_code == 503 and resp.json()["reason"] == "store_unavailable"
    assert app.events() == []


async def test_readiness_reports_the_bus_and_the_idempotency_store(intake: IntakeFactory, tmp_path: Path) -> None:
    data = tmp_path / "data"
    bus = DiskFailingEmbeddedBus(data / "bus.sqlite3")
    app = await intake(bus=bus, data_dir=data)
    ready = await app.client.get("/readyz")
    assert ready.status_code == 200
    # The checks now probe the write path (issue 13): disk and the outcome of recent requests too.
    assert ready.json()["checks"] == {
        "bus": True,
        "database": True,
        "idempotency_store": True,
        "disk": True,
        "recent_requests": True,
    }
    await bus.stop()  # the bus is gone: not ready, so a load balancer stops sending webhooks here
    not_ready = await app.client.get("/readyz")
    assert not_ready.status_code == 503 and not_ready.json()["checks"]["bus"] is False


# ------------------------------------------------------------------------------- fuzzed input


@pytest.fixture
def sync_client(tmp_path: Path) -> Iterator[TestClient]:
    app = create_app(
        IntakeSettings(
            source_secrets={"signed": "x"},
            twilio_auth_token=None,
            max_body_bytes=4096,
            listen_host="127.0.0.1",
            rate_limits_enabled=False,
        ),
        CommonSettings(data_dir=tmp_path / "fuzz", log_json=False, log_level="ERROR"),
        clock=Clock(),
    )
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=12,
)


def _near_valid(field_path: list[str], value: Any) -> bytes:
    payload: dict[str, Any] = contact_payload()
    target = payload
    for name in field_path[:-1]:
        target = target[name]
    target[field_path[-1]] = value
    return json.dumps(payload).encode()


near_valid_bodies = st.builds(
    _near_valid,
    st.sampled_from(
        [
            ["external_id"],
            ["source"],
            ["channel"],
            ["customer"],
            ["customer", "phone"],
            ["customer", "timezone"],
            ["customer", "tier"],
            ["intent"],
            ["ivr_selections"],
            ["preferred_window"],
            ["summary"],
            ["site"],
        ]
    ),
    json_values,
)
bodies = st.one_of(st.binary(max_size=200), json_values.map(lambda v: json.dumps(v).encode()), near_valid_bodies)
paths = st.sampled_from(
    [
        "/v1/contacts",
        "/v1/contacts/abandoned",
        "/v1/callback-requests",
        "/v1/webhooks/twilio/voice",
        "/v1/webhooks/twilio/voice?ivr=menu",
        "/v1/webhooks/twilio/queue-result",
    ]
)
content_types = st.sampled_from(
    [
        "application/json",
        "application/x-www-form-urlencoded",
        "text/plain",
        "",
        "application/json; charset=latin-1",
        "multipart/form-data; boundary=x",
        "application/vnd.api+json",
    ]
)
header_values = st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=40)
extra_headers = st.dictionaries(
    st.sampled_from(
        [
            "X-Switchboard-Timestamp",
            "X-Switchboard-Signature",
            "X-Switchboard-Source",
            "Idempotency-Key",
            "X-Twilio-Signature",
            "X-Twilio-Webhooks-Signature-Settings",
        ]
    ),
    header_values,
    max_size=3,
)
_lock = threading.Lock()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(path=paths, ctype=content_types, body=bodies, headers=extra_headers)
def test_no_client_input_produces_a_server_error(
    sync_client: TestClient, path: str, ctype: str, body: bytes, headers: dict[str, str]
) -> None:
    with _lock:
        resp = sync_client.post(path, content=body, headers={"content-type": ctype, **headers})
    assert resp.status_code < 500, (resp.status_code, resp.text)
    assert resp.status_code in (200, 202, 400, 401, 404, 413, 415, 422), resp.status_code


def test_fuzzing_also_exercised_the_accept_path(tmp_path: Path) -> None:
    """Guard for the fuzz test above: valid bodies do get through the same client setup."""
    settings = IntakeSettings(listen_host="127.0.0.1")
    app = create_app(settings, CommonSettings(data_dir=tmp_path / "d", log_json=False), clock=Clock())
    with TestClient(app) as client:
        resp = client.post("/v1/contacts", json=contact_payload())
    assert resp.status_code == 202
    assert len(bus_events(tmp_path / "d")) == 1
