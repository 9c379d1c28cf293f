"""Business calendars per site: when a site is open, and what "today" means for a callback promise.

Pure (no I/O except the explicit :func:`load_sites_file` helper), clock passed in by the caller.

A :class:`SiteCalendar` knows a site's IANA timezone, its opening hours per weekday (several periods a
day allowed, e.g. a lunch break; ``24:00`` closes at midnight), its public holidays (``holidays``
package, per country and subdivision), extra closed dates and special hours for single dates.
Opening hours are *wall-clock* times in the site's timezone, so 09:00-17:00 stays 09:00-17:00 on a
daylight-saving change day (that day is then 7 or 9 hours long in UTC). A wall-clock time that does not
exist (spring forward gap) is shifted forward by the gap; an ambiguous one (fall back) means the first
occurrence. Every datetime returned is timezone-aware; inputs must be aware too. Intervals and
deadlines are returned in **UTC**: Python compares and subtracts two datetimes that share one tzinfo by
wall clock, ignoring a DST offset change between them, so arithmetic must happen in UTC (convert with
``.astimezone(calendar.tz)`` for display). Single instants (``closing_time``, ``next_open``) are in the
site's timezone.

The services decide the callback promise with :func:`shared.promise.decide_promise` (the same rule,
plus a bound on how far ahead a promise may land); :meth:`SiteCalendar.same_day_deadline` is the
unbounded rule. Both follow two clocks at once:

* the **site's** hours decide *when we can call* (agents are there);
* the **customer's** clock decides what *"today"* means (and, optionally, at which local hours a
  customer may be called at all, e.g. 08:00-21:00 as consumer-protection rules require).

So the deadline is the end of the last callable moment on the customer's current local date, where
callable = site open AND inside the customer's permitted calling hours. If too little callable time
remains (less than ``cutoff_minutes``) or nothing is callable on that date, the promise moves to the
customer's next local date that has callable time, and says so (``next_business_day=True``).

Configuration (YAML or JSON, or the same dict from pydantic settings)::

    sites:
      main:
        timezone: Europe/Berlin
        country: DE          # optional: public holidays via `holidays`
        subdiv: BY           # optional: region (state/province)
        hours:               # weekday -> list of "HH:MM-HH:MM"; missing weekday = closed
          mon: ["08:00-12:00", "13:00-18:00"]
          tue: ["08:00-18:00"]
          sat: ["09:00-13:00"]
        closed_dates: ["2026-12-24"]
        special_hours: {"2026-12-31": ["08:00-12:00"]}
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from functools import cached_property
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import holidays as holidays_lib
from pydantic import BaseModel, ConfigDict, Field, field_validator

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
MINUTES_PER_DAY = 24 * 60
# How far ahead we look for the next open day before concluding a calendar is never open.
MAX_LOOKAHEAD_DAYS = 370

Period = tuple[int, int]  # (start minute, end minute) of a local day; end may be 1440 (24:00)
Interval = tuple[datetime, datetime]  # aware, [start, end)


# --------------------------------------------------------------------------------------------------
# Parsing
# --------------------------------------------------------------------------------------------------


def _parse_hhmm(text: str) -> int:
    hh, _, mm = text.strip().partition(":")
    if not hh.isdigit() or not mm.isdigit() or len(mm) != 2:
        raise ValueError(f"time {text!r} is not HH:MM")
    minutes = int(hh) * 60 + int(mm)
    if int(mm) >= 60 or minutes > MINUTES_PER_DAY:
        raise ValueError(f"time {text!r} is out of range (00:00-24:00)")
    return minutes


def parse_periods(specs: Iterable[str]) -> tuple[Period, ...]:
    """``["08:00-12:00", "13:00-18:00"]`` -> sorted, non-overlapping minute periods."""
    periods: list[Period] = []
    for spec in specs:
        start_text, sep, end_text = spec.partition("-")
        if not sep:
            raise ValueError(f"period {spec!r} is not HH:MM-HH:MM")
        start, end = _parse_hhmm(start_text), _parse_hhmm(end_text)
        if end <= start:
            raise ValueError(f"period {spec!r} ends before it starts (overnight periods: split at 24:00)")
        periods.append((start, end))
    periods.sort()
    for (_, end_a), (start_b, _) in zip(periods, periods[1:], strict=False):
        if start_b < end_a:
            raise ValueError(f"periods overlap: {list(specs)!r}")
    return tuple(periods)


def zone(name: str) -> ZoneInfo:
    """An IANA timezone, with a ValueError (not a KeyError subclass) for unknown names.

    ``ZoneInfo`` reads a file named after ``name``: a 300-character name raises ``OSError`` ("File name
    too long") and a directory such as ``America`` ``IsADirectoryError``; both are unknown names too.
    """
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError) as exc:
        raise ValueError(f"unknown timezone {name[:64]!r}") from exc


class SiteConfig(BaseModel):
    """One site's calendar as configured (YAML/JSON/pydantic settings)."""

    model_config = ConfigDict(extra="forbid")

    timezone: str = "UTC"
    country: str | None = Field(None, description="ISO country code for public holidays, e.g. DE")
    subdiv: str | None = Field(None, description="Subdivision for regional holidays, e.g. BY")
    hours: dict[str, list[str]] = Field(
        default_factory=lambda: {d: ["08:00-18:00"] for d in WEEKDAYS[:5]},
        description="weekday (mon..sun) -> periods HH:MM-HH:MM; a missing weekday is closed",
    )
    closed_dates: list[date] = Field(default_factory=list)
    special_hours: dict[date, list[str]] = Field(
        default_factory=dict, description="hours for single dates; [] closes the site that day"
    )

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        zone(value)
        return value

    @field_validator("hours")
    @classmethod
    def _valid_hours(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        for day, specs in value.items():
            if day.lower()[:3] not in WEEKDAYS:
                raise ValueError(f"unknown weekday {day!r} (use mon..sun)")
            parse_periods(specs)
        return value

    @field_validator("special_hours")
    @classmethod
    def _valid_special(cls, value: dict[date, list[str]]) -> dict[date, list[str]]:
        for specs in value.values():
            parse_periods(specs)
        return value

    @field_validator("country")
    @classmethod
    def _known_country(cls, value: str | None) -> str | None:
        if value is not None and value.upper() not in holidays_lib.list_supported_countries():
            raise ValueError(f"no holiday calendar for country {value!r}")
        return value.upper() if value else value


# --------------------------------------------------------------------------------------------------
# The calendar
# --------------------------------------------------------------------------------------------------


def _require_aware(at: datetime) -> None:
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError("naive datetime: pass a timezone-aware datetime")


def _local(day: date, minute: int, tz: ZoneInfo) -> datetime:
    """Wall-clock ``minute`` of ``day`` in ``tz`` as an instant in UTC (24:00 = next midnight).

    A non-existent wall time (DST gap) maps to the instant after the gap, as zoneinfo does for fold=0.
    """
    if minute >= MINUTES_PER_DAY:
        day, minute = day + timedelta(days=1), minute - MINUTES_PER_DAY
    naive = datetime.combine(day, time(minute // 60, minute % 60))
    return naive.replace(tzinfo=tz).astimezone(UTC)


def _intersect(a: list[Interval], b: list[Interval]) -> list[Interval]:
    """Intersection of two sorted lists of disjoint intervals."""
    out: list[Interval] = []
    i = j = 0
    while i < len(a) and j < len(b):
        start = max(a[i][0], b[j][0])
        end = min(a[i][1], b[j][1])
        if start < end:
            out.append((start, end))
        if a[i][1] < b[j][1]:
            i += 1
        else:
            j += 1
    return out


def _clip(intervals: list[Interval], start: datetime, end: datetime) -> list[Interval]:
    return [(max(s, start), min(e, end)) for s, e in intervals if e > start and s < end]


def seconds_in(intervals: Iterable[Interval]) -> float:
    return sum((end - start).total_seconds() for start, end in intervals)


@dataclass(frozen=True)
class Deadline:
    """A callback promise as computed from the calendar (see the module docstring for the clocks)."""

    deadline: datetime  # end of the last callable moment (exclusive), UTC
    earliest: datetime  # first callable moment at or after the request, UTC
    day: date  # the customer's local date the promise is for
    next_business_day: bool  # True when "today" was not possible and we honestly say so
    windows: tuple[Interval, ...]  # callable intervals between earliest and deadline, UTC

    @property
    def callable_seconds(self) -> float:
        return seconds_in(self.windows)


@dataclass(frozen=True)
class SiteCalendar:
    """Opening hours, holidays and closures of one site. Immutable; build with :meth:`from_config`."""

    name: str
    tz: ZoneInfo
    weekly: tuple[tuple[Period, ...], ...]  # index 0 = Monday
    country: str | None = None
    subdiv: str | None = None
    closed_dates: frozenset[date] = frozenset()
    special_hours: Mapping[date, tuple[Period, ...]] = field(default_factory=dict)

    @classmethod
    def from_config(cls, name: str, config: SiteConfig | Mapping[str, Any]) -> SiteCalendar:
        cfg = config if isinstance(config, SiteConfig) else SiteConfig.model_validate(config)
        by_day = {k.lower()[:3]: parse_periods(v) for k, v in cfg.hours.items()}
        return cls(
            name=name,
            tz=zone(cfg.timezone),
            weekly=tuple(by_day.get(d, ()) for d in WEEKDAYS),
            country=cfg.country,
            subdiv=cfg.subdiv,
            closed_dates=frozenset(cfg.closed_dates),
            special_hours={d: parse_periods(v) for d, v in cfg.special_hours.items()},
        )

    @cached_property
    def _holidays(self) -> holidays_lib.HolidayBase | None:
        if not self.country:
            return None
        return holidays_lib.country_holidays(self.country, subdiv=self.subdiv)

    # -- days -------------------------------------------------------------------------------------

    def holiday_name(self, day: date) -> str | None:
        """The public holiday on ``day`` (site's country/subdivision), if any."""
        hol = self._holidays
        return hol.get(day) if hol is not None else None

    def periods_on(self, day: date) -> tuple[Period, ...]:
        """Opening periods of a local date: special hours win, then closures/holidays, then the week."""
        if day in self.special_hours:
            return self.special_hours[day]
        if day in self.closed_dates or self.holiday_name(day) is not None:
            return ()
        return self.weekly[day.weekday()]

    def is_business_day(self, day: date) -> bool:
        return bool(self.periods_on(day))

    def next_business_day(self, day: date) -> date:
        """The first business day strictly after ``day``."""
        for offset in range(1, MAX_LOOKAHEAD_DAYS + 1):
            candidate = day + timedelta(days=offset)
            if self.is_business_day(candidate):
                return candidate
        raise ValueError(f"site {self.name!r} has no business day within {MAX_LOOKAHEAD_DAYS} days")

    def hours_on(self, day: date) -> list[Interval]:
        """Opening intervals of a local date, in UTC."""
        return [(_local(day, s, self.tz), _local(day, e, self.tz)) for s, e in self.periods_on(day)]

    def opening_time(self, day: date) -> datetime | None:
        hours = self.hours_on(day)
        return hours[0][0].astimezone(self.tz) if hours else None

    def closing_time(self, day: date) -> datetime | None:
        """When the site closes on local date ``day`` (end of its last period); None if closed all day."""
        hours = self.hours_on(day)
        return hours[-1][1].astimezone(self.tz) if hours else None

    # -- instants ---------------------------------------------------------------------------------

    def local(self, at: datetime) -> datetime:
        _require_aware(at)
        return at.astimezone(self.tz)

    def is_open(self, at: datetime) -> bool:
        local = self.local(at)
        at_utc = at.astimezone(UTC)
        return any(s <= at_utc < e for s, e in self.hours_on(local.date()))

    def customer_context(self, at: datetime, customer_tz: ZoneInfo | str | None = None) -> tuple[datetime, bool]:
        """(customer's local time, is the site open now): what intake adds to a contact.

        Without a customer timezone the site's clock is used for the customer too.
        """
        ctz = zone(customer_tz) if isinstance(customer_tz, str) else (customer_tz or self.tz)
        _require_aware(at)
        return at.astimezone(ctz), self.is_open(at)

    def open_intervals(self, start: datetime, end: datetime) -> list[Interval]:
        """Open intervals overlapping [start, end), clipped to it, in order (UTC)."""
        _require_aware(start)
        _require_aware(end)
        out: list[Interval] = []
        day = self.local(start).date() - timedelta(days=1)  # a 24:00 period of the day before
        last = self.local(end).date()
        while day <= last:
            out.extend(self.hours_on(day))
            day += timedelta(days=1)
        return _clip(out, start.astimezone(UTC), end.astimezone(UTC))

    def open_seconds_between(self, start: datetime, end: datetime) -> float:
        return seconds_in(self.open_intervals(start, end)) if end > start else 0.0

    def next_open(self, at: datetime) -> datetime:
        """``at`` itself if open, else the next opening instant."""
        day = self.local(at).date()
        at_utc = at.astimezone(UTC)
        for _ in range(MAX_LOOKAHEAD_DAYS + 1):
            for s, e in self.hours_on(day):
                if at_utc < e:
                    return max(s, at_utc).astimezone(self.tz)
            day += timedelta(days=1)
        raise ValueError(f"site {self.name!r} does not open within {MAX_LOOKAHEAD_DAYS} days")

    # -- the promise ------------------------------------------------------------------------------

    def callable_on(
        self,
        day: date,
        customer_tz: ZoneInfo | None = None,
        customer_hours: Period | None = None,
    ) -> list[Interval]:
        """Callable intervals on the *customer's* local date ``day``: site open AND customer allows.

        ``customer_hours`` (minutes, customer-local wall clock) restricts calls, e.g. (480, 1260)
        for 08:00-21:00. Without a customer timezone the site's clock is the customer's clock.
        """
        ctz = customer_tz or self.tz
        lo, hi = customer_hours or (0, MINUTES_PER_DAY)
        allowed = [(_local(day, lo, ctz), _local(day, hi, ctz))]
        return _intersect(self.open_intervals(allowed[0][0], allowed[0][1]), allowed)

    def same_day_deadline(
        self,
        at: datetime,
        cutoff_minutes: int = 0,
        *,
        customer_tz: ZoneInfo | str | None = None,
        customer_hours: Period | None = None,
    ) -> Deadline:
        """The honest callback promise for a request made at ``at``.

        Same customer-local day if at least ``cutoff_minutes`` of callable time remain after ``at``;
        otherwise the next customer-local day with callable time (``next_business_day=True``).
        """
        _require_aware(at)
        ctz = zone(customer_tz) if isinstance(customer_tz, str) else (customer_tz or self.tz)
        today = at.astimezone(ctz).date()
        at_utc = at.astimezone(UTC)
        for offset in range(MAX_LOOKAHEAD_DAYS + 1):
            day = today + timedelta(days=offset)
            windows = _clip(self.callable_on(day, ctz, customer_hours), at_utc, end_of_local_day(day, ctz))
            if not windows:
                continue
            if offset == 0 and seconds_in(windows) < cutoff_minutes * 60:
                continue
            return Deadline(
                deadline=windows[-1][1],
                earliest=windows[0][0],
                day=day,
                next_business_day=offset > 0,
                windows=tuple(windows),
            )
        raise ValueError(f"site {self.name!r} has no callable time within {MAX_LOOKAHEAD_DAYS} days")


def end_of_local_day(day: date, tz: ZoneInfo) -> datetime:
    """End of a local date (next local midnight), in UTC."""
    return _local(day, MINUTES_PER_DAY, tz)


# --------------------------------------------------------------------------------------------------
# Several sites
# --------------------------------------------------------------------------------------------------


class SitesConfig(BaseModel):
    """``{"sites": {name: SiteConfig}, "default": SiteConfig}``: the file format of a sites config."""

    model_config = ConfigDict(extra="forbid")

    sites: dict[str, SiteConfig] = Field(default_factory=dict)
    default: SiteConfig = Field(default_factory=SiteConfig, description="for sites not listed")


@dataclass(frozen=True)
class BusinessCalendars:
    """Calendars by site name; unknown sites use the default calendar (and are logged by callers)."""

    sites: Mapping[str, SiteCalendar]
    default: SiteCalendar

    @classmethod
    def from_config(cls, config: SitesConfig | Mapping[str, Any]) -> BusinessCalendars:
        cfg = config if isinstance(config, SitesConfig) else SitesConfig.model_validate(config)
        return cls(
            sites={name: SiteCalendar.from_config(name, site) for name, site in cfg.sites.items()},
            default=SiteCalendar.from_config("default", cfg.default),
        )

    def for_site(self, site: str) -> SiteCalendar:
        return self.sites.get(site, self.default)

    def __contains__(self, site: object) -> bool:
        return site in self.sites

    def configured_sites(self, default_site: str | None = None) -> list[str]:
        """The sites a request may name: the listed ones, plus the deployment's default site (which a
        request naming no site gets; its calendar is ``default`` unless it is listed). So the default
        configuration (no sites file) knows exactly one site, ``main``."""
        from shared.events import DEFAULT_SITE

        return sorted({*self.sites, default_site or DEFAULT_SITE})

    def is_configured(self, site: str, default_site: str | None = None) -> bool:
        return site in self.sites or site == (default_site or self.default_site_name())

    @staticmethod
    def default_site_name() -> str:
        from shared.events import DEFAULT_SITE

        return DEFAULT_SITE

    def unknown_site_error(self, site: str, default_site: str | None = None) -> str:
        """The message of the 422 every API answers for a site nobody configured."""
        return f"unknown site {site!r}; configured sites: {', '.join(self.configured_sites(default_site))}"


def load_sites_file(path: str | Path) -> BusinessCalendars:
    """Read a YAML (or JSON, which is YAML) sites file. The only I/O in this module."""
    import yaml

    raw = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    return BusinessCalendars.from_config(raw)
