"""One promise (shared.promise): what intake tells the customer is what the callback service tracks,
and no promise lands beyond the bound. Issue 12.

The property test draws time zones from all of ``zoneinfo.available_timezones()``, instants over whole
weeks around DST change days and public holidays, several site calendars and policies, and checks:

* intake's answer (``IntakeContext.promise``, the function intake's web form and IVR call, built from
  the same settings class intake's app reads) equals the callback service's plan
  (``plan_commitment``, the deadline and sentence it stores) -- or both refuse;
* the deadline lies within ``max_business_days`` site business days, in callable time (site open and,
  unless waived by ``site_hours``, inside the customer's calling hours), after the request;
* "today" means the customer's today, with at least ``cutoff_minutes`` of callable time left.
"""

from __future__ import annotations

import zoneinfo
from datetime import UTC, date, datetime, timedelta
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.callback.lifecycle import NoCallbackPossible, Policy, plan_commitment
from services.callback.settings import CallbackSettings
from services.intake.context import IntakeContext
from services.intake.settings import IntakeSettings
from shared.business_hours import BusinessCalendars, _local, end_of_local_day
from shared.promise import NoPromise, Promise, PromisePolicy, WhenNoOverlap, decide_promise, horizon_end
from shared.settings import PromiseSettings

ZONES = sorted(zoneinfo.available_timezones())
WEEKDAYS_8_18 = {d: ["08:00-18:00"] for d in ("mon", "tue", "wed", "thu", "fri")}
SITES: dict[str, Any] = {
    "sites": {
        "berlin": {
            "timezone": "Europe/Berlin",
            "country": "DE",
            "subdiv": "BY",
            "hours": {
                **{d: ["08:00-12:00", "13:00-18:00"] for d in ("mon", "tue", "wed", "thu", "fri")},
                "sat": ["09:00-13:00"],
            },
            "closed_dates": ["2026-12-24"],
        },
        "nyc": {"timezone": "America/New_York", "country": "US", "subdiv": "NY", "hours": WEEKDAYS_8_18},
        "auckland": {"timezone": "Pacific/Auckland", "country": "NZ", "hours": WEEKDAYS_8_18},
        "late": {"timezone": "UTC", "hours": {"mon": ["20:00-24:00"], "tue": ["00:00-02:00", "22:00-24:00"]}},
    },
    "default": {"timezone": "UTC", "hours": WEEKDAYS_8_18},
}
CALENDARS = BusinessCalendars.from_config(SITES)
SITE_NAMES = ["main", *SITES["sites"]]  # "main": the default site, on the default calendar

# DST change days (US, EU, NZ/Australia incl. Lord Howe's half hour, Chile) and public holidays.
SPECIAL_DAYS = [
    date(2026, 3, 8),
    date(2026, 3, 29),
    date(2026, 4, 5),
    date(2026, 9, 6),
    date(2026, 9, 27),
    date(2026, 10, 4),
    date(2026, 10, 25),
    date(2026, 11, 1),
    date(2027, 3, 14),
    date(2027, 3, 28),
    date(2026, 1, 1),
    date(2026, 1, 6),
    date(2026, 5, 25),
    date(2026, 6, 4),
    date(2026, 7, 3),
    date(2026, 11, 26),
    date(2026, 12, 24),
    date(2026, 12, 25),
    date(2026, 12, 31),
]


@st.composite
def instants(draw: st.DrawFn) -> datetime:
    """A minute within a week around a special day (or any day of 2026-2027), any hour of the week."""
    base = draw(st.sampled_from(SPECIAL_DAYS) | st.dates(date(2026, 1, 1), date(2027, 12, 31)))
    minute = draw(st.integers(-3 * 24 * 60, 4 * 24 * 60))
    return datetime(base.year, base.month, base.day, tzinfo=UTC) + timedelta(minutes=minute)


policies = st.builds(
    lambda cutoff, hours, days, mode: PromiseSettings(
        cutoff_minutes=cutoff, customer_calling_hours=hours, max_business_days=days, when_no_overlap=mode
    ),
    st.sampled_from([0, 30, 90]),
    st.sampled_from(["08:00-21:00", "", "09:00-17:00", "00:00-24:00"]),
    st.sampled_from([0, 1, 2, 5]),
    st.sampled_from(list(WhenNoOverlap)),
)


def intake_answer(promise_settings: PromiseSettings, site: str, at: datetime, tz: str | None) -> Promise | NoPromise:
    """What intake's web form and IVR compute: its context's promise, from intake's settings source."""
    ctx = IntakeContext(
        settings=IntakeSettings(),
        service=None,  # type: ignore[arg-type]  # not used to decide the promise
        calendars=CALENDARS,
        tenant_id="t",
        clock=lambda: at,
        promise_policy=promise_settings.policy(),
    )
    return ctx.promise(site, at, tz)


