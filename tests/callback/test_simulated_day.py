"""A whole simulated day (and the next) on an injected clock, in seconds: requests arrive through the
day, agents log on and off with the site's hours, a minimal router takes each released callback to a
free agent, customers answer (or not) by script. Run on a DST change day in both directions and on a
public holiday. Invariants are checked at every step and at the end."""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, or_, select

from services.callback.clock import ManualClock
from services.callback.consumers import CallbackConsumer
from services.callback.lifecycle import OPEN_STATUSES, Policy, Status
from services.callback.service import CallbackService, ListFilter
from services.callback.store import AgentPresence, Commitment
from shared.business_hours import BusinessCalendars
from shared.events import (
    AgentActivity,
    AgentStatus,
    AttemptResult,
    CallbackAtRisk,
    CallbackBreached,
    CallbackDue,
    CallbackFulfilled,
    CallbackScheduled,
    Envelope,
)
from tests.callback.conftest import SITES, Outbox, ServiceFactory, berlin
from tests.callback.helpers import accepted, agent_status, agent_work, attempted, completed, requested

pytestmark = pytest.mark.asyncio

# A seven-day site in Munich (Bavarian holidays), open 08:00-20:00: open on the DST Sundays.
SEVEN_DAYS = {
    "sites": {
        **SITES["sites"],
        "daily": {
            "timezone": "Europe/Berlin",
            "country": "DE",
            "subdiv": "BY",
            "hours": {d: ["08:00-20:00"] for d in ("mon", "tue", "wed", "thu", "fri", "sat", "sun")},
        },
    }
}

# What customer i answers on each attempt (the last entry repeats).
SCRIPTS = [
    [AttemptResult.REACHED],
    [AttemptResult.NO_ANSWER, AttemptResult.REACHED],
    [AttemptResult.BUSY, AttemptResult.VOICEMAIL, AttemptResult.REACHED],
    [AttemptResult.NO_ANSWER],  # never answers: attempts exhausted
    [AttemptResult.WRONG_NUMBER],
    [AttemptResult.REACHED],
]
CALL = timedelta(minutes=10)
STEP = timedelta(minutes=5)


@dataclass(frozen=True)
class Scenario:
    name: str
    first_day: datetime  # local midnight of the day the requests arrive
    holiday: bool = False


SCENARIOS = [
    Scenario("spring_forward", berlin(2026, 3, 29)),  # 02:00 CET -> 03:00 CEST
    Scenario("fall_back", berlin(2026, 10, 25)),  # 03:00 CEST -> 02:00 CET
    Scenario("easter_monday", berlin(2026, 4, 6), holiday=True),
]


