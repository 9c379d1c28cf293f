"""The life of a callback commitment, as pure functions of (state, time, calendar, policy). No I/O.

States::

    pending ──release (capacity, callable now)──▶ released ──offer accepted──▶ in_progress
       ▲                                              │                           │
       └────────── attempt no_answer/busy/voicemail ◀─┴───────────────────────────┘
    any open ── attempt reached ─────────────────▶ fulfilled
    any open ── attempt wrong_number ────────────▶ closed (reason wrong_number, breach event)
    any open ── max attempts used, none reached ──▶ closed (reason attempts_exhausted, breach event)
    any open ── deadline passed ─────────────────▶ breached (in_progress: after a grace period)

*At risk* is a flag, not a state: set once the slack (callable time left before the deadline, minus
the time one attempt needs) falls under a threshold. It escalates: higher priority, wider roles, an
event ops see. Slack and deadlines are measured in *callable* time (site open and customer may be
called), never in plain wall-clock time, so a lunch closure or a DST change is accounted for.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING, Protocol
from zoneinfo import ZoneInfo

from shared.business_hours import Interval, Period, SiteCalendar, seconds_in, zone
from shared.events import AttemptResult
from shared.promise import NoPromise, Promise, PromisePolicy, WhenNoOverlap, decide_promise
from shared.settings import PromiseSettings

if TYPE_CHECKING:
    from services.callback.settings import CallbackSettings


class Status(StrEnum):
    PENDING = "pending"  # waiting for its window, a retry time, or capacity
    RELEASED = "released"  # callback.due emitted; the router holds it until an agent accepts
    IN_PROGRESS = "in_progress"  # an agent accepted the offer; the call is happening
    FULFILLED = "fulfilled"
    BREACHED = "breached"  # the deadline passed without reaching the customer
    CLOSED = "closed"  # ended unfulfilled before the deadline (wrong number, attempts exhausted)


OPEN_STATUSES = frozenset({Status.PENDING, Status.RELEASED, Status.IN_PROGRESS})
TERMINAL_STATUSES = frozenset({Status.FULFILLED, Status.BREACHED, Status.CLOSED})


class CloseReason(StrEnum):
    DEADLINE_PASSED = "deadline_passed"
    WRONG_NUMBER = "wrong_number"
    ATTEMPTS_EXHAUSTED = "attempts_exhausted"


@dataclass(frozen=True)
class Policy:
    """The tunables of the promise and its lifecycle. The promise itself (cut-off, customer hours, the
    bound) comes from :class:`shared.settings.PromiseSettings`, the source intake reads too."""

    cutoff_minutes: int = 30
    customer_hours: Period | None = (8 * 60, 21 * 60)
    max_promise_business_days: int = 2
    when_no_overlap: WhenNoOverlap = WhenNoOverlap.DECLINE
    retry_spacing: timedelta = timedelta(minutes=30)
    min_retry_spacing: timedelta = timedelta(minutes=5)
    max_attempts: int = 3
    attempt_reserve: timedelta = timedelta(minutes=10)
    at_risk_slack: timedelta = timedelta(minutes=60)
    preferred_share: float = 0.5
    max_boost: float = 100.0
    at_risk_boost: float = 50.0
    in_progress_grace: timedelta = timedelta(minutes=30)
    # A released callback nobody accepted stops holding a free agent after this: see README "Releasing".
    release_hold: timedelta = timedelta(minutes=5)

    @property
    def promise(self) -> PromisePolicy:
        return PromisePolicy(
            cutoff_minutes=self.cutoff_minutes,
            customer_hours=self.customer_hours,
            max_business_days=self.max_promise_business_days,
            when_no_overlap=self.when_no_overlap,
        )

    @classmethod
    def from_settings(cls, s: CallbackSettings, promise: PromiseSettings | None = None) -> Policy:
        p = (promise or PromiseSettings()).policy()
        return cls(
            cutoff_minutes=p.cutoff_minutes,
            customer_hours=p.customer_hours,
            max_promise_business_days=p.max_business_days,
            when_no_overlap=p.when_no_overlap,
            retry_spacing=timedelta(minutes=s.retry_spacing_minutes),
            min_retry_spacing=timedelta(minutes=s.min_retry_spacing_minutes),
            max_attempts=s.max_attempts,
            attempt_reserve=timedelta(minutes=s.attempt_reserve_minutes),
            at_risk_slack=timedelta(minutes=s.at_risk_slack_minutes),
            preferred_share=s.preferred_agent_share,
            max_boost=s.max_priority_boost,
            at_risk_boost=s.at_risk_priority_boost,
            in_progress_grace=timedelta(minutes=s.in_progress_grace_minutes),
            release_hold=timedelta(minutes=s.release_hold_minutes),
        )


# --------------------------------------------------------------------------------------------------
# Callable-time arithmetic
# --------------------------------------------------------------------------------------------------


def clip(windows: list[Interval] | tuple[Interval, ...], start: datetime, end: datetime) -> list[Interval]:
    return [(max(s, start), min(e, end)) for s, e in windows if e > start and s < end]


def moment_with_remaining(windows: list[Interval], remaining_seconds: float) -> datetime:
    """The instant from which exactly ``remaining_seconds`` of callable time is left in ``windows``.

    Earlier than the first window when more is asked than there is (then: the first start).
    """
    left = max(0.0, remaining_seconds)
    for start, end in reversed(windows):
        length = (end - start).total_seconds()
        if left <= length:
            return end - timedelta(seconds=left)
        left -= length
    return windows[0][0] if windows else datetime.max


def next_callable(windows: list[Interval], at: datetime) -> datetime | None:
    """``at`` if it is callable, else the start of the next window; None if no window is left."""
    for start, end in windows:
        if at < end:
            return max(start, at)
    return None


def customer_zone(cal: SiteCalendar, customer_tz: str | None) -> ZoneInfo:
    """The customer's clock; without a known (valid) timezone we assume the site's.

    An unknown name from another service must not lose the request: the API rejects it with a 422,
    an event falls back to the site's clock (a promise in the site's clock beats no promise).
    """
    if not customer_tz:
        return cal.tz
    try:
        return zone(customer_tz)
    except ValueError:
        return cal.tz


# --------------------------------------------------------------------------------------------------
# Planning a new commitment
# --------------------------------------------------------------------------------------------------


class NoCallbackPossible(ValueError):
    """No callable moment within the promise bound (API requests are refused with it)."""

    def __init__(self, refusal: NoPromise) -> None:
        super().__init__(refusal.sentence())
        self.refusal = refusal


@dataclass(frozen=True)
class Plan:
    deadline: datetime
    promise_day: date  # customer-local date the promise is for
    next_business_day: bool
    not_before: datetime  # first moment we will try (window start, or first callable moment)
    window: Interval | None  # the preferred window as honoured (clipped to callable time)
    window_honoured: bool
    preferred_until: datetime | None  # end of the promising agent's exclusivity
    initial_slack_seconds: float
    promise_text: str
    # How the promise was found: "bounded" (the policy as configured), "site_hours" (an accepted event
    # with no callable moment in the customer's hours: the site's hours within the bound), "unbounded"
    # (not even that: the first callable day, however far; flagged, never lost).
    basis: str = "bounded"


def decide_for_request(
    cal: SiteCalendar, policy: Policy, requested_at: datetime, customer_tz: str | None, *, accepted: bool
) -> tuple[Promise, str]:
    """The promise (and its basis) for a request. ``accepted``: the request was already accepted
    elsewhere (an event on the bus), so it is never refused; else :class:`NoCallbackPossible`."""
    ctz = customer_zone(cal, customer_tz)
    decided = decide_promise(cal, policy.promise, requested_at, ctz)
    if isinstance(decided, Promise):
        return decided, "bounded" if not decided.outside_customer_hours else "site_hours"
    if not accepted:
        raise NoCallbackPossible(decided)
    fallback = decide_promise(cal, policy.promise, requested_at, ctz, when_no_overlap=WhenNoOverlap.SITE_HOURS)
    if isinstance(fallback, Promise):
        return fallback, "site_hours"
    unbounded = PromisePolicy(policy.cutoff_minutes, policy.customer_hours, max_business_days=370)
    last = decide_promise(cal, unbounded, requested_at, ctz)
    if isinstance(last, Promise):
        return last, "unbounded"
    raise NoCallbackPossible(decided)


def plan_commitment(
    cal: SiteCalendar,
    policy: Policy,
    *,
    requested_at: datetime,
    customer_tz: str | None,
    preferred_window: Interval | None = None,
    promised_by_agent: bool = False,
    accepted: bool = True,
) -> Plan:
    """Deadline, first try and the honest promise for a request made at ``requested_at``: the same
    :func:`shared.promise.decide_promise` value intake tells the customer."""
    p, basis = decide_for_request(cal, policy, requested_at, customer_tz, accepted=accepted)
    windows = list(p.windows)
    window: Interval | None = None
    if preferred_window is not None:
        inside = clip(windows, preferred_window[0], preferred_window[1])
        if seconds_in(inside) > 0:
            window = (inside[0][0], inside[-1][1])
    not_before = window[0] if window else p.earliest
    total = seconds_in(clip(windows, not_before, p.deadline))
    initial_slack = total - policy.attempt_reserve.total_seconds()
    preferred_until = None
    if promised_by_agent:
        usable = max(0.0, initial_slack - policy.at_risk_slack.total_seconds())
        preferred_until = moment_with_remaining(
            clip(windows, not_before, p.deadline), total - policy.preferred_share * usable
        )
    return Plan(
        deadline=p.deadline,
        promise_day=p.day,
        next_business_day=p.next_business_day,
        not_before=not_before,
        window=window,
        window_honoured=window is not None,
        preferred_until=preferred_until,
        initial_slack_seconds=initial_slack,
        promise_text=p.sentence(window, window_asked=preferred_window is not None),
        basis=basis,
    )


# --------------------------------------------------------------------------------------------------
# A commitment in time
# --------------------------------------------------------------------------------------------------


class CommitmentLike(Protocol):
    """What the lifecycle reads from a stored commitment (the ORM row satisfies it)."""

    status: str
    deadline: datetime
    promise_day: date
    customer_timezone: str | None
    not_before: datetime
    at_risk: bool
    promised_by_agent_id: str | None
    preferred_until: datetime | None
    released_to_agent_id: str | None
    initial_slack_seconds: float
    attempts: int


def callable_windows(cal: SiteCalendar, policy: Policy, c: CommitmentLike) -> list[Interval]:
    """The commitment's callable time on its promise day, up to its deadline."""
    ctz = customer_zone(cal, c.customer_timezone)
    windows = cal.callable_on(c.promise_day, ctz, policy.customer_hours)
    if not windows and policy.customer_hours is not None:
        # Promised within the site's hours outside the customer's (``when_no_overlap=site_hours``):
        # the day has no callable time in the customer's hours, so the promise was made without them.
        windows = cal.callable_on(c.promise_day, ctz, None)
    return clip(windows, windows[0][0], c.deadline) if windows else []


