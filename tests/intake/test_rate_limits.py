"""Rate limits per client and per source: 429 + Retry-After, nothing published beyond the limit (issue 13).

Before: 300 web callback requests from one client in 3 s were all accepted, each scheduling a call to a
number of the client's choosing.
"""

from __future__ import annotations

import json

import httpx
import pytest
from pydantic import ValidationError

from services.intake.settings import IntakeSettings
from tests.intake.conftest import SECRET, IntakeFactory, contact_payload, sign

FORM = {"phone": "+49 30 901820", "message": "Please call me", "timezone": "Europe/Berlin"}


def form(i: int) -> dict[str, str]:
    # A distinct customer and number each time: not a duplicate, and not the per-number limit.
    return {**FORM, "name": f"Customer {i}", "phone": f"+49 30 {901820 + i}"}


def other_client(app: object, host: str) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, client=(host, 50000))  # type: ignore[arg-type]
    return httpx.AsyncClient(transport=transport, base_url="http://intake.test")


def assert_rate_limited(resp: httpx.Response, *, window_seconds: int = 3600) -> None:
    assert resp.status_code == 429, resp.text
    assert resp.json()["reason"] == "rate_limited"
    assert 1 <= int(resp.headers["Retry-After"]) <= window_seconds


async def test_the_default_limits_stop_a_flood_of_web_callback_requests_from_one_client(
    intake: IntakeFactory,
) -> None:
    app = await intake(rate_limits_enabled=True)  # every other setting as shipped
    answers = [(await app.client.post("/v1/callback-requests", data=form(i))).status_code for i in range(30)]
    accepted = answers.count(202)
    assert 1 <= accepted <= 5, answers
    assert answers.count(429) == 30 - accepted
    assert len(app.events()) == accepted  # a refused request schedules nothing


async def test_a_number_is_called_back_only_a_few_times_however_many_clients_ask(intake: IntakeFactory) -> None:
    """Call-bombing someone's phone from many addresses: the per-number limit holds across clients."""
    app = await intake(rate_limits_enabled=True, web_form_rate_limit_per_client="")  # per number: as shipped
    answers = []
    for i in range(6):
        async with other_client(app.app, f"198.51.100.{i + 1}") as c:
            victim = {**FORM, "name": f"Prank {i}"}
            answers.append(await c.post("/v1/callback-requests", data=victim))
    assert [r.status_code for r in answers[:3]] == [202, 202, 202]
    for r in answers[3:]:
        assert_rate_limited(r)
    assert len(app.events()) == 3


async def test_web_form_limit_is_per_client_with_retry_after(intake: IntakeFactory) -> None:
    app = await intake(rate_limits_enabled=True, web_form_rate_limit_per_client="3/minute")
    for i in range(3):
        assert (await app.client.post("/v1/callback-requests", data=form(i))).status_code == 202
    assert_rate_limited(await app.client.post("/v1/callback-requests", data=form(3)))
    async with other_client(app.app, "198.51.100.20") as neighbour:
        assert (await neighbour.post("/v1/callback-requests", data=form(4))).status_code == 202
    assert len(app.events()) == 4


async def test_web_form_limit_per_source_holds_across_clients(intake: IntakeFactory) -> None:
    app = await intake(
        rate_limits_enabled=True, web_form_rate_limit_per_client="", web_form_rate_limit_per_source="2/minute"
    )
    hosts = ["198.51.100.1", "198.51.100.2", "198.51.100.3"]
    answers = []
    for i, host in enumerate(hosts):
        async with other_client(app.app, host) as c:
            answers.append(await c.post("/v1/callback-requests", data=form(i)))
    assert [r.status_code for r in answers[:2]] == [202, 202]
    assert_rate_limited(answers[2])
    other_site = {**form(9), "source": "partner-site"}
    assert (await app.client.post("/v1/callback-requests", data=other_site)).status_code == 202


async def test_webhook_limit_per_source_is_spent_only_by_authenticated_requests(intake: IntakeFactory) -> None:
    """Forged requests for a signing source are refused (401) before they count against its budget."""
    app = await intake(
        rate_limits_enabled=True,
        source_secrets={"acme": SECRET, "other": SECRET},
        webhook_rate_limit_per_source="2/minute",
    )
    for i in range(5):
        forged = await app.client.post("/v1/contacts", json=contact_payload(f"forged-{i}"))
        assert forged.status_code == 401
    assert (await app.post_signed("/v1/contacts", contact_payload("call-1"))).status_code == 202
    assert (await app.post_signed("/v1/contacts", contact_payload("call-2"))).status_code == 202
    assert_rate_limited(await app.post_signed("/v1/contacts", contact_payload("call-3")))
    assert (await app.post_signed("/v1/contacts", contact_payload("call-4", source="other"))).status_code == 202
    assert len(app.events()) == 3


async def test_webhook_limit_per_client_is_checked_before_the_body_is_read(intake: IntakeFactory) -> None:
    app = await intake(rate_limits_enabled=True, webhook_rate_limit_per_client="2/minute")
    for i in range(2):
        assert (await app.client.post("/v1/contacts", json=contact_payload(f"c-{i}"))).status_code == 202
    # Even an unreadable body is refused for the rate, not parsed.
    resp = await app.client.post("/v1/contacts", content=b"{not json", headers={"content-type": "application/json"})
    assert_rate_limited(resp)
    twilio = await app.client.post("/v1/webhooks/twilio/voice", data={"CallSid": "CA1", "From": "+4930901820"})
    assert_rate_limited(twilio)


async def test_limits_off_accept_everything(intake: IntakeFactory) -> None:
    app = await intake(rate_limits_enabled=False, web_form_rate_limit_per_client="1/minute")
    answers = [(await app.client.post("/v1/callback-requests", data=form(i))).status_code for i in range(20)]
    assert answers == [202] * 20


async def test_signed_requests_with_timestamps_and_limits(intake: IntakeFactory) -> None:
    """The signed header source is the one counted when header and body agree."""
    app = await intake(
        # A daily window: the sliding-window counter weighs the previous window in, so two requests that
        # straddle a window's end may both pass, and Retry-After shrinks near it. With "1/hour" that was a
        # flaky minute every hour; with a day it is the minute before midnight UTC.
        rate_limits_enabled=True,
        source_secrets={"acme": SECRET},
        webhook_rate_limit_per_source="1/day",
    )
    body = json.dumps(contact_payload("h-1")).encode()
    ts = int(app.clock().timestamp())
    headers = {"content-type": "application/json", "X-Switchboard-Source": "acme", **sign(body, ts)}
    assert (await app.client.post("/v1/contacts", content=body, headers=headers)).status_code == 202
    body2 = json.dumps(contact_payload("h-2")).encode()
    headers2 = {"content-type": "application/json", "X-Switchboard-Source": "acme", **sign(body2, ts)}
    resp = await app.client.post("/v1/contacts", content=body2, headers=headers2)
    assert_rate_limited(resp, window_seconds=86400)
    assert int(resp.headers["Retry-After"]) > 60  # a daily window: not "try again in a second"


@pytest.mark.parametrize("spec", ["5 per fortnight", "abc", "-1/minute"])
def test_a_malformed_limit_stops_the_start(spec: str) -> None:
    with pytest.raises(ValidationError):
        IntakeSettings(web_form_rate_limit_per_client=spec)
