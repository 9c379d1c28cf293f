"""Pure lifecycle rules: planning, preferred windows, retries, at risk, boost, preferred-agent fallback."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.callback.lifecycle import (
    CloseReason,
    Policy,
    Status,
    callable_windows,
    decide_attempt,
    evaluate,
    moment_with_remaining,
    plan_commitment,
    priority_boost,
    slack_seconds,
)
from shared.business_hours import BusinessCalendars, SiteCalendar
from shared.events import AttemptResult
from tests.callback.conftest import SITES, berlin


@pytest.fixture
def main(calendars: BusinessCalendars) -> SiteCalendar:
    return calendars.for_site("main")


@dataclass
class C:
    """A commitment as the lifecycle sees it (the ORM row has the same attributes)."""

    deadline: datetime
    promise_day: date
    not_before: datetime
    initial_slack_seconds: float
    status: str = Status.PENDING.value
    customer_timezone: str | None = None
    at_risk: bool = False
    promised_by_agent_id: str | None = None
    preferred_until: datetime | None = None
    released_to_agent_id: str | None = None
    attempts: int = 0


def commitment(main: SiteCalendar, policy: Policy, at: datetime, **kw: object) -> C:
    plan = plan_commitment(main, policy, requested_at=at, customer_tz=None, **kw)  # type: ignore[arg-type]
    return C(
        deadline=plan.deadline,
        promise_day=plan.promise_day,
        not_before=plan.not_before,
        initial_slack_seconds=plan.initial_slack_seconds,
        preferred_until=plan.preferred_until,
    )


def test_plan_same_day_and_honest_text(main: SiteCalendar, policy: Policy) -> None:
    plan = plan_commitment(main, policy, requested_at=berlin(2026, 3, 25, 10, 0), customer_tz=None)
    assert plan.deadline == berlin(2026, 3, 25, 18, 0) and not plan.next_business_day
    assert plan.promise_text == "We will call you back today by 18:00."
    late = plan_commitment(main, policy, requested_at=berlin(2026, 3, 25, 17, 45), customer_tz=None)
    assert late.next_business_day
    assert late.promise_text.startswith("It is too late to call you back today. We will call you back on Thursday 26")
    sunday = plan_commitment(main, policy, requested_at=berlin(2026, 3, 29, 10, 0), customer_tz=None)
    assert sunday.promise_text.startswith("We are closed today. We will call you back on Monday 30 March by 18:00")


def test_plan_speaks_the_customers_clock(main: SiteCalendar, policy: Policy) -> None:
    plan = plan_commitment(main, policy, requested_at=berlin(2026, 3, 30, 9, 0), customer_tz="America/New_York")
    # Customer calling hours 08:00-21:00 New York: from 14:00 Munich; the site closes at 18:00 = 12:00 NY.
    assert plan.not_before == berlin(2026, 3, 30, 14, 0)
    assert plan.promise_text == "We will call you back today by 12:00 (America/New_York time)."


def test_an_unknown_customer_timezone_from_an_event_falls_back_to_the_site(main: SiteCalendar, policy: Policy) -> None:
    plan = plan_commitment(main, policy, requested_at=berlin(2026, 3, 25, 10, 0), customer_tz="Mars/Olympus")
    assert plan.deadline == berlin(2026, 3, 25, 18, 0)


def test_preferred_window_honoured_when_it_fits(main: SiteCalendar, policy: Policy) -> None:
    at = berlin(2026, 3, 25, 9, 0)
    fits = plan_commitment(
        main,
        policy,
        requested_at=at,
        customer_tz=None,
        preferred_window=(berlin(2026, 3, 25, 14, 0), berlin(2026, 3, 25, 15, 0)),
    )
    assert fits.window_honoured and fits.not_before == berlin(2026, 3, 25, 14, 0)
    assert fits.window == (berlin(2026, 3, 25, 14, 0), berlin(2026, 3, 25, 15, 0))
    assert "between 14:00 and 15:00 as you asked" in fits.promise_text
    # Partly after closing: clipped to what is callable.
    clipped = plan_commitment(
        main,
        policy,
        requested_at=at,
        customer_tz=None,
        preferred_window=(berlin(2026, 3, 25, 17, 30), berlin(2026, 3, 25, 19, 0)),
    )
    assert clipped.window == (berlin(2026, 3, 25, 17, 30), berlin(2026, 3, 25, 18, 0))
    # After the deadline (tomorrow): not honoured, and the promise says so.
    later = plan_commitment(
        main,
        policy,
        requested_at=at,
        customer_tz=None,
        preferred_window=(berlin(2026, 3, 26, 10, 0), berlin(2026, 3, 26, 11, 0)),
    )
    assert not later.window_honoured and later.not_before == berlin(2026, 3, 25, 9, 0)
    assert "preferred time was not possible" in later.promise_text


def test_retry_spacing_and_max_attempts(main: SiteCalendar, policy: Policy) -> None:
    c = commitment(main, policy, berlin(2026, 3, 25, 9, 0))
    windows = callable_windows(main, policy, c)  # type: ignore[arg-type]
    c.attempts = 1
    d = decide_attempt(c, AttemptResult.NO_ANSWER, berlin(2026, 3, 25, 9, 5), windows, policy)  # type: ignore[arg-type]
    assert d.status == Status.PENDING and d.not_before == berlin(2026, 3, 25, 9, 35)
    c.attempts = 2
    d = decide_attempt(c, AttemptResult.BUSY, berlin(2026, 3, 25, 10, 0), windows, policy)  # type: ignore[arg-type]
    assert d.not_before == berlin(2026, 3, 25, 10, 30)
    c.attempts = 3
    d = decide_attempt(c, AttemptResult.VOICEMAIL, berlin(2026, 3, 25, 11, 0), windows, policy)  # type: ignore[arg-type]
    assert d.status == Status.CLOSED and d.close_reason == CloseReason.ATTEMPTS_EXHAUSTED
    c.attempts = 1
    assert (
        decide_attempt(c, AttemptResult.REACHED, berlin(2026, 3, 25, 9, 5), windows, policy).status == Status.FULFILLED
    )  # type: ignore[arg-type]
    wrong = decide_attempt(c, AttemptResult.WRONG_NUMBER, berlin(2026, 3, 25, 9, 5), windows, policy)  # type: ignore[arg-type]
    assert wrong.status == Status.CLOSED and wrong.close_reason == CloseReason.WRONG_NUMBER


def test_last_retry_is_compressed_to_fit_before_the_deadline(main: SiteCalendar, policy: Policy) -> None:
    c = commitment(main, policy, berlin(2026, 3, 25, 9, 0))
    windows = callable_windows(main, policy, c)  # type: ignore[arg-type]
    c.attempts = 1
    # 17:35 + 30 min is past 17:50 (deadline 18:00 minus the 10-minute reserve): retry at 17:50.
    d = decide_attempt(c, AttemptResult.NO_ANSWER, berlin(2026, 3, 25, 17, 35), windows, policy)  # type: ignore[arg-type]
    assert d.not_before == berlin(2026, 3, 25, 17, 50)
    # Never closer than the minimum spacing.
    d = decide_attempt(c, AttemptResult.NO_ANSWER, berlin(2026, 3, 25, 17, 48), windows, policy)  # type: ignore[arg-type]
    assert d.not_before == berlin(2026, 3, 25, 17, 53)


def test_retry_skips_closed_hours(calendars: BusinessCalendars, policy: Policy) -> None:
    lunch = SiteCalendar.from_config(
        "l", {"timezone": "Europe/Berlin", "hours": {"wed": ["08:00-12:00", "13:00-18:00"]}}
    )
    c = commitment(lunch, policy, berlin(2026, 3, 25, 9, 0))
    windows = callable_windows(lunch, policy, c)  # type: ignore[arg-type]
    c.attempts = 1
    d = decide_attempt(c, AttemptResult.NO_ANSWER, berlin(2026, 3, 25, 11, 45), windows, policy)  # type: ignore[arg-type]
    assert d.not_before == berlin(2026, 3, 25, 13, 0)


def test_at_risk_and_breach_times(main: SiteCalendar, policy: Policy) -> None:
    c = commitment(main, policy, berlin(2026, 3, 25, 9, 0))
    windows = callable_windows(main, policy, c)  # type: ignore[arg-type]
    early = evaluate(c, windows, berlin(2026, 3, 25, 9, 0), policy)  # type: ignore[arg-type]
    # At risk when less than reserve (10 min) + threshold (60 min) of callable time is left: 16:50.
    assert not early.becomes_at_risk and early.next_check_at == berlin(2026, 3, 25, 16, 50)
    risky = evaluate(c, windows, berlin(2026, 3, 25, 16, 50), policy)  # type: ignore[arg-type]
    assert risky.becomes_at_risk and risky.slack_seconds == 3600
    c.at_risk = True
    assert evaluate(c, windows, berlin(2026, 3, 25, 16, 51), policy).next_check_at == c.deadline  # type: ignore[arg-type]
    assert evaluate(c, windows, berlin(2026, 3, 25, 18, 0), policy).breach  # type: ignore[arg-type]
    c.status = Status.IN_PROGRESS.value  # a call under way at the deadline gets a grace period
    assert not evaluate(c, windows, berlin(2026, 3, 25, 18, 0), policy).breach  # type: ignore[arg-type]
    assert evaluate(c, windows, berlin(2026, 3, 25, 18, 30), policy).breach  # type: ignore[arg-type]


def test_preferred_agent_gets_the_first_share_of_the_slack(main: SiteCalendar, policy: Policy) -> None:
    c = commitment(main, policy, berlin(2026, 3, 25, 8, 0), promised_by_agent=True)
    # 10 h callable - 10 min reserve = 590 min slack; 60 min of it is the at-risk margin; half of the
    # remaining 530 min (265 min) belongs to the promising agent: until 12:25.
    assert c.preferred_until == berlin(2026, 3, 25, 12, 25)
    windows = callable_windows(main, policy, c)  # type: ignore[arg-type]
    c.status, c.released_to_agent_id = Status.RELEASED.value, "a1"
    assert evaluate(c, windows, berlin(2026, 3, 25, 12, 0), policy).next_check_at == c.preferred_until  # type: ignore[arg-type]
    assert evaluate(c, windows, berlin(2026, 3, 25, 12, 25), policy).fall_back_to_pool  # type: ignore[arg-type]


@settings(max_examples=200, deadline=None)
@given(
    start=st.datetimes(min_value=datetime(2026, 1, 1), max_value=datetime(2026, 12, 31)).map(
        lambda d: d.replace(tzinfo=UTC)
    ),
    steps=st.lists(st.integers(1, 240), min_size=2, max_size=10),
)
def test_boost_never_falls_as_the_deadline_approaches(start: datetime, steps: list[int]) -> None:
    main = BusinessCalendars.from_config(SITES).for_site("main")
    policy = Policy()
    c = commitment(main, policy, start)
    windows = callable_windows(main, policy, c)  # type: ignore[arg-type]
    now, last = c.not_before, -1.0
    for minutes in steps:
        now += timedelta(minutes=minutes)
        boost = priority_boost(c, slack_seconds(windows, c.deadline, now, policy), policy)  # type: ignore[arg-type]
        assert 0.0 <= boost <= policy.max_boost
        assert boost >= last
        last = boost


def test_moment_with_remaining_walks_back_over_gaps() -> None:
    w = [
        (datetime(2026, 1, 1, 8, tzinfo=UTC), datetime(2026, 1, 1, 12, tzinfo=UTC)),
        (datetime(2026, 1, 1, 13, tzinfo=UTC), datetime(2026, 1, 1, 14, tzinfo=UTC)),
    ]
    assert moment_with_remaining(w, 1800) == datetime(2026, 1, 1, 13, 30, tzinfo=UTC)
    assert moment_with_remaining(w, 7200) == datetime(2026, 1, 1, 11, 0, tzinfo=UTC)
    assert moment_with_remaining(w, 10**6) == datetime(2026, 1, 1, 8, tzinfo=UTC)
