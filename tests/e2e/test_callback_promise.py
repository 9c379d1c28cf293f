"""Across the real services: a same-day callback requested through intake is kept.

intake (web form) -> callback.requested -> callback service (deadline, due) -> callback.due -> router
-> offered to an agent's stream -> accepted -> completed as 'reached' -> callback.attempted -> callback
service: fulfilled, and today's summary says so. Issue 5's end-to-end promise.
"""

from __future__ import annotations

import asyncio
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


async def test_every_attempt_counts_three_misses_exhaust_and_a_later_reach_fulfils(
    services: Callable[..., ServiceProcess],
) -> None:
    """Issue 12 across the real services: each completion is its own ``callback.attempted`` (the router
    used to give every attempt on a callback one event id, so attempts 2, 3... were dropped as duplicates).
    One callback: no_answer x3 -> closed as exhausted; another: no_answer, then reached -> fulfilled."""
    intake = services("intake")
    router = services("router", env=ROUTER_ENV)
    callback = services(
        "callback",
        env={
            "SWITCHBOARD_CALLBACK_POLL_INTERVAL_SECONDS": "0.2",
            "SWITCHBOARD_CALLBACK_RETRY_SPACING_MINUTES": "0.05",  # 3 s between attempts
            "SWITCHBOARD_CALLBACK_MIN_RETRY_SPACING_MINUTES": "0.02",
        },
    )
    alice = await register(router, "alice", ["service"])
    tz = midday_timezone(datetime.now(UTC))
    script = {"+4930901001": ["no_answer", "no_answer", "no_answer"], "+4930901002": ["no_answer", "reached"]}

    async with agent_stream(router.url, "alice", alice) as stream, httpx.AsyncClient() as http:
        await stream.wait_for("hello")
        told = {}
        for phone in script:
            r = await http.post(
                f"{intake.url}/v1/callback-requests", data={"phone": phone, "timezone": tz, "intent": "support"}
            )
            assert r.status_code == 202, r.text
            told[phone] = r.json()

        def commitments() -> dict[str, dict] | None:
            items = httpx.get(f"{callback.url}/v1/callbacks", headers=ADMIN_HEADERS).json()
            return {c["customer"]["phone"]: c for c in items} if len(items) == 2 else None

        by_phone = wait_until(commitments, timeout=15)
        for phone, answer in told.items():  # what the customer was told is what is tracked
            assert datetime.fromisoformat(answer["expected_by"]) == datetime.fromisoformat(by_phone[phone]["deadline"])
            assert answer["promise_text"] == by_phone[phone]["promise_text"]
        phone_of = {c["id"]: phone for phone, c in by_phone.items()}
        remaining = {c["id"]: list(script[phone]) for phone, c in by_phone.items()}

        seen: set[str] = set()  # the reader keeps every event: answer each offer once
        async with asyncio.timeout(90):
            while any(remaining.values()):
                offer = await stream.wait_for(
                    "offer", lambda d: d["offer_id"] not in seen and bool(remaining.get(d["contact_id"])), timeout=30
                )
                seen.add(offer["offer_id"])
                cid = offer["contact_id"]
                r = await http.post(f"{router.url}/v1/offers/{offer['offer_id']}/accept", headers=alice)
                if r.status_code != 200:
                    continue  # withdrawn meanwhile (e.g. re-released): the next offer follows
                result = remaining[cid].pop(0)
                r = await http.post(
                    f"{router.url}/v1/contacts/{cid}/complete",
                    headers=alice,
                    json={"resolved": result == "reached", "attempt_result": result},
                )
                assert r.status_code == 200, r.text
                # Ready for the next one: end the wrap-up early, as an agent's client does.
                r = await http.put(f"{router.url}/v1/agents/alice/status", headers=alice, json={"status": "available"})
                assert r.status_code == 200, r.text
                # The next attempt waits for the callback service to record this one (and its spacing).
                want = len(script[phone_of[cid]]) - len(remaining[cid])
                wait_until(
                    lambda cid=cid, want=want: (
                        httpx.get(f"{callback.url}/v1/callbacks/{cid}", headers=ADMIN_HEADERS).json()["attempts"]
                        == want
                    ),
                    timeout=15,
                )

        def ended() -> dict[str, dict] | None:
            listed = httpx.get(f"{callback.url}/v1/callbacks", headers=ADMIN_HEADERS).json()
            items = {c["customer"]["phone"]: c for c in listed}
            open_ = ("pending", "released", "in_progress")
            return items if all(c["status"] not in open_ for c in items.values()) else None

        final = wait_until(ended, timeout=15)
        exhausted, fulfilled = final["+4930901001"], final["+4930901002"]
        assert (exhausted["status"], exhausted["close_reason"], exhausted["attempts"]) == (
            "closed",
            "attempts_exhausted",
            3,
        )
        assert (fulfilled["status"], fulfilled["attempts"]) == ("fulfilled", 2)
        detail = httpx.get(f"{callback.url}/v1/callbacks/{exhausted['id']}", headers=ADMIN_HEADERS).json()
        history = detail["attempt_history"]
        assert [a["result"] for a in history] == ["no_answer"] * 3 and not any(a["late"] for a in history)
        # Attempts were spaced: each retry came no sooner than the (shortened) spacing after the last.
        times = [datetime.fromisoformat(a["at"]) for a in history]
        assert all(b - a >= timedelta(seconds=1.2) for a, b in zip(times, times[1:], strict=False)), times

        overall = httpx.get(f"{callback.url}/v1/summary/today", headers=ADMIN_HEADERS).json()["overall"]
        assert (overall["promised"], overall["fulfilled"], overall["closed"], overall["exhausted"]) == (2, 1, 1, 1)
        assert (overall["open"], overall["breached"]) == (0, 0)
        assert overall["same_day_fulfilment_rate"] == 0.5

        # Attempts typed in on an ended promise are refused.
        r = await http.post(
            f"{callback.url}/v1/callbacks/{exhausted['id']}/attempts",
            json={"result": "reached"},
            headers=ADMIN_HEADERS,
        )
        assert r.status_code == 409 and r.json()["detail"]["reason"] == "callback_closed"
