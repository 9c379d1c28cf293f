"""Prometheus metrics of the callback service, counted only for committed transactions."""

from __future__ import annotations

from typing import Any

from prometheus_client import Counter, Gauge, Histogram
from sqlalchemy import event
from sqlalchemy.orm import Session

CALLBACK_EVENTS = Counter(
    "switchboard_callback_events_total",
    "Callback lifecycle events emitted (scheduled, due, at_risk, attempted, fulfilled, breached)",
    ["event", "site", "reason"],
)
SCHEDULER_PASS_SECONDS = Histogram(
    "switchboard_callback_scheduler_pass_seconds",
    "Duration of one scheduler pass (breaches, at risk, fallbacks, releases)",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)

BREACHES_UNFLAGGED = Counter(
    "switchboard_callback_breaches_unflagged_total",
    "Deadline breaches not flagged at risk first (the scheduler did not run through the at-risk point): "
    "the promise was neither kept nor flagged before it broke; should stay 0",
    ["site"],
)

PROMISE_DRIFT = Counter(
    "switchboard_callback_promise_drift_total",
    "Requests whose tracked promise is not the one this service would compute under its own policy: "
    "`deadline_differs` (the requester told the customer another deadline: the told one is tracked), "
    "`site_hours`/`unbounded` (an accepted request with no callable moment in the customer's hours or "
    "within the bound); should stay 0 when intake and callback share SWITCHBOARD_PROMISE_* and the sites",
    ["site", "kind"],
)

_KEY = "switchboard_callback_metrics"


def count_on_commit(session: Any, event_name: str, site: str, reason: str = "") -> None:
    """Remember an emitted event on the (sync) session; it is counted only if the transaction commits."""
    session.info.setdefault(_KEY, []).append(CALLBACK_EVENTS.labels(event_name, site, reason))


def count_unflagged_breach_on_commit(session: Any, site: str) -> None:
    session.info.setdefault(_KEY, []).append(BREACHES_UNFLAGGED.labels(site))


@event.listens_for(Session, "after_commit")
def _flush(session: Session) -> None:
    for counter in session.info.pop(_KEY, ()):
        counter.inc()


@event.listens_for(Session, "after_rollback")
def _discard(session: Session) -> None:
    session.info.pop(_KEY, None)


# Today's promises as gauges, refreshed from the database on each scrape (``refresh_promise_gauges``):
# the same figures as ``GET /v1/summary/today``, so Grafana and the ops dashboard never disagree.
PROMISES_TODAY = Gauge(
    "switchboard_callback_promises_today",
    "Today's callback promises by site and state: promised, fulfilled, open, at_risk, breached, closed, exhausted",
    ["site", "state"],
)
FULFILMENT_RATE_TODAY = Gauge(
    "switchboard_callback_same_day_fulfilment_rate",
    "Today's fulfilled / promised per site (absent while nothing was promised)",
    ["site"],
)
PROMISE_STATES = ("promised", "fulfilled", "open", "at_risk", "breached", "closed", "exhausted")


def refresh_promise_gauges(sites: Any) -> None:
    """Set the gauges from ``SiteSummary`` rows; sites without promises today drop out instead of
    showing yesterday's figures."""
    PROMISES_TODAY.clear()
    FULFILMENT_RATE_TODAY.clear()
    for s in sites:
        for state in PROMISE_STATES:
            PROMISES_TODAY.labels(s.site, state).set(getattr(s, state))
        if s.same_day_fulfilment_rate is not None:
            FULFILMENT_RATE_TODAY.labels(s.site).set(s.same_day_fulfilment_rate)