def business_days_after(cal: Any, start: date, end: date) -> int:
    return sum(cal.is_business_day(start + timedelta(days=i)) for i in range(1, (end - start).days + 1))


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    tz=st.sampled_from(ZONES) | st.none(),
    site=st.sampled_from(SITE_NAMES),
    at=instants(),
    promise_settings=policies,
)
def test_intake_answer_is_the_tracked_promise_and_within_the_bound(
    tz: str | None, site: str, at: datetime, promise_settings: PromiseSettings
) -> None:
    cal = CALENDARS.for_site(site)
    told = intake_answer(promise_settings, site, at, tz)
    callback_policy = Policy.from_settings(CallbackSettings(), promise_settings)
    p = promise_settings.policy()

    if isinstance(told, NoPromise):
        try:
            plan_commitment(cal, callback_policy, requested_at=at, customer_tz=tz, accepted=False)
        except NoCallbackPossible:
            pass
        else:
            raise AssertionError("intake refused a callback the callback service would have promised")
        assert told.horizon == horizon_end(cal, at, p.max_business_days)
        assert told.sentence()
        return

    plan = plan_commitment(cal, callback_policy, requested_at=at, customer_tz=tz, accepted=False)
    assert plan.deadline == told.deadline  # the customer is told what is tracked
    assert plan.promise_text == told.sentence()
    assert plan.next_business_day == told.next_business_day and plan.promise_day == told.day

    # The bound: no deadline after the site's N-th business day after today.
    site_today = at.astimezone(cal.tz).date()
    deadline_site_day = (told.deadline - timedelta(microseconds=1)).astimezone(cal.tz).date()
    assert business_days_after(cal, site_today, deadline_site_day) <= p.max_business_days
    assert told.deadline <= horizon_end(cal, at, p.max_business_days)

    # Callable time: after the request, site open, on the customer's promised day, in the customer's hours.
    ctz = told.customer_tz
    assert told.windows and at <= told.earliest < told.deadline
    for start, end in told.windows:
        assert start < end and cal.open_seconds_between(start, end) == (end - start).total_seconds()
        assert end_of_local_day(told.day - timedelta(days=1), ctz) <= start and end <= end_of_local_day(told.day, ctz)
        if p.customer_hours is not None and not told.outside_customer_hours:
            lo, hi = p.customer_hours
            assert _local(told.day, lo, ctz) <= start and end <= _local(told.day, hi, ctz)
    assert told.outside_customer_hours is False or p.when_no_overlap == WhenNoOverlap.SITE_HOURS

    # "Today" is the customer's today, with at least the cut-off of callable time left.
    customer_today = at.astimezone(ctz).date()
    assert told.day >= customer_today
    assert told.next_business_day == (told.day != customer_today)
    if not told.next_business_day:
        assert told.callable_seconds >= p.cutoff_minutes * 60


def test_the_issue_friday_afternoon_karachi_is_promised_monday_not_today() -> None:
    """16:02 UTC on a Friday is 21:02 in Karachi: past its calling hours, so Monday (issue 12)."""
    at = datetime(2026, 12, 4, 16, 2, tzinfo=UTC)
    told = decide_promise(CALENDARS.default, PromisePolicy(), at, "Asia/Karachi")
    assert isinstance(told, Promise) and told.next_business_day
    assert told.deadline == datetime(2026, 12, 7, 16, 0, tzinfo=UTC)  # Monday 21:00 PKT
    assert told.sentence() == (
        "It is too late to call you back today. We will call you back on Monday 7 December by 21:00 "
        "(Asia/Karachi time)."
    )


def test_auckland_in_summer_is_never_promised_months_away() -> None:
    """08:00-21:00 NZDT never meets Mon-Fri 08-18 UTC: decline by default, or the site's hours said plainly."""
    at = datetime(2026, 12, 4, 16, 2, tzinfo=UTC)
    refused = decide_promise(CALENDARS.default, PromisePolicy(), at, "Pacific/Auckland")
    assert isinstance(refused, NoPromise)
    assert refused.next_open == at and "Please call us now: we are open." in refused.sentence()  # open now
    evening = decide_promise(CALENDARS.default, PromisePolicy(), at + timedelta(hours=3), "Pacific/Auckland")
    assert isinstance(evening, NoPromise) and evening.next_open == datetime(2026, 12, 7, 8, 0, tzinfo=UTC)
    assert "Monday 7 December at 21:00 your time (Pacific/Auckland)" in evening.sentence()
    plain = decide_promise(
        CALENDARS.default, PromisePolicy(when_no_overlap=WhenNoOverlap.SITE_HOURS), at, "Pacific/Auckland"
    )
    assert isinstance(plain, Promise) and plain.outside_customer_hours
    assert plain.deadline <= horizon_end(CALENDARS.default, at, 2)
    assert "your time (Pacific/Auckland), outside your usual hours" in plain.sentence()