def slack_seconds(windows: list[Interval], deadline: datetime, now: datetime, policy: Policy) -> float:
    """Callable time left before the deadline minus what one attempt needs (negative: too late)."""
    return seconds_in(clip(windows, now, deadline)) - policy.attempt_reserve.total_seconds()


def at_risk_from(windows: list[Interval], policy: Policy) -> datetime | None:
    """The instant the slack falls under the at-risk threshold."""
    if not windows:
        return None
    return moment_with_remaining(windows, policy.attempt_reserve.total_seconds() + policy.at_risk_slack.total_seconds())


def priority_boost(c: CommitmentLike, slack: float, policy: Policy) -> float:
    """0 with all the slack left, rising linearly to ``max_boost`` at zero slack; a floor when at risk."""
    if c.initial_slack_seconds <= 0:
        used = 1.0
    else:
        used = 1.0 - max(0.0, slack) / c.initial_slack_seconds
    boost = policy.max_boost * min(1.0, max(0.0, used))
    if c.at_risk:
        boost = max(boost, policy.at_risk_boost)
    return round(boost, 2)


@dataclass(frozen=True)
class TimeDecision:
    """What the passage of time does to an open commitment."""

    breach: bool = False
    becomes_at_risk: bool = False
    fall_back_to_pool: bool = False  # re-offer a preferred-agent release to the whole pool
    slack_seconds: float = 0.0
    next_check_at: datetime | None = None