@dataclass
class Sim:
    service: CallbackService
    consumer: CallbackConsumer
    staged: Outbox
    clock: ManualClock
    presence: dict[str, AgentStatus] = field(default_factory=dict)
    calls: dict[str, tuple[str, datetime]] = field(default_factory=dict)  # agent -> (callback, ends)
    router_queue: list[CallbackDue] = field(default_factory=list)
    attempts_by_customer: Counter[str] = field(default_factory=Counter)
    events: list[Envelope] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)

    async def send(self, env: Envelope) -> None:
        await self.consumer.handle(env)

    async def set_presence(self, agent: str, status: AgentStatus, at: datetime) -> None:
        """As the router reports it: the agent's own status, and apart from it their work (busy here
        means on a callback call: agent.work_changed, not a status)."""
        before = self.presence.get(agent)
        if before == status:
            return
        self.presence[agent] = status
        if status is AgentStatus.BUSY:
            await self.send(agent_work(agent, AgentActivity.ON_CONTACT, at, site="daily"))
        elif before is AgentStatus.BUSY and status is AgentStatus.AVAILABLE:
            await self.send(agent_work(agent, AgentActivity.IDLE, at, site="daily"))
        else:
            if before is AgentStatus.BUSY:
                await self.send(agent_work(agent, AgentActivity.IDLE, at, site="daily"))
            await self.send(agent_status(agent, status, at, site="daily"))

    async def step(self, t: datetime, open_now: bool) -> None:
        self.clock.set(t)
        local = t.astimezone(berlin(2026, 1, 1).tzinfo)
        # Calls that ended: the router reports the attempt, then the assignment completes.
        for agent, (cid, ends) in list(self.calls.items()):
            if ends <= t:
                c = await self.service.get(cid)
                n = self.attempts_by_customer[c.customer_id]
                script = SCRIPTS[int(c.customer_id.removeprefix("c")) % len(SCRIPTS)]
                self.attempts_by_customer[c.customer_id] += 1
                await self.send(attempted(cid, script[min(n, len(script) - 1)], ends, agent_id=agent))
                await self.send(completed(cid, agent, ends))
                del self.calls[agent]
        # Shifts: a1 all day, a2 mornings only (so the afternoon is short of staff).
        for agent, until in (("a1", 24), ("a2", 12)):
            if agent in self.calls:
                continue
            on = open_now and local.hour < until
            await self.set_presence(agent, AgentStatus.AVAILABLE if on else AgentStatus.OFFLINE, t)
        await self.service.tick()
        await self.check_capacity()
        for env in await self.staged.take():
            self.events.append(env)
            if isinstance(env.payload, CallbackDue):
                self.router_queue = [d for d in self.router_queue if d.callback_id != env.payload.callback_id]
                if env.payload.callback_id not in {cid for cid, _ in self.calls.values()}:
                    self.router_queue.append(env.payload)
        await self.route(t)

    async def route(self, t: datetime) -> None:
        """The router's part: offer each due callback to a free agent (the promising one if free)."""
        waiting: list[CallbackDue] = []
        for due in self.router_queue:
            free = [a for a, st in self.presence.items() if st == AgentStatus.AVAILABLE and a not in self.calls]
            if not free:
                waiting.append(due)
                continue
            agent = due.preferred_agent_id if due.preferred_agent_id in free else free[0]
            await self.send(accepted(due.callback_id, agent, t))
            await self.set_presence(agent, AgentStatus.BUSY, t)
            self.calls[agent] = (due.callback_id, t + CALL)
        self.router_queue = waiting

    async def check_capacity(self) -> None:
        async with self.service.sessionmaker() as s:
            released = (
                await s.execute(select(func.count()).select_from(Commitment).where(Commitment.status == "released"))
            ).scalar_one()
            free = (
                await s.execute(
                    select(func.count())
                    .select_from(AgentPresence)
                    .where(
                        AgentPresence.status == "available",
                        or_(AgentPresence.activity.is_(None), AgentPresence.activity == "idle"),
                    )
                )
            ).scalar_one()
        if released > free:
            self.violations.append(f"{self.clock.now().isoformat()}: {released} released, {free} free")


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: s.name)
async def test_a_simulated_day(
    scenario: Scenario, make_service: ServiceFactory, staged: Outbox, clock: ManualClock
) -> None:
    calendars = BusinessCalendars.from_config(SEVEN_DAYS)
    policy = Policy()
    service = make_service(calendars=calendars, policy=policy)
    sim = Sim(service, CallbackConsumer(service), staged, clock)
    cal = calendars.for_site("daily")
    day0 = scenario.first_day
    # Requests through the first day, every 15 minutes from 00:30 to 19:45 (in UTC steps, so the DST
    # change is crossed naturally); every 7th is an agent promise, every 5th has a preferred window.
    arrivals: list[tuple[datetime, Envelope]] = []
    t = day0.astimezone(UTC) + timedelta(minutes=30)
    i = 0
    while t.astimezone(cal.tz).date() == day0.date() and t.astimezone(cal.tz).hour < 20:
        kw: dict[str, object] = {}
        if i % 7 == 6:
            kw["agent"] = "a2"
        if i % 5 == 4:
            kw["window"] = (t + timedelta(hours=1), t + timedelta(hours=2))
        arrivals.append((t, requested(f"c{i}", t, site="daily", **kw)))  # type: ignore[arg-type]
        t += timedelta(minutes=15)
        i += 1
    end = (day0 + timedelta(days=1)).replace(hour=21).astimezone(UTC)
    t = day0.astimezone(UTC)
    while t <= end:
        while arrivals and arrivals[0][0] <= t:
            clock.set(arrivals[0][0])
            await sim.send(arrivals.pop(0)[1])
        open_now = cal.is_open(t)
        await sim.step(t, open_now)
        t += STEP if open_now or sim.calls else timedelta(minutes=30)  # closed: nothing can be released

    assert not sim.violations, sim.violations[:5]  # never more offered than agents were free
    rows = await service.list(ListFilter(limit=1000))
    assert len(rows) == i
    assert all(c.status not in OPEN_STATUSES for c in rows), [
        (c.customer_id, c.status, c.deadline, c.not_before, c.attempts, c.next_check_at, c.requested_at)
        for c in rows
        if c.status in OPEN_STATUSES
    ] or [(c.customer_id, c.status) for c in rows if c.status in OPEN_STATUSES]

    by_id: dict[str, list[object]] = defaultdict(list)
    for env in sim.events:
        by_id[getattr(env.payload, "callback_id", "")].append(env.payload)
    for c in rows:
        evs = by_id[c.id]
        assert sum(isinstance(e, CallbackScheduled) for e in evs) == 1
        ends = [e for e in evs if isinstance(e, CallbackFulfilled | CallbackBreached)]
        assert len(ends) == 1, (c.customer_id, ends)  # exactly one ending, never silently dropped
        if c.status == Status.FULFILLED:
            assert isinstance(ends[0], CallbackFulfilled)
            assert c.fulfilled_at is not None and c.fulfilled_at <= c.deadline + policy.in_progress_grace
        else:
            assert isinstance(ends[0], CallbackBreached) and ends[0].reason == c.close_reason
        if c.close_reason == "deadline_passed":
            kinds = [type(e).__name__ for e in evs]
            assert "CallbackAtRisk" in kinds, (c.customer_id, c.requested_at, c.deadline, c.attempts, c.at_risk, kinds)
            assert kinds.index("CallbackAtRisk") < kinds.index("CallbackBreached")  # flagged before it broke
        assert c.attempts <= policy.max_attempts
        history = (await service.get(c.id)).attempt_history
        for a, b in zip(history, history[1:], strict=False):
            gap = b.at - a.at
            assert gap >= policy.retry_spacing or b.at >= c.deadline - policy.attempt_reserve - STEP, (
                c.customer_id,
                a.at,
                b.at,
                c.deadline,
            )
        # The deadline closes business hours (20:00 local, whatever the UTC offset that day).
        local_deadline = c.deadline.astimezone(cal.tz)
        assert (local_deadline.hour, local_deadline.minute) == (20, 0)
        if scenario.holiday:
            assert c.next_business_day and local_deadline.date() == (day0 + timedelta(days=1)).date()
            assert c.promise_text.startswith("We are closed today")
        elif local_deadline.date() == day0.date():
            assert not c.next_business_day
    # Every outcome occurred: the day exercised the whole lifecycle.
    outcomes = Counter(c.close_reason or c.status for c in rows)
    assert outcomes["fulfilled"] and outcomes["attempts_exhausted"] and outcomes["wrong_number"]
    if not scenario.holiday:
        assert outcomes["deadline_passed"], outcomes  # the afternoon is short of staff
        assert any(isinstance(e.payload, CallbackAtRisk) for e in sim.events)
        # The summary at the end of the first day agrees with the database.
        summary = await service.summary_today(day0.replace(hour=22))
        first = [c for c in rows if c.promise_day == day0.date()]  # the promises made for that day
        assert summary.overall.promised == len(first)
        assert summary.overall.fulfilled == sum(c.status == Status.FULFILLED for c in first)
        assert summary.overall.breached == sum(c.status == Status.BREACHED for c in first)
        assert summary.overall.same_day_fulfilment_rate == round(summary.overall.fulfilled / len(first), 4)
