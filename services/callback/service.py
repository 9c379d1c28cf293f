"""The callback service's use cases, each one database transaction: state change + outbox events.

Event handlers (see :mod:`services.callback.consumers`) call the ``*_in`` methods inside their own
transaction (after the inbox check); the API calls the public wrappers, which open the transaction.
The scheduler calls :meth:`CallbackService.tick`, which re-derives everything from the database, so
a restart at any moment loses nothing: what was due, at risk or breached is found again.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta

import structlog
from sqlalchemy import and_, func, or_, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import selectinload

from services.callback.clock import Clock
from services.callback.lifecycle import (
    OPEN_STATUSES,
    CloseReason,
    Plan,
    Policy,
    Status,
    callable_windows,
    customer_zone,
    decide_attempt,
    evaluate,
    is_callable,
    plan_commitment,
    priority_boost,
    slack_seconds,
)
from services.callback.metrics import (
    PROMISE_DRIFT,
    SCHEDULER_PASS_SECONDS,
    count_on_commit,
    count_unflagged_breach_on_commit,
)
from services.callback.store import AgentPresence, AgentToken, Attempt, Commitment, DispatchLock, Request
from shared.business_hours import BusinessCalendars, Interval, SiteCalendar
from shared.events import (
    AgentStatus,
    AgentStatusChanged,
    AgentTokenIssued,
    AssignmentCompleted,
    AttemptResult,
    CallbackAtRisk,
    CallbackAttempted,
    CallbackBreached,
    CallbackDue,
    CallbackFulfilled,
    CallbackRequested,
    CallbackScheduled,
    Customer,
    EventData,
    OfferAccepted,
    OfferDeclined,
    OfferTimedOut,
    TimeWindow,
    deterministic_id,
)
from shared.outbox import stage
from shared.promise import WhenNoOverlap

log = structlog.get_logger(__name__)

OPEN = [s.value for s in OPEN_STATUSES]


class CommitmentNotFound(LookupError):
    pass


class AttemptBeforeRequest(ValueError):
    """An attempt dated before the commitment existed (API input error)."""


class CommitmentClosed(ValueError):
    """An attempt typed in for a promise that has already ended (API: 409)."""

    def __init__(self, c: Commitment) -> None:
        super().__init__(f"callback {c.id} is {c.status}" + (f" ({c.close_reason})" if c.close_reason else ""))
        self.status = c.status
        self.close_reason = c.close_reason


class AttemptTooSoon(ValueError):
    """An attempt typed in inside the retry spacing after the previous one (API: 409)."""

    def __init__(self, c: Commitment, at: datetime) -> None:
        retry_at = c.not_before if c.not_before.tzinfo else c.not_before.replace(tzinfo=UTC)
        super().__init__(
            f"attempt at {at.isoformat()} is inside the retry spacing; the next attempt is allowed from "
            f"{retry_at.isoformat()}"
        )
        self.retry_at = retry_at


@dataclass
class TickReport:
    """What one scheduler pass did (for logs, metrics and tests)."""

    breached: list[str] = field(default_factory=list)
    at_risk: list[str] = field(default_factory=list)
    fallbacks: list[str] = field(default_factory=list)
    released: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.breached or self.at_risk or self.fallbacks or self.released)


@dataclass(frozen=True)
class ListFilter:
    status: Sequence[str] = ()
    day: date | None = None  # site-local date of the deadline
    agent_id: str | None = None
    customer_id: str | None = None
    site: str | None = None
    at_risk: bool | None = None
    tenant_id: str | None = None
    limit: int = 100
    offset: int = 0


class CallbackService:
    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        calendars: BusinessCalendars,
        policy: Policy,
        clock: Clock,
        *,
        source: str = "switchboard/callback",
        notify: Callable[[], None] = lambda: None,
        batch_size: int = 200,
        release_without_presence: bool = False,
    ) -> None:
        self.sessionmaker = sessionmaker
        self.calendars = calendars
        self.policy = policy
        self.clock = clock
        self.source = source
        self._notify = notify
        self.batch_size = batch_size
        self.release_without_presence = release_without_presence
        self._wake_listeners: list[Callable[[], None]] = []

    # -- plumbing ---------------------------------------------------------------------------------

    def on_wake(self, listener: Callable[[], None]) -> None:
        """Called after changes that may allow a release (new commitment, free agent, retry)."""
        self._wake_listeners.append(listener)

    def committed(self) -> None:
        """After a commit: publish the outbox now and let the scheduler look again."""
        self._notify()
        for listener in self._wake_listeners:
            listener()

    def now(self) -> datetime:
        """The clock's instant in UTC (all arithmetic happens in UTC; see shared.business_hours)."""
        return self.clock.now().astimezone(UTC)

    def _windows(self, c: Commitment) -> list[Interval]:
        return callable_windows(self.calendars.for_site(c.site), self.policy, c)

    def _refresh(self, c: Commitment, now: datetime) -> None:
        c.next_check_at = evaluate(c, self._windows(c), now, self.policy).next_check_at
        c.updated_at = now

    @staticmethod
    async def write_lock(s: AsyncSession) -> None:
        """On SQLite, take the database write lock before reading what the transaction will change.

        pysqlite only opens a transaction at the first write, so reads before it are not isolated: two
        writers (API and scheduler, or two processes) could both decide on the same stale row. A no-op
        UPDATE first makes the whole use case one serialised write transaction. PostgreSQL uses row
        locks (FOR UPDATE / SKIP LOCKED) instead and needs nothing here.
        """
        if s.bind.dialect.name == "sqlite":
            await s.execute(text("UPDATE callback_dispatch_locks SET site = site WHERE 1 = 0"))

    async def _stage(self, s: AsyncSession, data: EventData, event_id: str) -> None:
        await stage(s, data, source=self.source, event_id=event_id)
        name = data.event_type.removeprefix("switchboard.").rsplit(".", 1)[0]
        count_on_commit(s.sync_session, name, getattr(data, "site", ""), str(getattr(data, "reason", "") or ""))

    @staticmethod
    def customer_of(c: Commitment) -> Customer:
        return Customer.model_validate(c.customer)

    # -- requests ---------------------------------------------------------------------------------

    async def request(self, req: CallbackRequested, *, accepted: bool = True) -> tuple[Commitment, bool]:
        """Create (or merge) a commitment; True when a new commitment was created.

        ``accepted=False`` (the API): a request with no callable moment within the promise bound is
        refused with :class:`NoCallbackPossible` instead of being promised anyway."""
        for attempt in range(3):
            try:
                async with self.sessionmaker() as s, s.begin():
                    await self.write_lock(s)
                    result = await self.request_in(s, req, accepted=accepted)
                self.committed()
                return result
            except IntegrityError:
                # Another replica opened a commitment for this customer at the same moment: merge.
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    async def request_in(
        self, s: AsyncSession, req: CallbackRequested, *, accepted: bool = True
    ) -> tuple[Commitment, bool]:
        now = self.now()
        requested_at = req.requested_at.astimezone(UTC)
        known = await s.get(Request, (req.tenant_id, req.request_id))
        if known is not None:  # the same request again: no effect
            existing = await s.get(Commitment, known.commitment_id)
            assert existing is not None
            return existing, False
        open_c = (
            await s.execute(
                select(Commitment)
                .where(Commitment.tenant_id == req.tenant_id, Commitment.open_customer_id == req.customer.id)
                .with_for_update()
            )
        ).scalar_one_or_none()
        if not self.calendars.is_configured(req.site):
            # Refused at every API; one on the bus is kept (never lost) on the default calendar.
            log.warning("callback.unknown_site", site=req.site, using=self.calendars.default.name)
        # A merged request is planned with the open commitment's site: one promise, one calendar.
        cal = self.calendars.for_site(open_c.site if open_c is not None else req.site)
        window = (req.preferred_window.start, req.preferred_window.end) if req.preferred_window else None
        plan = plan_commitment(
            cal,
            self.policy,
            requested_at=requested_at,
            customer_tz=req.customer.timezone or (open_c.customer_timezone if open_c is not None else None),
            preferred_window=window,
            promised_by_agent=req.promised_by_agent_id is not None,
            accepted=accepted,
        )
        plan = self._as_told(req, plan, cal)
        if open_c is not None:
            self._merge(open_c, req, plan, now)
            c, created = open_c, False
        else:
            c = Commitment(
                id=deterministic_id("callback", req.tenant_id, req.request_id),
                tenant_id=req.tenant_id,
                site=req.site,
                customer_id=req.customer.id,
                open_customer_id=req.customer.id,
                customer=req.customer.model_dump(mode="json"),
                customer_timezone=req.customer.timezone,
                contact_id=req.contact_id,
                intent=req.intent.value if req.intent else None,
                channel=req.channel.value,
                origin=req.origin.value,
                reason=req.reason,
                status=Status.PENDING.value,
                requested_at=requested_at,
                virtual_start_time=(req.virtual_start_time or requested_at).astimezone(UTC),
                deadline=plan.deadline,
                deadline_day=plan.deadline.astimezone(cal.tz).date(),
                promise_day=plan.promise_day,
                next_business_day=plan.next_business_day,
                promise_text=plan.promise_text,
                window_start=plan.window[0] if plan.window else None,
                window_end=plan.window[1] if plan.window else None,
                initial_slack_seconds=plan.initial_slack_seconds,
                not_before=plan.not_before,
                at_risk=False,
                promised_by_agent_id=req.promised_by_agent_id,
                preferred_until=plan.preferred_until,
                due_emissions=0,
                attempts=0,
                merged_requests=1,
                created_at=now,
                updated_at=now,
            )
            s.add(c)
            created = True
        self._refresh(c, now)
        s.add(
            Request(
                tenant_id=req.tenant_id,
                request_id=req.request_id,
                commitment_id=c.id,
                origin=req.origin.value,
                promised_by_agent_id=req.promised_by_agent_id,
                received_at=now,
            )
        )
        await s.flush()
        # Every request gets its answer (the promise), merged or not; consumers upsert by callback_id.
        await self._stage(
            s, self._scheduled_event(c, now), deterministic_id("callback.scheduled", c.id, req.request_id)
        )
        log.info(
            "callback.requested",
            callback_id=c.id,
            created=created,
            deadline=c.deadline.isoformat(),
            next_business_day=c.next_business_day,
        )
        return c, created

    def _as_told(self, req: CallbackRequested, plan: Plan, cal: SiteCalendar) -> Plan:
        """The customer was told ``req.promised_deadline``: that is the promise to track. Both sides
        compute it with :func:`shared.promise.decide_promise`, so a difference means the deployments'
        settings or calendars differ: flagged (log + metric), and the told deadline wins."""
        if plan.basis == "unbounded" or (
            plan.basis == "site_hours" and self.policy.when_no_overlap != WhenNoOverlap.SITE_HOURS
        ):
            PROMISE_DRIFT.labels(req.site, plan.basis).inc()
            log.warning("callback.promise_outside_bound", request_id=req.request_id, basis=plan.basis)
        told = req.promised_deadline
        if told is None or told.astimezone(UTC) == plan.deadline:
            return plan
        told = told.astimezone(UTC)
        PROMISE_DRIFT.labels(req.site, "deadline_differs").inc()
        log.warning(
            "callback.promise_drift",
            request_id=req.request_id,
            told=told.isoformat(),
            computed=plan.deadline.isoformat(),
            site=req.site,
        )
        ctz = customer_zone(cal, req.customer.timezone)
        return replace(
            plan,
            deadline=told,
            promise_day=(told - timedelta(microseconds=1)).astimezone(ctz).date(),
            next_business_day=(told - timedelta(microseconds=1)).astimezone(ctz).date()
            > req.requested_at.astimezone(ctz).date(),
            promise_text=req.promise_text or plan.promise_text,
        )

    def _merge(self, c: Commitment, req: CallbackRequested, plan: Plan, now: datetime) -> None:
        """A second request for a customer with an open promise: one commitment, the stricter promise."""
        c.merged_requests += 1
        if plan.deadline <= c.deadline:
            # The newest promise is at least as strict: it is what the customer was just told (an
            # evening "tomorrow" becomes "today" when the customer asks again the next morning).
            cal = self.calendars.for_site(c.site)
            c.deadline = plan.deadline
            c.deadline_day = plan.deadline.astimezone(cal.tz).date()
            c.promise_day = plan.promise_day
            c.next_business_day = plan.next_business_day
            c.promise_text = plan.promise_text
        vst = (req.virtual_start_time or req.requested_at).astimezone(UTC)
        if vst < c.virtual_start_time:
            c.virtual_start_time = vst
        if c.promised_by_agent_id is None and req.promised_by_agent_id is not None:
            c.promised_by_agent_id = req.promised_by_agent_id
            c.preferred_until = plan.preferred_until
        if c.window_start is None and plan.window is not None and plan.window[1] <= c.deadline:
            c.window_start, c.window_end = plan.window
            if c.status == Status.PENDING.value and c.attempts == 0:
                c.not_before = plan.window[0]
        if c.contact_id is None:
            c.contact_id = req.contact_id
        if c.intent is None and req.intent is not None:
            c.intent = req.intent.value

    def _scheduled_event(self, c: Commitment, now: datetime) -> CallbackScheduled:
        window = (
            TimeWindow(start=c.window_start, end=c.window_end)
            if c.window_start is not None and c.window_end is not None
            else None
        )
        return CallbackScheduled(
            tenant_id=c.tenant_id,
            callback_id=c.id,
            customer=self.customer_of(c),
            site=c.site,
            deadline=c.deadline,
            window=window,
            next_business_day=c.next_business_day,
            promise_text=c.promise_text,
            at=now,
        )

    # -- attempts ---------------------------------------------------------------------------------

    async def record_attempt(
        self,
        callback_id: str,
        result: AttemptResult,
        *,
        agent_id: str | None = None,
        notes: str | None = None,
        at: datetime | None = None,
        attempt_key: str | None = None,
        source: str = "api",
    ) -> Commitment:
        async with self.sessionmaker() as s, s.begin():
            await self.write_lock(s)
            c = await self.attempt_in(
                s,
                callback_id,
                result,
                agent_id=agent_id,
                notes=notes,
                at=(at or self.now()).astimezone(UTC),
                attempt_key=attempt_key or str(uuid.uuid4()),
                source=source,
            )
        self.committed()
        return c

    async def attempt_in(
        self,
        s: AsyncSession,
        callback_id: str,
        result: AttemptResult,
        *,
        agent_id: str | None,
        notes: str | None,
        at: datetime,
        attempt_key: str,
        source: str,
    ) -> Commitment:
        c = (
            await s.execute(select(Commitment).where(Commitment.id == callback_id).with_for_update())
        ).scalar_one_or_none()
        if c is None:
            raise CommitmentNotFound(callback_id)
        dup = await s.execute(
            select(Attempt.seq).where(Attempt.commitment_id == c.id, Attempt.attempt_key == attempt_key)
        )
        if dup.first() is not None:
            return c
        now = self.now()
        at = min(at.astimezone(UTC), now)  # an attempt is never in the future
        requested_at = c.requested_at if c.requested_at.tzinfo else c.requested_at.replace(tzinfo=UTC)
        if at < requested_at:
            if source == "api":  # a person typed it: say so
                raise AttemptBeforeRequest(
                    f"attempt at {at.isoformat()} is before the callback was requested ({requested_at.isoformat()})"
                )
            at = requested_at  # another service's clock, slightly behind ours: not worth a dead letter
        if source == "api":  # a person typed it: the rules of the promise apply (router events are calls made)
            if c.status not in OPEN:
                raise CommitmentClosed(c)
            not_before = c.not_before if c.not_before.tzinfo else c.not_before.replace(tzinfo=UTC)
            if c.attempts > 0 and c.status == Status.PENDING.value and at < not_before:
                raise AttemptTooSoon(c, at)
        windows = self._windows(c)
        if c.status in OPEN and evaluate(c, windows, at, self.policy).breach:
            # The call was made after the deadline: the breach comes first, honestly. (A call made
            # before it but reported late still counts, unless a scheduler pass already breached it.)
            await self._breach(s, c, now)
        late = c.status not in OPEN
        if not late:
            c.attempts += 1
        s.add(
            Attempt(
                commitment_id=c.id,
                attempt_key=attempt_key,
                number=0 if late else c.attempts,
                result=result.value,
                agent_id=agent_id,
                notes=notes,
                at=at,
                source=source,
                late=late,
            )
        )
        if source != "event":  # the router's own attempts are already on the bus
            await self._stage(
                s,
                CallbackAttempted(
                    tenant_id=c.tenant_id,
                    callback_id=c.id,
                    customer=self.customer_of(c),
                    site=c.site,
                    agent_id=agent_id,
                    result=result,
                    notes=notes,
                    at=at,
                ),
                deterministic_id("callback.attempted", c.id, attempt_key),
            )
        if late:
            log.info("callback.late_attempt", callback_id=c.id, status=c.status, result=result.value)
            return c
        c.last_attempt_at = at
        c.last_result = result.value
        decision = decide_attempt(c, result, at, windows, self.policy)
        if decision.status == Status.FULFILLED:
            c.status = Status.FULFILLED.value
            c.fulfilled_at = at
            c.fulfilled_by_agent_id = agent_id
            self._end(c, now)
            await self._stage(
                s,
                CallbackFulfilled(
                    tenant_id=c.tenant_id,
                    callback_id=c.id,
                    customer=self.customer_of(c),
                    site=c.site,
                    agent_id=agent_id,
                    at=at,
                ),
                deterministic_id("callback.fulfilled", c.id),
            )
        elif decision.status == Status.CLOSED:
            assert decision.close_reason is not None
            c.status = Status.CLOSED.value
            c.close_reason = decision.close_reason.value
            self._end(c, now)
            if decision.close_reason == CloseReason.ATTEMPTS_EXHAUSTED:
                log.warning("callback.exhausted", callback_id=c.id, attempts=c.attempts, site=c.site)
            await self._stage(s, self._breached_event(c, now), deterministic_id("callback.breached", c.id))
        else:
            c.status = Status.PENDING.value
            assert decision.not_before is not None
            c.not_before = decision.not_before
            c.released_at = None
            c.released_to_agent_id = None
            c.accepted_by_agent_id = None
            c.accepted_at = None
            if evaluate(c, windows, now, self.policy).breach:
                # A call that ran past the deadline without reaching the customer: no time for another.
                await self._breach(s, c, now)
                return c
        self._refresh(c, now)
        return c

    def _end(self, c: Commitment, now: datetime) -> None:
        c.open_customer_id = None
        c.ended_at = now
        c.next_check_at = None

    def _breached_event(self, c: Commitment, now: datetime) -> CallbackBreached:
        return CallbackBreached(
            tenant_id=c.tenant_id,
            callback_id=c.id,
            customer=self.customer_of(c),
            site=c.site,
            deadline=c.deadline,
            attempts=c.attempts,
            reason=c.close_reason or CloseReason.DEADLINE_PASSED.value,
            at_risk_at=c.at_risk_at,
            at=now,
        )

    async def _breach(self, s: AsyncSession, c: Commitment, now: datetime) -> None:
        c.status = Status.BREACHED.value
        c.close_reason = CloseReason.DEADLINE_PASSED.value
        self._end(c, now)
        await self._stage(s, self._breached_event(c, now), deterministic_id("callback.breached", c.id))
        if c.at_risk_at is None:  # e.g. the service was down through its at-risk point
            count_unflagged_breach_on_commit(s.sync_session, c.site)
            log.error(
                "callback.breached_unflagged", callback_id=c.id, deadline=c.deadline.isoformat(), attempts=c.attempts
            )
        else:
            log.warning("callback.breached", callback_id=c.id, deadline=c.deadline.isoformat(), attempts=c.attempts)

    # -- routing events ---------------------------------------------------------------------------

    async def agent_status_in(self, s: AsyncSession, ev: AgentStatusChanged) -> bool:
        """Remember the agent's latest status; True when it changed (a release may now be possible)."""
        row = await s.get(AgentPresence, (ev.tenant_id, ev.agent_id), with_for_update=True)
        if row is None:
            s.add(
                AgentPresence(
                    tenant_id=ev.tenant_id,
                    agent_id=ev.agent_id,
                    site=ev.site,
                    status=ev.status.value,
                    changed_at=ev.at,
                )
            )
            return True
        if ev.at < row.changed_at:  # an older status arriving late must not win
            return False
        row.site, row.status, row.changed_at = ev.site, ev.status.value, ev.at
        return True

    async def agent_token_in(self, s: AsyncSession, ev: AgentTokenIssued) -> None:
        """Remember the agent's current token id: every older token of that agent is revoked here."""
        row = await s.get(AgentToken, (ev.tenant_id, ev.agent_id), with_for_update=True)
        if row is None:
            s.add(AgentToken(tenant_id=ev.tenant_id, agent_id=ev.agent_id, token_id=ev.token_id, issued_at=ev.at))
        elif ev.at >= row.issued_at:  # an older issue arriving late must not revive its token
            row.token_id, row.issued_at = ev.token_id, ev.at

    async def agent_token_is_current(self, tenant_id: str, agent_id: str, token_id: str) -> bool:
        """False when the router has since issued the agent another token. An agent not heard of yet
        (its ``agent.token_issued`` still on the way) is trusted on its signature alone."""
        async with self.sessionmaker() as s:
            row = await s.get(AgentToken, (tenant_id, agent_id))
        return row is None or row.token_id == token_id

    async def offer_accepted_in(self, s: AsyncSession, ev: OfferAccepted) -> None:
        c = await self._open_for_contact(s, ev.contact_id)
        if c is None or c.status != Status.RELEASED.value:
            return
        c.status = Status.IN_PROGRESS.value
        c.accepted_by_agent_id = ev.agent_id
        c.accepted_at = ev.at
        self._refresh(c, self.now())

    async def offer_refused_in(self, s: AsyncSession, ev: OfferDeclined | OfferTimedOut) -> None:
        """The promising agent did not take it: to the pool now rather than at the fallback time."""
        c = await self._open_for_contact(s, ev.contact_id)
        if c is None or c.status != Status.RELEASED.value or c.released_to_agent_id != ev.agent_id:
            return
        now = self.now()
        c.released_to_agent_id = None
        c.preferred_until = now
        await self._emit_due(s, c, now)
        self._refresh(c, now)

    async def assignment_completed_in(self, s: AsyncSession, ev: AssignmentCompleted) -> None:
        """A callback call ended. If no attempt was recorded for it, try again (after a short wait,
        so a ``callback.attempted`` travelling on another topic can still arrive and win)."""
        c = await self._open_for_contact(s, ev.callback_id or ev.contact_id)
        if c is None or c.status != Status.IN_PROGRESS.value:
            return
        now = self.now()
        c.status = Status.PENDING.value
        c.not_before = max(now, ev.at) + self.policy.min_retry_spacing
        c.released_at = c.released_to_agent_id = c.accepted_by_agent_id = c.accepted_at = None
        self._refresh(c, now)

    async def _open_for_contact(self, s: AsyncSession, contact_id: str) -> Commitment | None:
        """Offers for a callback carry the callback id as their contact id (see the README)."""
        return (
            await s.execute(
                select(Commitment).where(Commitment.id == contact_id, Commitment.status.in_(OPEN)).with_for_update()
            )
        ).scalar_one_or_none()

    # -- the scheduler ----------------------------------------------------------------------------

    async def tick(self, now: datetime | None = None) -> TickReport:
        """One scheduler pass: breaches, at-risk escalations, preferred-agent fallbacks, releases."""
        now = (now or self.clock.now()).astimezone(UTC)
        report = TickReport()
        with SCHEDULER_PASS_SECONDS.time():
            while True:
                n = await self._time_pass(now, report)
                if n < self.batch_size:
                    break
            await self._release_pass(now, report)
        if report:
            self._notify()
            log.info(
                "callback.tick",
                breached=len(report.breached),
                at_risk=len(report.at_risk),
                fallbacks=len(report.fallbacks),
                released=len(report.released),
            )
        return report

    async def _time_pass(self, now: datetime, report: TickReport) -> int:
        async with self.sessionmaker() as s, s.begin():
            await self.write_lock(s)
            rows = (
                (
                    await s.execute(
                        select(Commitment)
                        .where(Commitment.status.in_(OPEN), Commitment.next_check_at <= now)
                        .order_by(Commitment.next_check_at)
                        .limit(self.batch_size)
                        .with_for_update(skip_locked=True)
                    )
                )
                .scalars()
                .all()
            )
            for c in rows:
                windows = self._windows(c)
                d = evaluate(c, windows, now, self.policy)
                if d.breach:
                    await self._breach(s, c, now)
                    report.breached.append(c.id)
                    continue
                if d.becomes_at_risk:
                    c.at_risk = True
                    c.at_risk_at = now
                    report.at_risk.append(c.id)
                    await self._stage(
                        s,
                        CallbackAtRisk(
                            tenant_id=c.tenant_id,
                            callback_id=c.id,
                            customer=self.customer_of(c),
                            site=c.site,
                            deadline=c.deadline,
                            slack_seconds=round(d.slack_seconds, 1),
                            at=now,
                        ),
                        deterministic_id("callback.at_risk", c.id),
                    )
                    log.warning("callback.at_risk", callback_id=c.id, slack_seconds=d.slack_seconds)
                if d.fall_back_to_pool:
                    c.released_to_agent_id = None
                    report.fallbacks.append(c.id)
                if c.status == Status.RELEASED.value and (d.becomes_at_risk or d.fall_back_to_pool):
                    await self._emit_due(s, c, now)  # the router upserts by callback_id
                self._refresh(c, now)
                # A row whose next check stays in the past would be selected forever: push it on.
                if c.next_check_at is not None and c.next_check_at <= now:
                    c.next_check_at = now + timedelta(seconds=1)
            return len(rows)

    async def _release_pass(self, now: datetime, report: TickReport) -> None:
        async with self.sessionmaker() as s:
            domains = (
                await s.execute(
                    select(Commitment.tenant_id, Commitment.site)
                    .where(Commitment.status == Status.PENDING.value, Commitment.not_before <= now)
                    .distinct()
                )
            ).all()
        for tenant_id, site in domains:
            async with self.sessionmaker() as s, s.begin():
                await self.write_lock(s)
                await self._release_domain(s, tenant_id, site, now, report)

    async def _lock_domain(self, s: AsyncSession, tenant_id: str, site: str) -> DispatchLock | None:
        stmt = (
            select(DispatchLock)
            .where(DispatchLock.tenant_id == tenant_id, DispatchLock.site == site)
            .with_for_update(skip_locked=True)
        )
        lock = (await s.execute(stmt)).scalar_one_or_none()
        if lock is not None:
            return lock
        exists = await s.get(DispatchLock, (tenant_id, site))
        if exists is not None:
            return None  # another replica holds it right now
        try:
            async with s.begin_nested():
                s.add(DispatchLock(tenant_id=tenant_id, site=site))
        except IntegrityError:
            return None
        return (await s.execute(stmt)).scalar_one_or_none()

    async def available_agents(self, s: AsyncSession, tenant_id: str, site: str) -> dict[str, str]:
        rows = await s.execute(
            select(AgentPresence.agent_id, AgentPresence.status).where(
                AgentPresence.tenant_id == tenant_id, AgentPresence.site == site
            )
        )
        return {agent: status for agent, status in rows.all()}

    async def _release_domain(
        self, s: AsyncSession, tenant_id: str, site: str, now: datetime, report: TickReport
    ) -> None:
        lock = await self._lock_domain(s, tenant_id, site)
        if lock is None:
            return
        presence = await self.available_agents(s, tenant_id, site)
        free = [a for a, st in presence.items() if st == AgentStatus.AVAILABLE.value]
        outstanding = (
            await s.execute(
                select(func.count())
                .select_from(Commitment)
                .where(
                    Commitment.tenant_id == tenant_id,
                    Commitment.site == site,
                    Commitment.status == Status.RELEASED.value,
                    # One nobody took within the hold (no free agent fits it, say) waits in the router's
                    # line on its own; counting it for ever would starve the callbacks those agents fit.
                    Commitment.released_at > now - self.policy.release_hold,
                )
            )
        ).scalar_one()
        capacity = self.batch_size if self.release_without_presence else len(free) - outstanding
        if capacity <= 0:
            return
        candidates = (
            (
                await s.execute(
                    select(Commitment)
                    .where(
                        Commitment.tenant_id == tenant_id,
                        Commitment.site == site,
                        Commitment.status == Status.PENDING.value,
                        Commitment.not_before <= now,
                    )
                    .order_by(Commitment.at_risk.desc(), Commitment.virtual_start_time, Commitment.deadline)
                    .limit(self.batch_size)
                    .with_for_update(skip_locked=True)
                )
            )
            .scalars()
            .all()
        )
        taken: set[str] = set()
        released = 0
        for c in candidates:
            if released >= capacity:
                break
            if not is_callable(self._windows(c), now):
                continue  # e.g. outside the customer's calling hours: wait, it stays in line
            preferred: str | None = None
            if (
                c.promised_by_agent_id is not None
                and c.preferred_until is not None
                and now < c.preferred_until
                and not c.at_risk
            ):
                agent_status = presence.get(c.promised_by_agent_id)
                if agent_status == AgentStatus.AVAILABLE.value and c.promised_by_agent_id not in taken:
                    preferred = c.promised_by_agent_id
                    taken.add(preferred)
                elif agent_status in (AgentStatus.BUSY.value, AgentStatus.WRAP_UP.value):
                    continue  # the promising agent will be free soon: keep it for them until the fallback
                # offline / on break / unknown: straight to the pool
            c.status = Status.RELEASED.value
            c.released_at = now
            c.released_to_agent_id = preferred
            await self._emit_due(s, c, now)
            self._refresh(c, now)
            report.released.append(c.id)
            released += 1
        lock.last_dispatch_at = now

    async def _emit_due(self, s: AsyncSession, c: Commitment, now: datetime) -> None:
        slack = slack_seconds(self._windows(c), c.deadline, now, self.policy)
        c.due_emissions += 1
        await self._stage(
            s,
            CallbackDue(
                tenant_id=c.tenant_id,
                callback_id=c.id,
                customer=self.customer_of(c),
                site=c.site,
                contact_id=c.contact_id,
                intent=c.intent,  # type: ignore[arg-type]
                channel=c.channel,  # type: ignore[arg-type]
                deadline=c.deadline,
                attempt=c.attempts + 1,
                priority_boost=priority_boost(c, slack, self.policy),
                at_risk=c.at_risk,
                widen_roles=c.at_risk,
                preferred_agent_id=c.released_to_agent_id,
                virtual_start_time=c.virtual_start_time,
                at=now,
            ),
            deterministic_id("callback.due", c.id, str(c.due_emissions)),
        )

    # -- queries ----------------------------------------------------------------------------------

    async def get(self, callback_id: str) -> Commitment:
        async with self.sessionmaker() as s:
            c = (
                await s.execute(
                    select(Commitment)
                    .where(Commitment.id == callback_id)
                    .options(selectinload(Commitment.attempt_history))
                )
            ).scalar_one_or_none()
        if c is None:
            raise CommitmentNotFound(callback_id)
        return c

    async def list(self, f: ListFilter) -> list[Commitment]:
        stmt = select(Commitment)
        conditions = []
        if f.status:
            conditions.append(Commitment.status.in_(list(f.status)))
        if f.day is not None:
            conditions.append(Commitment.deadline_day == f.day)
        if f.agent_id is not None:
            conditions.append(
                or_(
                    Commitment.promised_by_agent_id == f.agent_id,
                    Commitment.fulfilled_by_agent_id == f.agent_id,
                    Commitment.accepted_by_agent_id == f.agent_id,
                    Commitment.released_to_agent_id == f.agent_id,
                )
            )
        if f.customer_id is not None:
            conditions.append(Commitment.customer_id == f.customer_id)
        if f.site is not None:
            conditions.append(Commitment.site == f.site)
        if f.at_risk is not None:
            conditions.append(Commitment.at_risk.is_(f.at_risk))
        if f.tenant_id is not None:
            conditions.append(Commitment.tenant_id == f.tenant_id)
        if conditions:
            stmt = stmt.where(and_(*conditions))
        stmt = stmt.order_by(Commitment.deadline, Commitment.id).limit(f.limit).offset(f.offset)
        async with self.sessionmaker() as s:
            return list((await s.execute(stmt)).scalars().all())

    async def summary_today(self, now: datetime | None = None) -> Summary:
        """The promises for today (each site's local today), per site and overall.

        A promise belongs to the day it was made for (``promise_day``: "today" in the customer's clock),
        not to the date its deadline falls on at the site: "by 21:00" for a customer three hours west of
        a UTC site ends after the site's midnight, and is still one of today's promises."""
        now = (now or self.clock.now()).astimezone(UTC)
        utc_day = now.date()
        async with self.sessionmaker() as s:
            rows = (
                (
                    await s.execute(
                        # deadline_day is indexed, and lies within three days of any site's today for
                        # the promises made for that day (timezones differ by up to 26 hours)
                        select(Commitment).where(
                            Commitment.deadline_day >= utc_day - timedelta(days=3),
                            Commitment.deadline_day <= utc_day + timedelta(days=3),
                        )
                    )
                )
                .scalars()
                .all()
            )
        sites: dict[str, SiteSummary] = {}
        for c in rows:
            today = now.astimezone(self.calendars.for_site(c.site).tz).date()
            if c.promise_day == today:
                sites.setdefault(c.site, SiteSummary(site=c.site, date=today)).count(c)
        overall = SiteSummary(site=None, date=None)
        for entry in sites.values():
            overall.add(entry)
        return Summary(at=now, overall=overall, sites=[sites[k] for k in sorted(sites)])


