"""Direct dispatch answers exactly as FastAPI's full path does: the same requests, both ways, compared.

``services/intake/api/direct.py`` serves the webhook endpoints straight from the ASGI call. Each
request below goes to two apps that differ only in ``fast_path`` (same clock, own data dirs),
and the answers must match: status, body, the headers a client acts on.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from services.intake.api.direct import IntakeAPI
from tests.intake.conftest import SECRET, IntakeFactory, contact_payload, sign

# Explicitly opted out of "every source signs" (secure default since issue 13): this test compares the two
# dispatch paths over unsigned sources and a signed one side by side.
SECRETS = {"source_secrets": {"signed": SECRET}, "require_signatures": False}
COMPARED_HEADERS = ("content-type", "retry-after", "location")

Send = Callable[[httpx.AsyncClient, int], Any]


def _json(body: Any) -> dict[str, Any]:
    return {"content": json.dumps(body).encode(), "headers": {"content-type": "application/json"}}


REQUESTS: dict[str, Callable[[int], dict[str, Any]]] = {
    "accepted": lambda ts: {"url": "/v1/contacts", **_json(contact_payload("call-1"))},
    "duplicate": lambda ts: {"url": "/v1/contacts", **_json(contact_payload("call-1"))},
    "idempotency key": lambda ts: {
        "url": "/v1/contacts",
        "content": json.dumps(contact_payload("call-2")).encode(),
        "headers": {"content-type": "application/json", "Idempotency-Key": "k-1"},
    },
    "idempotency key reused": lambda ts: {
        "url": "/v1/contacts",
        "content": json.dumps(contact_payload("call-3")).encode(),
        "headers": {"content-type": "application/json", "Idempotency-Key": "k-1"},
    },
    "malformed json": lambda ts: {
        "url": "/v1/contacts",
        "content": b'{"external_id": ',
        "headers": {"content-type": "application/json"},
    },
    "invalid phone": lambda ts: {
        "url": "/v1/contacts",
        **_json(contact_payload("call-4", customer={"id": "c", "phone": "+49 1"})),
    },
    "unknown field": lambda ts: {"url": "/v1/contacts", **_json({**contact_payload("call-5"), "surprise": 1})},
    "wrong content type": lambda ts: {
        "url": "/v1/contacts",
        "content": b"external_id=x",
        "headers": {"content-type": "text/plain"},
    },
    "too large": lambda ts: {
        "url": "/v1/contacts",
        **_json(contact_payload("call-6", summary="x" * 70_000)),
    },
    "bad content length": lambda ts: {
        "url": "/v1/contacts",
        "content": b"{}",
        "headers": {"content-type": "application/json", "content-length": "2x"},
    },
    "NUL in body": lambda ts: {"url": "/v1/contacts", **_json(contact_payload("call-\u0000"))},
    "NUL in query": lambda ts: {"url": "/v1/contacts?x=%00", **_json(contact_payload("call-7"))},
    "unsigned for a source with a secret": lambda ts: {
        "url": "/v1/contacts",
        **_json(contact_payload("call-8", source="signed")),
    },
    "signed": lambda ts: {
        "url": "/v1/contacts",
        "content": (body := json.dumps(contact_payload("call-9", source="signed")).encode()),
        "headers": {"content-type": "application/json", **sign(body, ts)},
    },
    "abandoned": lambda ts: {"url": "/v1/contacts/abandoned", **_json({"source": "acme", "external_id": "call-1"})},
    "abandoned, unknown": lambda ts: {
        "url": "/v1/contacts/abandoned",
        **_json({"source": "acme", "external_id": "never"}),
    },
    "callback form": lambda ts: {
        "url": "/v1/callback-requests",
        "content": b"phone=%2B4930901820&name=Ada&message=call+me",
        "headers": {"content-type": "application/x-www-form-urlencoded"},
    },
    "twilio voice": lambda ts: {
        "url": "/v1/webhooks/twilio/voice?ivr=none",
        "content": b"CallSid=CA123&From=%2B4930901820&To=%2B4930555000",
        "headers": {"content-type": "application/x-www-form-urlencoded"},
    },
    "trailing slash (not direct)": lambda ts: {"url": "/v1/contacts/", **_json(contact_payload("call-10"))},
}


def _comparable(response: httpx.Response) -> tuple[int, Any, dict[str, str]]:
    try:
        body: Any = response.json()
    except ValueError:
        body = response.text
    headers = {h: response.headers[h] for h in COMPARED_HEADERS if h in response.headers}
    return response.status_code, body, headers


async def test_the_webhook_endpoints_are_served_directly(intake: IntakeFactory) -> None:
    direct = await intake(fast_path=True)
    full = await intake(fast_path=False, data_dir=direct.data_dir.parent / "full")
    assert isinstance(direct.app, IntakeAPI)
    assert ("POST", "/v1/contacts") in direct.app.direct_paths
    assert ("POST", "/v1/webhooks/twilio/voice") in direct.app.direct_paths
    assert full.app.direct_paths == frozenset()


async def test_direct_and_full_path_give_the_same_answers(intake: IntakeFactory) -> None:
    direct = await intake(fast_path=True, max_body_bytes=65_536, **SECRETS)
    full = await intake(fast_path=False, max_body_bytes=65_536, data_dir=direct.data_dir.parent / "full", **SECRETS)
    ts = int(direct.clock().timestamp())
    seen_statuses: set[int] = set()
    for name, build in REQUESTS.items():
        a = _comparable(await direct.client.request("POST", **build(ts)))
        b = _comparable(await full.client.request("POST", **build(ts)))
        assert a == b, name
        seen_statuses.add(a[0])
    # The list exercises every answer class, so "the same" is not "the same 202 twenty times".
    assert seen_statuses == {200, 202, 307, 400, 401, 404, 413, 415, 422}
    # Both published the same events under the same (deterministic) ids.
    assert [e.id for _, _, e in direct.events()] == [e.id for _, _, e in full.events()]
    assert len(direct.events()) >= 4


@pytest.mark.parametrize("direct_dispatch", [True, False])
async def test_an_unexpected_error_is_a_logged_500_on_both_paths(
    intake: IntakeFactory, direct_dispatch: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = await intake(fast_path=direct_dispatch)

    async def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("a bug")

    monkeypatch.setattr(app.app.state.intake.service, "submit", broken)
    transport = httpx.ASGITransport(app=app.app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://intake.test") as client:
        response = await client.post("/v1/contacts", json=contact_payload())
    assert response.status_code == 500
    assert response.text == "Internal Server Error"


async def test_with_telemetry_configured_every_request_takes_fastapis_path(
    intake: IntakeFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """FastAPI's native telemetry traces each request on its own path: direct dispatch steps aside."""
    app = await intake(fast_path=True)
    assert app.app.direct_paths  # on while nothing is configured
    monkeypatch.setattr(app.app._native_telemetry, "enabled", lambda: True)
    assert app.app.enable_direct_dispatch() is False
    assert app.app.direct_paths == frozenset()
    response = await app.client.post("/v1/contacts", json=contact_payload())
    assert response.status_code == 202  # served, by FastAPI's full path