def evaluate(c: CommitmentLike, windows: list[Interval], now: datetime, policy: Policy) -> TimeDecision:
    """Breach, at-risk and preferred-agent fallback decisions at ``now`` (releases are capacity-driven)."""
    slack = slack_seconds(windows, c.deadline, now, policy)
    if c.status not in OPEN_STATUSES:
        return TimeDecision(slack_seconds=slack)
    breach_at = c.deadline + (policy.in_progress_grace if c.status == Status.IN_PROGRESS else timedelta(0))
    if now >= breach_at:
        return TimeDecision(breach=True, slack_seconds=slack, next_check_at=now)
    checks = [breach_at]
    becomes_at_risk = False
    if not c.at_risk:
        risk_at = at_risk_from(windows, policy)
        if risk_at is not None and now >= risk_at:
            becomes_at_risk = True
        elif risk_at is not None:
            checks.append(risk_at)
    fall_back = False
    if c.status == Status.RELEASED and c.released_to_agent_id is not None and c.preferred_until is not None:
        if now >= c.preferred_until or becomes_at_risk or c.at_risk:
            fall_back = True
        else:
            checks.append(c.preferred_until)
    if c.status == Status.PENDING and c.preferred_until is not None and now < c.preferred_until:
        checks.append(c.preferred_until)  # the pool may take it from then on
    if becomes_at_risk or fall_back:
        checks.append(now)  # an action is pending: the next scheduler pass must pick this row
    return TimeDecision(
        becomes_at_risk=becomes_at_risk,
        fall_back_to_pool=fall_back,
        slack_seconds=slack,
        next_check_at=min(checks),
    )


