"""The same-day callback promise, decided once: what the customer is told IS what is tracked.

Intake (web form answer, IVR sentence, web page text) and the callback service (the commitment's
deadline and ``promise_text``) call :func:`decide_promise` with the same :class:`PromisePolicy`, read
from one settings source (:class:`shared.settings.PromiseSettings`, ``SWITCHBOARD_PROMISE_*``). Pure:
the clock is an argument, no I/O.

The promise follows two clocks (see :mod:`shared.business_hours`): the site's hours decide when we can
call, the customer's clock decides what "today" means and, with ``customer_hours``, when the customer
may be called at all. Callable = site open AND inside the customer's hours.

**The bound.** No promise lands after the end of the site's ``max_business_days``-th business day after
today (site-local dates, holidays and closures skipped; default 2: a Friday request may be promised for
Monday or Tuesday, never a week later). Where the customer's hours and the site's never meet within that
horizon (Auckland in New Zealand summer against Mon-Fri 08-18 UTC: 08:00-21:00 NZDT is 19:00-08:00 UTC)
:attr:`PromisePolicy.when_no_overlap` decides:

* ``decline`` (default): no promise. A customer would rather hear "we cannot call you back at a time
  that suits you; call us when we are open" than be woken at 3 a.m. or promised a day weeks away. The
  web form answers 422 ``no_callback_possible`` with the site's next opening in the customer's clock; the
  phone caller stays in the queue (and is told so) instead of being promised a callback.
* ``site_hours``: promise within the site's hours regardless of the customer's calling hours, and say
  the customer's local time plainly ("... by 07:00 your time (Pacific/Auckland), outside your usual
  hours"). For deployments whose customers explicitly accept calls at any hour.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from enum import StrEnum
from zoneinfo import ZoneInfo

from shared.business_hours import (
    MAX_LOOKAHEAD_DAYS,
    Interval,
    Period,
    SiteCalendar,
    end_of_local_day,
    seconds_in,
    zone,
)


class WhenNoOverlap(StrEnum):
    """What to do when no callable moment exists within the horizon (see the module docstring)."""

    DECLINE = "decline"
    SITE_HOURS = "site_hours"


@dataclass(frozen=True)
class PromisePolicy:
    """The tunables of a promise; one source for intake and callback (``SWITCHBOARD_PROMISE_*``)."""

    cutoff_minutes: int = 30
    customer_hours: Period | None = (8 * 60, 21 * 60)
    max_business_days: int = 2
    when_no_overlap: WhenNoOverlap = WhenNoOverlap.DECLINE


@dataclass(frozen=True)
class Promise:
    """A promise we can keep, and the words that tell it (both from this one value)."""

    requested_at: datetime  # UTC
    deadline: datetime  # end of the last callable moment (exclusive), UTC
    earliest: datetime  # first callable moment at or after the request, UTC
    day: date  # the customer's local date the promise is for
    next_business_day: bool  # "today" was not possible, and we say so
    windows: tuple[Interval, ...]  # callable intervals between earliest and deadline, UTC
    customer_tz: ZoneInfo
    site_tz: ZoneInfo
    site_closed_today: bool  # the site is closed all (site-local) day: "We are closed today"
    outside_customer_hours: bool = False  # when_no_overlap=site_hours: the customer's hours were waived

    @property
    def local_deadline(self) -> datetime:
        return self.deadline.astimezone(self.customer_tz)

    @property
    def callable_seconds(self) -> float:
        return seconds_in(self.windows)

    def sentence(self, window: Interval | None = None, window_asked: bool = False) -> str:
        """What we tell the customer, in the customer's clock: honest about "not today" and the window."""
        by = self.local_deadline
        zone_note = "" if self.customer_tz.key == self.site_tz.key else f" ({self.customer_tz.key} time)"
        if self.outside_customer_hours:
            zone_note = f" your time ({self.customer_tz.key}), outside your usual hours"
        if self.next_business_day:
            why = "We are closed today" if self.site_closed_today else "It is too late to call you back today"
            text = f"{why}. We will call you back on {fmt_day(by)} by {fmt_time(by)}{zone_note}."
        else:
            text = f"We will call you back today by {fmt_time(by)}{zone_note}."
        if window is not None:
            start, end = (w.astimezone(self.customer_tz) for w in window)
            text += f" We will try between {fmt_time(start)} and {fmt_time(end)} as you asked."
        elif window_asked:
            text += " Your preferred time was not possible before then, so we will call as soon as we can."
        return text


