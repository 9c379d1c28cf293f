"""Business calendars and the two-clock same-day deadline (shared/business_hours.py)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.business_hours import BusinessCalendars, SiteCalendar, SiteConfig, load_sites_file, parse_periods
from tests.callback.conftest import BERLIN, NEW_YORK, SITES, berlin

TOKYO = ZoneInfo("Asia/Tokyo")


@pytest.fixture
def main(calendars: BusinessCalendars) -> SiteCalendar:
    return calendars.for_site("main")


def test_opening_hours_weekdays_saturday_and_sunday(main: SiteCalendar) -> None:
    assert main.is_open(berlin(2026, 3, 25, 8, 0))  # Wednesday opening instant is open
    assert not main.is_open(berlin(2026, 3, 25, 18, 0))  # closing instant is closed ([start, end))
    assert main.is_open(berlin(2026, 3, 28, 12, 59))  # Saturday morning
    assert not main.is_open(berlin(2026, 3, 28, 13, 0))
    assert not main.is_business_day(date(2026, 3, 29))  # Sunday
    assert main.closing_time(date(2026, 3, 28)) == berlin(2026, 3, 28, 13, 0)
    assert main.closing_time(date(2026, 3, 29)) is None


def test_public_holidays_per_subdivision_and_extra_closed_dates(
    main: SiteCalendar, calendars: BusinessCalendars
) -> None:
    assert main.holiday_name(date(2026, 1, 6)) is not None  # Epiphany: Bavaria, not all of Germany
    assert not main.is_business_day(date(2026, 1, 6))
    berlin_city = SiteCalendar.from_config("ber", {"timezone": "Europe/Berlin", "country": "DE", "subdiv": "BE"})
    assert berlin_city.is_business_day(date(2026, 1, 6))
    assert not main.is_business_day(date(2026, 12, 24))  # configured closure
    assert not calendars.for_site("nyc").is_business_day(date(2026, 7, 3))  # Independence Day observed
    assert main.next_open(berlin(2026, 1, 5, 18, 30)) == berlin(2026, 1, 7, 8, 0)


def test_special_hours_override_the_week() -> None:
    cal = SiteCalendar.from_config(
        "x", {"timezone": "UTC", "special_hours": {"2026-03-25": ["10:00-12:00"], "2026-03-26": []}}
    )
    assert cal.hours_on(date(2026, 3, 25)) == [
        (datetime(2026, 3, 25, 10, tzinfo=UTC), datetime(2026, 3, 25, 12, tzinfo=UTC))
    ]
    assert not cal.is_business_day(date(2026, 3, 26))


def test_opening_hours_are_wall_clock_across_dst(main: SiteCalendar) -> None:
    # Europe/Berlin springs forward on Sunday 29 March 2026 and falls back on Sunday 25 October 2026.
    before, after = main.hours_on(date(2026, 3, 27))[0], main.hours_on(date(2026, 3, 30))[0]
    assert before[0].astimezone(UTC).hour == 7  # 08:00 CET
    assert after[0].astimezone(UTC).hour == 6  # 08:00 CEST
    assert before[0].astimezone(BERLIN).hour == after[0].astimezone(BERLIN).hour == 8


def test_dst_day_length_with_a_24h_site() -> None:
    cal = SiteCalendar.from_config("24", {"timezone": "Europe/Berlin", "hours": {"sun": ["00:00-24:00"]}})
    spring, autumn = date(2026, 3, 29), date(2026, 10, 25)
    day = lambda d: cal.open_seconds_between(*cal.hours_on(d)[0])  # noqa: E731
    assert day(spring) == 23 * 3600
    assert day(autumn) == 25 * 3600


def test_same_day_deadline_and_cutoff(main: SiteCalendar) -> None:
    d = main.same_day_deadline(berlin(2026, 3, 25, 10, 0), cutoff_minutes=30)
    assert (d.deadline, d.next_business_day, d.day) == (berlin(2026, 3, 25, 18, 0), False, date(2026, 3, 25))
    assert d.earliest == berlin(2026, 3, 25, 10, 0)
    ok = main.same_day_deadline(berlin(2026, 3, 25, 17, 30), cutoff_minutes=30)
    assert ok.deadline == berlin(2026, 3, 25, 18, 0) and not ok.next_business_day
    late = main.same_day_deadline(berlin(2026, 3, 25, 17, 31), cutoff_minutes=30)
    assert late.deadline == berlin(2026, 3, 26, 18, 0) and late.next_business_day
    assert late.earliest == berlin(2026, 3, 26, 8, 0)


def test_before_opening_is_still_today(main: SiteCalendar) -> None:
    d = main.same_day_deadline(berlin(2026, 3, 25, 6, 0), cutoff_minutes=30)
    assert d.earliest == berlin(2026, 3, 25, 8, 0) and d.deadline == berlin(2026, 3, 25, 18, 0)
    assert not d.next_business_day


def test_weekend_and_holiday_roll_to_next_business_day(main: SiteCalendar) -> None:
    sat = main.same_day_deadline(berlin(2026, 3, 28, 14, 0), 30)  # after Saturday closing
    assert sat.deadline == berlin(2026, 3, 30, 18, 0) and sat.next_business_day  # Monday, over the DST change
    sunday = main.same_day_deadline(berlin(2026, 3, 29, 11, 0), 30)
    assert sunday.deadline == berlin(2026, 3, 30, 18, 0) and sunday.next_business_day
    easter = main.same_day_deadline(berlin(2026, 4, 2, 17, 45), 30)  # Thursday before Good Friday
    assert easter.deadline == berlin(2026, 4, 4, 13, 0)  # Saturday morning (Good Friday closed)
    epiphany = main.same_day_deadline(berlin(2026, 1, 6, 9, 0), 30)
    assert epiphany.deadline == berlin(2026, 1, 7, 18, 0) and epiphany.next_business_day


def test_customer_behind_the_site_follows_both_clocks(main: SiteCalendar) -> None:
    # 10:00 in Munich is 05:00 in New York: same customer date, site closes first.
    d = main.same_day_deadline(berlin(2026, 3, 25, 10, 0), 30, customer_tz=NEW_YORK)
    assert d.deadline == berlin(2026, 3, 25, 18, 0) and d.day == date(2026, 3, 25)
    # With customer calling hours 08:00-21:00 New York time we cannot call before 14:00 Munich (13:00 in
    # the 3-week window where the US is already on summer time and Europe not yet: 25 March is inside it).
    h = main.same_day_deadline(berlin(2026, 3, 25, 10, 0), 30, customer_tz=NEW_YORK, customer_hours=(480, 1260))
    assert h.earliest == berlin(2026, 3, 25, 13, 0)
    # 23:30 on Tuesday in New York = 04:30 Wednesday in Munich: the customer's 'today' (Tuesday) is over
    # for us, so this is a next-day promise even though the site opens the same (Munich) day.
    n = main.same_day_deadline(datetime(2026, 3, 24, 23, 30, tzinfo=NEW_YORK), 30, customer_tz=NEW_YORK)
    assert n.next_business_day and n.day == date(2026, 3, 25)
    assert n.deadline == berlin(2026, 3, 25, 18, 0)


def test_customer_ahead_of_the_site_has_an_earlier_deadline(main: SiteCalendar) -> None:
    # Tokyo is 8 hours ahead of Munich in winter: the customer's day ends at 16:00 Munich time.
    d = main.same_day_deadline(berlin(2026, 3, 25, 10, 0), 30, customer_tz=TOKYO)
    assert d.deadline == berlin(2026, 3, 25, 16, 0) and not d.next_business_day
    # Past 15:30 Munich there is less than the 30-minute cutoff left of the Tokyo day: next day, and that
    # next day (Thursday in Tokyo) is callable from 08:00 Munich until Tokyo midnight (16:00 Munich).
    late = main.same_day_deadline(berlin(2026, 3, 25, 15, 45), 30, customer_tz=TOKYO)
    assert late.next_business_day and late.day == date(2026, 3, 26)
    assert late.deadline == berlin(2026, 3, 26, 16, 0)
    # After the switch to summer time Tokyo is 7 hours ahead: the deadline moves to 17:00 Munich.
    summer = main.same_day_deadline(berlin(2026, 3, 30, 10, 0), 30, customer_tz=TOKYO)
    assert summer.deadline == berlin(2026, 3, 30, 17, 0)


def test_fall_back_day_deadline(calendars: BusinessCalendars) -> None:
    nyc = calendars.for_site("nyc")
    # US clocks fall back on Sunday 1 November 2026; Monday 2 November the site is on EST.
    d = nyc.same_day_deadline(datetime(2026, 10, 30, 18, 30, tzinfo=NEW_YORK), 30)  # Friday after closing
    assert d.deadline == datetime(2026, 11, 2, 18, 0, tzinfo=NEW_YORK)
    assert d.deadline.astimezone(UTC) == datetime(2026, 11, 2, 23, 0, tzinfo=UTC)
    assert d.next_business_day


def test_customer_context_for_intake(main: SiteCalendar) -> None:
    local, open_now = main.customer_context(berlin(2026, 3, 25, 10, 0), "America/New_York")
    assert (local.hour, local.tzinfo.key, open_now) == (5, "America/New_York", True)  # type: ignore[union-attr]
    local, open_now = main.customer_context(berlin(2026, 3, 29, 10, 0))
    assert (local.hour, open_now) == (10, False)  # Sunday: closed; site clock when no customer zone


def test_naive_datetimes_are_rejected(main: SiteCalendar) -> None:
    with pytest.raises(ValueError, match="naive"):
        main.is_open(datetime(2026, 3, 25, 10, 0))


@pytest.mark.parametrize(
    "config, message",
    [
        ({"timezone": "Mars/Olympus"}, "unknown timezone"),
        ({"hours": {"mon": ["18:00-08:00"]}}, "ends before it starts"),
        ({"hours": {"mon": ["08:00-12:00", "11:00-13:00"]}}, "overlap"),
        ({"hours": {"funday": ["08:00-12:00"]}}, "unknown weekday"),
        ({"hours": {"mon": ["8-12"]}}, "HH:MM"),
        ({"country": "XX"}, "no holiday calendar"),
    ],
)
def test_bad_config_is_rejected_with_a_reason(config: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SiteConfig.model_validate(config)


def test_sites_file_yaml(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import yaml

    path = tmp_path / "sites.yaml"
    path.write_text(yaml.safe_dump(SITES, default_flow_style=False), encoding="utf-8")
    cals = load_sites_file(path)
    assert "main" in cals and "nowhere" not in cals
    assert cals.for_site("nowhere").name == "default"
    assert cals.for_site("main").tz.key == "Europe/Berlin"


def test_parse_periods_sorts_and_allows_midnight() -> None:
    assert parse_periods(["13:00-24:00", "08:00-12:00"]) == ((480, 720), (780, 1440))


# --------------------------------------------------------------------------------------------------
# Invariants
# --------------------------------------------------------------------------------------------------

ZONES = ["Europe/Berlin", "America/New_York", "Asia/Tokyo", "Australia/Sydney", "Asia/Kolkata", "UTC"]
instants = st.datetimes(min_value=datetime(2026, 1, 1), max_value=datetime(2027, 12, 31)).map(
    lambda d: d.replace(tzinfo=UTC)
)


@settings(max_examples=300, deadline=None)
@given(at=instants, customer=st.sampled_from(ZONES), cutoff=st.integers(0, 180), hours=st.booleans())
def test_deadline_invariants(at: datetime, customer: str, cutoff: int, hours: bool) -> None:
    cal = BusinessCalendars.from_config(SITES).for_site("main")
    ctz = ZoneInfo(customer)
    customer_hours = (480, 1260) if hours else None
    d = cal.same_day_deadline(at, cutoff, customer_tz=ctz, customer_hours=customer_hours)
    # Never before the request, and there is callable time between the first try and the deadline.
    assert at <= d.earliest < d.deadline
    # The deadline closes callable time that lies inside business hours of a business day.
    last = d.deadline - timedelta(microseconds=1)
    assert cal.is_open(last) and cal.is_business_day(last.astimezone(cal.tz).date())
    assert cal.is_open(d.earliest)
    # The promise is for the customer's local date of the deadline, and 'today' only if it is today.
    assert last.astimezone(ctz).date() == d.day
    assert d.next_business_day == (d.day != at.astimezone(ctz).date())
    # Same day only with at least the cutoff of callable time left.
    if not d.next_business_day:
        assert d.callable_seconds >= cutoff * 60
    # Customer calling hours are respected.
    if customer_hours:
        for start, end in d.windows:
            for t in (start, end - timedelta(microseconds=1)):
                local = t.astimezone(ctz)
                assert 8 <= local.hour < 21