@dataclass(frozen=True)
class AttemptDecision:
    status: Status
    not_before: datetime | None = None
    close_reason: CloseReason | None = None


def decide_attempt(
    c: CommitmentLike, result: AttemptResult, at: datetime, windows: list[Interval], policy: Policy
) -> AttemptDecision:
    """The effect of one attempt (``c.attempts`` already counts it).

    Unsuccessful attempts are retried after ``retry_spacing``; when that would leave no room before
    the deadline, the spacing shrinks (not below ``min_retry_spacing``) so the last attempt still fits.
    """
    if result == AttemptResult.REACHED:
        return AttemptDecision(Status.FULFILLED)
    if result == AttemptResult.WRONG_NUMBER:
        return AttemptDecision(Status.CLOSED, close_reason=CloseReason.WRONG_NUMBER)
    if c.attempts >= policy.max_attempts:
        return AttemptDecision(Status.CLOSED, close_reason=CloseReason.ATTEMPTS_EXHAUSTED)
    retry_at = at + policy.retry_spacing
    latest_useful = moment_with_remaining(windows, policy.attempt_reserve.total_seconds()) if windows else None
    if latest_useful is not None and retry_at > latest_useful:
        retry_at = max(at + policy.min_retry_spacing, latest_useful)
    callable_at = next_callable(windows, retry_at)
    return AttemptDecision(Status.PENDING, not_before=callable_at or retry_at)


def is_callable(windows: list[Interval], now: datetime) -> bool:
    return any(s <= now < e for s, e in windows)
