"""POST /v1/callback-requests: the website's "call me back today" form."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from shared.events import CallbackOrigin, CallbackRequested, Intent
from shared.topics import CALLBACKS
from tests.intake.conftest import SECRET, Clock, IntakeFactory

FORM = {"phone": "+49 30 901820", "name": "Ada", "message": "My invoice is wrong", "timezone": "Europe/Berlin"}


async def test_form_post_publishes_callback_requested_with_the_expected_promise(intake: IntakeFactory) -> None:
    app = await intake()
    resp = await app.client.post("/v1/callback-requests", data=FORM)
    assert resp.status_code == 202, resp.text
    body = resp.json()
    assert body["duplicate"] is False and body["next_business_day"] is False
    # Default calendar Mon-Fri 08:00-18:00 UTC; requested Wednesday 10:00 UTC -> by 18:00 UTC today.
    assert datetime.fromisoformat(body["expected_by"]) == datetime(2026, 11, 25, 18, 0, tzinfo=UTC)
    [(topic, key, env)] = app.events()
    assert topic == CALLBACKS and key == "default/tel:+4930901820"
    event = env.payload
    assert isinstance(event, CallbackRequested)
    assert event.request_id == body["request_id"]
    assert event.origin is CallbackOrigin.WEB_FORM
    assert event.intent is Intent.BILLING  # from the message's keywords
    assert event.customer.phone == "+4930901820" and event.customer.name == "Ada"
    assert event.reason == "My invoice is wrong"


async def test_a_real_html_form_with_buttons_and_tokens_is_accepted(intake: IntakeFactory) -> None:
    app = await intake()
    form = {**FORM, "csrf_token": "abc123", "submit": "Call me back", "website": ""}
    resp = await app.client.post("/v1/callback-requests", data=form)
    assert resp.status_code == 202, resp.text
    assert len(app.events()) == 1


async def test_json_with_window_and_external_id_is_idempotent(intake: IntakeFactory) -> None:
    app = await intake()
    payload = {
        "phone": "+4930901820",
        "customer_id": "cust-42",
        "external_id": "form-991",
        "window_start": "2026-11-25T14:00:00+01:00",
        "window_end": "2026-11-25T16:00:00+01:00",
    }
    first = await app.client.post("/v1/callback-requests", json=payload)
    app.clock.now += timedelta(minutes=2)
    again = await app.client.post("/v1/callback-requests", json=payload)
    assert first.status_code == again.status_code == 202
    assert again.json() == {**first.json(), "duplicate": True}
    [(_, key, env)] = app.events()
    assert key == "default/cust-42"
    window = env.payload.preferred_window  # type: ignore[attr-defined]
    assert window is not None and window.start == datetime(2026, 11, 25, 13, 0, tzinfo=UTC)


async def test_the_same_form_resubmitted_on_the_same_day_is_one_request(intake: IntakeFactory) -> None:
    app = await intake()
    first = await app.client.post("/v1/callback-requests", data=FORM)
    again = await app.client.post("/v1/callback-requests", data=FORM)  # double click
    assert again.json()["duplicate"] is True and again.json()["request_id"] == first.json()["request_id"]
    app.clock.now += timedelta(days=1)
    next_day = await app.client.post("/v1/callback-requests", data=FORM)
    assert next_day.json()["duplicate"] is False
    assert len(app.events()) == 2


async def test_late_request_is_promised_for_the_next_business_day(intake: IntakeFactory) -> None:
    app = await intake(clock=Clock(datetime(2026, 11, 27, 17, 50, tzinfo=UTC)))  # Friday, 10 min before close
    resp = await app.client.post("/v1/callback-requests", data={"phone": "+4930901820"})
    body = resp.json()
    assert body["next_business_day"] is True
    assert datetime.fromisoformat(body["expected_by"]) == datetime(2026, 11, 30, 18, 0, tzinfo=UTC)  # Monday


async def test_invalid_forms_get_422_with_fields_and_wrong_types_415(intake: IntakeFactory) -> None:
    app = await intake()
    bad_phone = await app.client.post("/v1/callback-requests", data={"phone": "12345"})
    assert bad_phone.status_code == 422
    assert ["body", "phone"] in [e["loc"] for e in bad_phone.json()["detail"]]
    missing = await app.client.post("/v1/callback-requests", data={"name": "Ada"})
    assert missing.status_code == 422 and ["body", "phone"] in [e["loc"] for e in missing.json()["detail"]]
    half_window = await app.client.post(
        "/v1/callback-requests", data={"phone": "+4930901820", "window_start": "2026-11-25T14:00:00Z"}
    )
    assert half_window.status_code == 422
    multipart = await app.client.post("/v1/callback-requests", files={"phone": (None, "+4930901820")})
    assert multipart.status_code == 415
    assert app.events() == []


async def test_a_source_with_a_secret_must_sign_even_here(intake: IntakeFactory) -> None:
    app = await intake(source_secrets={"partner-site": SECRET})
    payload = {"phone": "+4930901820", "source": "partner-site"}
    unsigned = await app.client.post("/v1/callback-requests", json=payload)
    assert unsigned.status_code == 401
    signed = await app.post_signed("/v1/callback-requests", payload)
    assert signed.status_code == 202
    anonymous_web = await app.client.post("/v1/callback-requests", data={"phone": "+4930901820"})
    assert anonymous_web.status_code == 202  # browsers cannot sign; "web" has no secret
