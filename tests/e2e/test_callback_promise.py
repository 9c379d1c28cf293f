"""Across the real services: a same-day callback requested through intake is kept.

intake (web form) -> callback.requested -> callback service (deadline, due) -> callback.due -> router
-> offered to an agent's stream -> accepted -> completed as 'reached' -> callback.attempted -> callback
service: fulfilled, and today's summary says so. Issue 5's end-to-end promise.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import httpx

from tests.e2e.conftest import ServiceProcess, wait_until
from tests.e2e.test_contact_to_agent import ADMIN_HEADERS, ROUTER_ENV, register
from tests.router.conftest import agent_stream


def midday_timezone(now: datetime) -> str:
    """An IANA zone in which it is about noon now: the customer's 'today' has hours left, at any UTC hour."""
    offset = 12 - now.hour  # local = UTC + offset; Etc/GMT signs are inverted by POSIX convention
    offset = max(-12, min(14, offset))
    return "Etc/GMT" + (f"{-offset:+d}" if offset else "")


async def test_callback_requested_through_intake_is_offered_attempted_and_fulfilled(
    services: Callable[..., ServiceProcess],
) -> None:
    intake = services("intake")
    router = services("router", env=ROUTER_ENV)
    callback = services("callback", env={"SWITCHBOARD_CALLBACK_POLL_INTERVAL_SECONDS": "0.2"})
    alice = await register(router, "alice", ["service"])
    now = datetime.now(UTC)
    tz = midday_timezone(now)

    async with agent_stream(router.url, "alice", alice) as stream, httpx.AsyncClient() as http:
        await stream.wait_for("hello")
        form = {
            "phone": "+4930901821",
            "name": "Ada Lovelace",
            "timezone": tz,
            "intent": "support",
            "message": "please call me back about my invoice",
            "external_id": "form-7",
        }
        r = await http.post(f"{intake.url}/v1/callback-requests", data=form)  # a browser's form post
        assert r.status_code == 202, r.text

        def commitment() -> dict | None:
            items = httpx.get(f"{callback.url}/v1/callbacks", headers=ADMIN_HEADERS).json()
            return items[0] if items else None

        promise = wait_until(commitment, timeout=15)
        assert promise["origin"] == "web_form" and promise["next_business_day"] is False
        assert promise["customer"]["timezone"] == tz
        assert datetime.fromisoformat(promise["deadline"]) > now  # due today, in the customer's clock
        callback_id = promise["id"]

        # Due now (no window): released to the router, which offers it like a contact, with its id.
        offer = await stream.wait_for("offer", lambda d: d["contact_id"] == callback_id, timeout=20)
        r = await http.post(f"{router.url}/v1/offers/{offer['offer_id']}/accept", headers=alice)
        assert r.status_code == 200, r.text
        r = await http.post(
            f"{router.url}/v1/contacts/{callback_id}/complete",
            headers=alice,
            json={"resolved": True, "attempt_result": "reached", "notes": "explained the invoice"},
        )
        assert r.status_code == 200, r.text

        def fulfilled() -> dict | None:
            detail = httpx.get(f"{callback.url}/v1/callbacks/{callback_id}", headers=ADMIN_HEADERS).json()
            return detail if detail["status"] == "fulfilled" else None

        detail = wait_until(fulfilled, timeout=15)
        assert [a["result"] for a in detail["attempt_history"]] == ["reached"]
        assert detail["attempt_history"][0]["agent_id"] == "alice"

        summary = httpx.get(f"{callback.url}/v1/summary/today", headers=ADMIN_HEADERS).json()
        overall = summary["overall"]
        assert (overall["promised"], overall["fulfilled"], overall["breached"]) == (1, 1, 0)
        assert overall["same_day_fulfilment_rate"] == 1.0

        # The same form submitted again (double click) merges: still one promise.
        again = await http.post(f"{intake.url}/v1/callback-requests", data=form)
        assert again.status_code == 202 and again.json()["duplicate"] is True
        assert len(httpx.get(f"{callback.url}/v1/callbacks", headers=ADMIN_HEADERS).json()) == 1


def test_midday_timezone_puts_the_customer_near_noon() -> None:
    from zoneinfo import ZoneInfo

    for hour in range(24):
        now = datetime(2026, 11, 25, hour, 30, tzinfo=UTC)
        local = now.astimezone(ZoneInfo(midday_timezone(now)))
        assert 10 <= local.hour <= 14, (hour, midday_timezone(now), local)
        assert now + timedelta(0) == local  # same instant, other clock