@dataclass
class SiteSummary:
    """Counts over the promises due on one (site-local) day.

    ``same_day_fulfilment_rate`` = fulfilled / promised: it only rises through the day and is the
    final rate once every promise has ended; None when nothing was promised.
    """

    site: str | None
    date: date | None
    promised: int = 0
    fulfilled: int = 0
    open: int = 0
    at_risk: int = 0
    breached: int = 0
    breached_unflagged: int = 0  # of those, not flagged at risk first
    closed: int = 0
    exhausted: int = 0  # of those closed, after max_attempts without reaching the customer

    def count(self, c: Commitment) -> None:
        self.promised += 1
        if c.status == Status.FULFILLED.value:
            self.fulfilled += 1
        elif c.status in OPEN:
            self.open += 1
            self.at_risk += int(c.at_risk)
        elif c.status == Status.BREACHED.value:
            self.breached += 1
            self.breached_unflagged += int(c.at_risk_at is None)
        elif c.status == Status.CLOSED.value:
            self.closed += 1
            self.exhausted += int(c.close_reason == CloseReason.ATTEMPTS_EXHAUSTED.value)

    def add(self, other: SiteSummary) -> None:
        for name in (
            "promised",
            "fulfilled",
            "open",
            "at_risk",
            "breached",
            "breached_unflagged",
            "closed",
            "exhausted",
        ):
            setattr(self, name, getattr(self, name) + getattr(other, name))

    @property
    def same_day_fulfilment_rate(self) -> float | None:
        return round(self.fulfilled / self.promised, 4) if self.promised else None


@dataclass
class Summary:
    at: datetime
    overall: SiteSummary
    sites: list[SiteSummary]
