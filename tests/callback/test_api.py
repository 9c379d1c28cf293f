"""The HTTP API in-process (httpx ASGI transport) with the app's real lifespan: migrations, the
embedded bus in a temporary directory, the consumer and the outbox relay; the clock is injected."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from services.callback.app import create_app
from services.callback.clock import ManualClock
from services.callback.settings import CallbackSettings
from shared.bus.base import Record
from shared.events import AgentStatus, Envelope
from shared.settings import CommonSettings
from shared.topics import CALLBACKS, CONTACTS
from tests.callback.conftest import SITES, berlin
from tests.callback.helpers import agent_status, requested
from tests.conftest import ADMIN_HEADERS

pytestmark = pytest.mark.asyncio

CUSTOMER = {"id": "cust-1", "phone": "+498912345", "timezone": "Europe/Berlin"}


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(berlin(2026, 3, 25, 10, 0))


@pytest.fixture
async def app(tmp_path: Path, clock: ManualClock) -> AsyncIterator[FastAPI]:
    common = CommonSettings(data_dir=tmp_path, log_json=False, log_level="WARNING")
    settings = CallbackSettings(sites_json=json.dumps(SITES), scheduler_enabled=False)
    application = create_app(common, settings, clock=clock)
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    # These tests are about behaviour, as the operator; who may do what is tests/security's business.
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://callback", headers=ADMIN_HEADERS
    ) as c:
        yield c


async def eventually(check, timeout: float = 10.0):  # type: ignore[no-untyped-def]
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        result = await check()
        if result or asyncio.get_running_loop().time() > deadline:
            return result
        await asyncio.sleep(0.02)


async def test_create_merge_and_idempotency(client: httpx.AsyncClient) -> None:
    r = await client.post("/v1/callbacks", json={"customer": CUSTOMER, "reason": "billing question"})
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["status"] == "pending" and body["deadline"] == "2026-03-25T17:00:00Z"
    assert body["promise_text"] == "We will call you back today by 18:00."
    again = await client.post("/v1/callbacks", json={"customer": CUSTOMER}, headers={"Idempotency-Key": "k-1"})
    assert again.status_code == 200 and again.json()["id"] == body["id"]  # merged into the open one
    assert again.json()["merged_requests"] == 2
    retry = await client.post("/v1/callbacks", json={"customer": CUSTOMER}, headers={"Idempotency-Key": "k-1"})
    assert retry.status_code == 200 and retry.json()["merged_requests"] == 2  # the same request: no effect


async def test_next_business_day_promise_in_the_customers_clock(client: httpx.AsyncClient, clock: ManualClock) -> None:
    clock.set(berlin(2026, 3, 27, 17, 45))  # Friday, too close to closing
    r = await client.post("/v1/callbacks", json={"customer": {**CUSTOMER, "timezone": "Europe/London"}, "site": "main"})
    body = r.json()
    assert body["next_business_day"] and body["deadline"] == "2026-03-28T12:00:00Z"  # Saturday 13:00 Munich
    assert body["promise_day"] == "2026-03-28"
    assert body["promise_text"] == (
        "It is too late to call you back today. We will call you back on Saturday 28 March by 12:00 "
        "(Europe/London time)."
    )


@pytest.mark.parametrize(
    "payload, field",
    [
        ({"customer": {**CUSTOMER, "timezone": "Mars/Olympus"}}, ["body", "customer", "timezone"]),
        (
            {"customer": CUSTOMER, "preferred_window": {"start": "2026-03-25T14:00:00", "end": "2026-03-25T15:00:00Z"}},
            ["body", "preferred_window", "start"],
        ),
        (
            {
                "customer": CUSTOMER,
                "preferred_window": {"start": "2026-03-25T15:00:00Z", "end": "2026-03-25T14:00:00Z"},
            },
            ["body", "preferred_window"],
        ),
        ({"customer": {"phone": "+49"}}, ["body", "customer", "id"]),
        ({"customer": CUSTOMER, "origin": "carrier_pigeon"}, ["body", "origin"]),
        ({"customer": CUSTOMER, "surprise": 1}, ["body", "surprise"]),
    ],
)
async def test_bad_input_is_422_with_field_messages(
    client: httpx.AsyncClient, payload: dict[str, object], field: list[str]
) -> None:
    r = await client.post("/v1/callbacks", json=payload)
    assert r.status_code == 422
    errors = r.json()["detail"]
    assert any(e["loc"][: len(field)] == field and e["msg"] for e in errors), errors


async def test_attempts_history_and_idempotency(client: httpx.AsyncClient, clock: ManualClock) -> None:
    cid = (await client.post("/v1/callbacks", json={"customer": CUSTOMER})).json()["id"]
    clock.advance(timedelta(minutes=5))
    headers = {"Idempotency-Key": "attempt-1"}
    r = await client.post(
        f"/v1/callbacks/{cid}/attempts", json={"result": "no_answer", "agent_id": "a1"}, headers=headers
    )
    assert r.status_code == 200, r.text
    r = await client.post(
        f"/v1/callbacks/{cid}/attempts", json={"result": "no_answer", "agent_id": "a1"}, headers=headers
    )
    body = r.json()
    assert body["attempts"] == 1 and len(body["attempt_history"]) == 1
    assert body["status"] == "pending" and body["not_before"] == "2026-03-25T09:35:00Z"  # 30 min spacing
    # Inside the retry spacing: refused with when the next attempt is allowed (issue 12).
    clock.advance(timedelta(minutes=10))
    r = await client.post(f"/v1/callbacks/{cid}/attempts", json={"result": "reached", "agent_id": "a2"})
    assert r.status_code == 409, r.text
    assert r.json()["detail"]["reason"] == "retry_spacing"
    assert r.json()["detail"]["retry_at"] == "2026-03-25T09:35:00+00:00" and r.headers["Retry-After"] == "1200"
    clock.advance(timedelta(minutes=20))
    r = await client.post(f"/v1/callbacks/{cid}/attempts", json={"result": "reached", "agent_id": "a2"})
    body = r.json()
    assert body["status"] == "fulfilled" and body["fulfilled_by_agent_id"] == "a2"
    assert [a["result"] for a in body["attempt_history"]] == ["no_answer", "reached"]
    # The promise has ended: a further attempt is refused, not recorded.
    r = await client.post(f"/v1/callbacks/{cid}/attempts", json={"result": "no_answer"})
    assert r.status_code == 409 and r.json()["detail"]["reason"] == "callback_closed"
    assert len((await client.get(f"/v1/callbacks/{cid}")).json()["attempt_history"]) == 2
    assert (await client.post(f"/v1/callbacks/{cid}/attempts", json={"result": "maybe"})).status_code == 422
    assert (await client.post("/v1/callbacks/nope/attempts", json={"result": "reached"})).status_code == 404
    assert (await client.get("/v1/callbacks/nope")).status_code == 404


async def test_an_attempt_dated_before_the_request_is_422_not_recorded(client: httpx.AsyncClient) -> None:
    cid = (await client.post("/v1/callbacks", json={"customer": CUSTOMER})).json()["id"]
    r = await client.post(f"/v1/callbacks/{cid}/attempts", json={"result": "busy", "at": "2000-01-01T00:00:00Z"})
    assert r.status_code == 422
    assert r.json()["detail"][0]["loc"] == ["body", "at"]
    detail = (await client.get(f"/v1/callbacks/{cid}")).json()
    assert detail["attempts"] == 0 and detail["attempt_history"] == []


async def test_list_filters_and_summary(client: httpx.AsyncClient, clock: ManualClock, app: FastAPI) -> None:
    ids = {}
    for cust, site, agent in (("c1", "main", None), ("c2", "main", "a7"), ("c3", "nyc", None)):
        r = await client.post(
            "/v1/callbacks", json={"customer": {"id": cust}, "site": site, "promised_by_agent_id": agent}
        )
        ids[cust] = r.json()["id"]
    await client.post(f"/v1/callbacks/{ids['c1']}/attempts", json={"result": "reached"})
    await client.post(f"/v1/callbacks/{ids['c3']}/attempts", json={"result": "wrong_number"})

    async def listing(**params: object) -> list[str]:
        r = await client.get("/v1/callbacks", params=params)
        assert r.status_code == 200, r.text
        return sorted(c["customer"]["id"] for c in r.json())

    assert await listing() == ["c1", "c2", "c3"]
    assert await listing(status="pending") == ["c2"]
    assert await listing(status=["fulfilled", "closed"]) == ["c1", "c3"]
    assert await listing(site="nyc") == ["c3"]
    assert await listing(agent_id="a7") == ["c2"]
    assert await listing(customer_id="c1") == ["c1"]
    assert await listing(date="2026-03-25") == ["c1", "c2", "c3"]
    assert await listing(date="2026-03-26") == []
    assert (await client.get("/v1/callbacks", params={"status": "lost"})).status_code == 422
    assert (await client.get("/v1/callbacks", params={"date": "yesterday"})).status_code == 422

    clock.set(berlin(2026, 3, 25, 17, 30))  # 30 min before closing: c2 is at risk
    await app.state.service.tick()
    r = await client.get("/v1/summary/today")
    s = r.json()
    assert s["overall"] == {
        "site": None,
        "date": None,
        "promised": 3,
        "fulfilled": 1,
        "open": 1,
        "at_risk": 1,
        "breached": 0,
        "breached_unflagged": 0,
        "closed": 1,
        "exhausted": 0,
        "same_day_fulfilment_rate": 0.3333,
    }
    per_site = {e["site"]: e for e in s["sites"]}
    assert per_site["main"]["promised"] == 2 and per_site["main"]["same_day_fulfilment_rate"] == 0.5
    assert per_site["nyc"]["closed"] == 1 and per_site["nyc"]["date"] == "2026-03-25"
    clock.set(berlin(2026, 3, 25, 18, 0))
    await app.state.service.tick()
    s = (await client.get("/v1/summary/today")).json()
    assert s["overall"]["breached"] == 1 and s["overall"]["open"] == 0
    assert s["overall"]["breached_unflagged"] == 0  # c2 was flagged at risk at 17:30

    # The same figures as Prometheus gauges, read from a real scrape (names as Grafana queries them).
    text = (await client.get("/metrics")).text
    assert 'switchboard_callback_promises_today{site="main",state="promised"} 2.0' in text
    assert 'switchboard_callback_promises_today{site="main",state="breached"} 1.0' in text
    assert 'switchboard_callback_promises_today{site="nyc",state="closed"} 1.0' in text
    assert 'switchboard_callback_promises_today{site="main",state="at_risk"} 0.0' in text
    assert 'switchboard_callback_same_day_fulfilment_rate{site="main"} 0.5' in text


async def test_events_in_and_out_through_the_embedded_bus(app: FastAPI, client: httpx.AsyncClient) -> None:
    """callback.requested and agent.status_changed come from the bus; callback.scheduled/due go out."""
    bus = app.state.runtime.bus
    seen: list[Envelope] = []

    async def collect(env: Envelope, _record: Record) -> None:
        seen.append(env)

    await bus.subscribe([CALLBACKS, CONTACTS], "test-observer", collect)
    t = berlin(2026, 3, 25, 10, 0)
    env = requested("bus-cust", t, site="main")
    await bus.publish(CALLBACKS, env, key="default/bus-cust")
    await bus.publish(CALLBACKS, env, key="default/bus-cust")  # redelivered: no effect
    # A second request for the same customer, after the copy on the same partition: merges.
    await bus.publish(CALLBACKS, requested("bus-cust", t, site="main"), key="default/bus-cust")
    await bus.emit(agent_status("a1", AgentStatus.AVAILABLE, t).payload, source="switchboard/router")

    async def merged() -> list[dict[str, object]]:
        rows = (await client.get("/v1/callbacks", params={"customer_id": "bus-cust"})).json()
        return rows if rows and rows[0]["merged_requests"] == 2 else []

    rows = await eventually(merged)
    assert len(rows) == 1 and rows[0]["merged_requests"] == 2

    async def released() -> bool:
        return bool((await app.state.service.tick()).released)

    assert await eventually(released)  # the agent's status arrived over the bus: capacity

    async def due_seen() -> bool:
        types = [e.type for e in seen]
        return "switchboard.callback.due.v1" in types and types.count("switchboard.callback.scheduled.v1") >= 2

    assert await eventually(due_seen)
    assert [e.type for e in seen].count("switchboard.callback.scheduled.v1") == 2  # one answer per request
    due = next(e for e in seen if e.type == "switchboard.callback.due.v1")
    assert due.data["callback_id"] == rows[0]["id"] and due.subject == rows[0]["id"]


async def test_operations_endpoints(client: httpx.AsyncClient) -> None:
    assert (await client.get("/healthz")).status_code == 200
    ready = await client.get("/readyz")
    # "consuming" (issue 13): ready only while the event consumer holds its partitions and is not stalled.
    assert ready.status_code == 200 and ready.json()["checks"] == {"bus": True, "database": True, "consuming": True}
    paths = (await client.get("/openapi.json")).json()["paths"]
    expected = {"/v1/callbacks", "/v1/callbacks/{callback_id}", "/v1/callbacks/{callback_id}/attempts"}
    assert expected | {"/v1/summary/today"} <= set(paths)

    async def scheduled_nyc() -> float:
        sample = 'switchboard_callback_events_total{event="callback.scheduled",reason="",site="nyc"} '
        for line in (await client.get("/metrics")).text.splitlines():
            if line.startswith(sample):
                return float(line.removeprefix(sample))
        return 0.0

    before = await scheduled_nyc()
    await client.post("/v1/callbacks", json={"customer": {"id": "metrics-1"}, "site": "nyc"})
    assert await scheduled_nyc() == before + 1


async def test_unknown_site_and_impossible_promise_are_422(client: httpx.AsyncClient) -> None:
    r = await client.post("/v1/callbacks", json={"customer": {"id": "x"}, "site": "atlantis"})
    assert r.status_code == 422
    [error] = r.json()["detail"]
    assert error["loc"] == ["body", "site"] and error["msg"] == "unknown site 'atlantis'; configured sites: main, nyc"
    # 08:00-21:00 in Pacific/Gambier (UTC-9) never meets Munich's opening hours: no promise we could keep.
    r = await client.post("/v1/callbacks", json={"customer": {"id": "x", "timezone": "Pacific/Gambier"}})
    assert r.status_code == 422
    [error] = r.json()["detail"]
    assert error["type"] == "no_callback_possible" and error["next_open"]
    assert (await client.get("/v1/callbacks")).json() == []
