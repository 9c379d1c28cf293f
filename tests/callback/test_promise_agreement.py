"""What intake tells the customer is what the callback service tracks (issue 12), through the real code:
the intake app (web form, Twilio IVR) on an injected clock publishes ``callback.requested``; the event is
handed to a callback service over a real database; the commitment's deadline and sentence must be the
answer the customer got. Default configuration (no sites file: Mon-Fri 08-18 UTC), Friday 16:02 UTC."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import UTC, datetime

import pytest

from services.callback.clock import ManualClock
from services.callback.consumers import CallbackConsumer
from services.callback.lifecycle import Policy
from services.callback.service import CallbackService, ListFilter
from services.callback.settings import CallbackSettings
from shared.business_hours import BusinessCalendars
from shared.events import CallbackRequested
from shared.settings import PromiseSettings
from shared.topics import CALLBACKS
from tests.callback.conftest import ServiceFactory
from tests.intake.conftest import Clock, IntakeFactory, intake  # noqa: F401  (the intake app fixture)
from tests.intake.test_twilio_api import PUBLIC, TOKEN, VOICE, call, post_twilio

FRIDAY_16_02 = datetime(2026, 12, 4, 16, 2, tzinfo=UTC)
DEFAULT_CONFIG = BusinessCalendars.from_config({})
ISSUE_ZONES = [
    "Asia/Karachi",
    "Asia/Kolkata",
    "Asia/Dhaka",
    "Asia/Bangkok",
    "Asia/Shanghai",
    "Europe/Berlin",
    "America/New_York",
    "America/Los_Angeles",
    "UTC",
]


@pytest.fixture
def default_service(make_service: ServiceFactory, clock: ManualClock) -> CallbackService:
    clock.set(FRIDAY_16_02)
    return make_service(calendars=DEFAULT_CONFIG, policy=Policy.from_settings(CallbackSettings(), PromiseSettings()))


async def test_web_form_answer_is_the_tracked_commitment(intake: IntakeFactory, default_service) -> None:  # noqa: F811
    app = await intake(clock=Clock(FRIDAY_16_02))
    consumer = CallbackConsumer(default_service)
    told: dict[str, dict] = {}
    for i, tz in enumerate(ISSUE_ZONES):
        r = await app.client.post(
            "/v1/callback-requests", data={"phone": f"+4930901{i:03d}", "timezone": tz, "external_id": f"f-{i}"}
        )
        assert r.status_code == 202, r.text
        told[tz] = r.json()
    events = [env for _, _, env in app.events(CALLBACKS)]
    assert len(events) == len(ISSUE_ZONES)
    for env in events:
        assert await consumer.handle(env)
    by_tz = {c.customer_timezone: c for c in await default_service.list(ListFilter())}
    for tz, answer in told.items():
        c = by_tz[tz]
        assert datetime.fromisoformat(answer["expected_by"]) == c.deadline.replace(tzinfo=UTC), tz
        assert answer["next_business_day"] is c.next_business_day, tz
        assert answer["promise_text"] == c.promise_text, tz
    # Karachi at 21:02 local on a Friday: not "today by 18:00 UTC" (the issue), but Monday by 21:00 PKT.
    assert told["Asia/Karachi"]["next_business_day"] is True
    assert told["Asia/Karachi"]["expected_by"] == "2026-12-07T16:00:00Z"
    assert "Monday 7 December by 21:00 (Asia/Karachi time)" in told["Asia/Karachi"]["promise_text"]
    assert told["Europe/Berlin"]["next_business_day"] is False  # 17:02 in Berlin: today by 18:00 UTC


async def test_auckland_in_summer_gets_no_promise_and_is_told_when_to_call(intake: IntakeFactory) -> None:  # noqa: F811
    app = await intake(clock=Clock(FRIDAY_16_02))
    r = await app.client.post("/v1/callback-requests", data={"phone": "+6495551234", "timezone": "Pacific/Auckland"})
    assert r.status_code == 422, r.text
    assert r.json()["reason"] == "no_callback_possible"
    assert "call us now" in r.json()["detail"]
    assert app.events(CALLBACKS) == []  # nothing promised, nothing published


async def test_unknown_site_is_refused_naming_the_configured_sites(intake: IntakeFactory) -> None:  # noqa: F811
    app = await intake(clock=Clock(FRIDAY_16_02))
    r = await app.client.post("/v1/callback-requests", data={"phone": "+4930901820", "site": "atlantis"})
    assert r.status_code == 422
    [error] = r.json()["detail"]
    assert error["loc"] == ["body", "site"] and "configured sites: main" in error["msg"]
    ok = await app.client.post("/v1/callback-requests", data={"phone": "+4930901820", "site": "main"})
    assert ok.status_code == 202


async def test_ivr_caller_hears_the_tracked_promise(intake: IntakeFactory, default_service) -> None:  # noqa: F811
    """A caller from +92 pressing 9 at 16:02 UTC on a Friday: the issue heard "today by 23:00"."""
    app = await intake(clock=Clock(FRIDAY_16_02), twilio_auth_token=TOKEN, public_base_url=PUBLIC)
    r = await post_twilio(app, VOICE + "?ivr=menu", call(Digits="9", From="+923001234567"))
    assert r.status_code == 200, r.text
    said = ET.fromstring(r.text).findtext("Say") or ""
    [(_, _, env)] = app.events(CALLBACKS)
    assert isinstance(env.payload, CallbackRequested)
    assert await CallbackConsumer(default_service).handle(env)
    [c] = await default_service.list(ListFilter())
    assert said == f"{c.promise_text} Goodbye."
    assert c.deadline.replace(tzinfo=UTC) == datetime(2026, 12, 7, 16, 0, tzinfo=UTC)  # Monday 21:00 PKT
    assert said.startswith("It is too late to call you back today. We will call you back on Monday 7 December")


async def test_ivr_caller_with_no_possible_callback_keeps_a_place_in_line(intake: IntakeFactory) -> None:  # noqa: F811
    app = await intake(clock=Clock(FRIDAY_16_02), twilio_auth_token=TOKEN, public_base_url=PUBLIC)
    r = await post_twilio(app, VOICE + "?ivr=menu", call(Digits="9", From="+6495551234"))  # Auckland, NZDT
    root = ET.fromstring(r.text)
    assert root.find("Enqueue") is not None
    assert "keeping your place in line" in (root.findtext("Say") or "")
    assert app.events(CALLBACKS) == []