@dataclass(frozen=True)
class NoPromise:
    """No callable moment within the bound: we promise nothing, and say when to reach us instead."""

    requested_at: datetime
    horizon: datetime  # the latest deadline the bound allowed, UTC
    next_open: datetime | None  # when the site opens next, UTC (None: not within a year)
    customer_tz: ZoneInfo

    def sentence(self) -> str:
        if self.next_open is None:
            return "We cannot offer you a callback. Please contact us again later."
        at = self.next_open.astimezone(self.customer_tz)
        if self.next_open <= self.requested_at:
            return "We cannot call you back at a time that suits you in the next days. Please call us now: we are open."
        return (
            "We cannot call you back at a time that suits you in the next days. "
            f"Please call us when we are open: next on {fmt_day(at)} at {fmt_time(at)} "
            f"your time ({self.customer_tz.key})."
        )


def fmt_time(at: datetime) -> str:
    return at.strftime("%H:%M")


def fmt_day(at: datetime) -> str:
    return f"{at.strftime('%A')} {at.day} {at.strftime('%B')}"


def customer_zone(cal: SiteCalendar, customer_tz: str | ZoneInfo | None) -> ZoneInfo:
    """The customer's clock; without a known (valid) timezone, the site's."""
    if isinstance(customer_tz, ZoneInfo):
        return customer_tz
    if not customer_tz:
        return cal.tz
    try:
        return zone(customer_tz)
    except ValueError:
        return cal.tz


def horizon_end(cal: SiteCalendar, at: datetime, max_business_days: int) -> datetime:
    """End (UTC) of the site's ``max_business_days``-th business day after ``at``'s site-local date.

    With no business day ahead within the look-ahead, the end of the site-local today (nothing later
    can be promised)."""
    day = at.astimezone(cal.tz).date()
    last = day
    counted = 0
    for offset in range(1, MAX_LOOKAHEAD_DAYS + 1):
        if counted >= max_business_days:
            break
        candidate = day + timedelta(days=offset)
        if cal.is_business_day(candidate):
            counted += 1
            last = candidate
    return end_of_local_day(last, cal.tz)


def _find(
    cal: SiteCalendar,
    at: datetime,
    ctz: ZoneInfo,
    hours: Period | None,
    cutoff_minutes: int,
    horizon: datetime,
) -> tuple[date, list[Interval], int] | None:
    today = at.astimezone(ctz).date()
    offset = 0
    while True:
        day = today + timedelta(days=offset)
        day_start = end_of_local_day(day - timedelta(days=1), ctz)
        if day_start >= horizon:
            return None
        windows = [
            (max(s, at), min(e, end_of_local_day(day, ctz)))
            for s, e in cal.callable_on(day, ctz, hours)
            if e > at and s < end_of_local_day(day, ctz)
        ]
        if windows and not (offset == 0 and seconds_in(windows) < cutoff_minutes * 60):
            if windows[-1][1] > horizon:
                return None  # the first day we could call ends beyond the bound
            return day, windows, offset
        offset += 1


def decide_promise(
    cal: SiteCalendar,
    policy: PromisePolicy,
    at: datetime,
    customer_tz: str | ZoneInfo | None,
    *,
    when_no_overlap: WhenNoOverlap | None = None,
) -> Promise | NoPromise:
    """THE promise for a request at ``at`` (aware): the earliest customer-local day with callable time
    (today only with at least ``cutoff_minutes`` of it left), within the bound; else per
    ``when_no_overlap`` (the argument overrides the policy's, e.g. for requests already accepted)."""
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError("naive datetime: pass a timezone-aware datetime")
    at = at.astimezone(UTC)
    ctz = customer_zone(cal, customer_tz)
    horizon = horizon_end(cal, at, policy.max_business_days)
    found = _find(cal, at, ctz, policy.customer_hours, policy.cutoff_minutes, horizon)
    waived = False
    mode = when_no_overlap or policy.when_no_overlap
    if found is None and mode == WhenNoOverlap.SITE_HOURS and policy.customer_hours is not None:
        found = _find(cal, at, ctz, None, policy.cutoff_minutes, horizon)
        waived = found is not None
    if found is None:
        try:
            next_open: datetime | None = cal.next_open(at).astimezone(UTC)
        except ValueError:
            next_open = None
        return NoPromise(requested_at=at, horizon=horizon, next_open=next_open, customer_tz=ctz)
    day, windows, offset = found
    return Promise(
        requested_at=at,
        deadline=windows[-1][1],
        earliest=windows[0][0],
        day=day,
        next_business_day=offset > 0,
        windows=tuple(windows),
        customer_tz=ctz,
        site_tz=cal.tz,
        site_closed_today=not cal.is_business_day(at.astimezone(cal.tz).date()),
        outside_customer_hours=waived,
    )
