"""Hypothesis drives the real service (SQLite) through random sequences: requests (some by agents,
some from other timezones), agent status changes, offers accepted, attempts with any result, time
jumps over weekends, holidays and DST, scheduler passes. Invariants hold after every step."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from datetime import timedelta

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule
from sqlalchemy import func, select

from services.callback.clock import ManualClock
from services.callback.consumers import CallbackConsumer
from services.callback.lifecycle import OPEN_STATUSES, Policy, Status
from services.callback.migrations_path import MIGRATIONS
from services.callback.service import CallbackService
from services.callback.store import AgentPresence, Commitment
from shared import db
from shared.business_hours import BusinessCalendars
from shared.events import AgentStatus, AttemptResult
from tests.callback.conftest import SITES, berlin
from tests.callback.helpers import accepted, agent_status, requested

AGENTS = ["a1", "a2", "a3"]
OPEN = [s.value for s in OPEN_STATUSES]


class CallbackMachine(RuleBasedStateMachine):
    @initialize()
    def setup(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.tmp = tempfile.mkdtemp(prefix="cb-stateful-")
        url = f"sqlite+aiosqlite:///{self.tmp}/callback.sqlite3"
        self.run(db.migrate(MIGRATIONS, url))
        self.engine = db.make_engine(url)
        self.policy = Policy()
        self.clock = ManualClock(berlin(2026, 3, 27, 7, 0))  # Friday: weekend, DST Sunday, then the week
        self.service = CallbackService(
            db.make_sessionmaker(self.engine), BusinessCalendars.from_config(SITES), self.policy, self.clock
        )
        self.consumer = CallbackConsumer(self.service)

    def teardown(self) -> None:
        if hasattr(self, "engine"):
            self.run(self.engine.dispose())
            self.loop.close()
            shutil.rmtree(self.tmp, ignore_errors=True)

    def run(self, coro):  # type: ignore[no-untyped-def]
        return self.loop.run_until_complete(coro)

    async def rows(self, *statuses: str) -> list[Commitment]:
        async with self.service.sessionmaker() as s:
            stmt = select(Commitment).order_by(Commitment.id)
            if statuses:
                stmt = stmt.where(Commitment.status.in_(statuses))
            return list((await s.execute(stmt)).scalars().all())

    # -- rules ------------------------------------------------------------------------------------

    @rule(
        customer=st.integers(0, 5),
        agent=st.none() | st.sampled_from(AGENTS),
        tz=st.sampled_from([None, "America/New_York", "Asia/Tokyo", "Europe/London"]),
    )
    def request(self, customer: int, agent: str | None, tz: str | None) -> None:
        self.run(self.consumer.handle(requested(f"c{customer}", self.clock.now(), timezone=tz, agent=agent)))

    @rule(agent=st.sampled_from(AGENTS), status=st.sampled_from(list(AgentStatus)))
    def presence(self, agent: str, status: AgentStatus) -> None:
        self.run(self.consumer.handle(agent_status(agent, status, self.clock.now())))

    @rule(minutes=st.sampled_from([1, 5, 15, 30, 60, 120, 240, 600, 1440]))
    def advance(self, minutes: int) -> None:
        self.clock.advance(timedelta(minutes=minutes))
        self.tick()

    @rule()
    def tick(self) -> None:
        async def go() -> None:
            async with self.service.sessionmaker() as s:
                free = (
                    await s.execute(
                        select(func.count()).select_from(AgentPresence).where(AgentPresence.status == "available")
                    )
                ).scalar_one()
            now = self.clock.now()
            holding = {  # released within the hold: each holds a free agent
                c.id for c in await self.rows(Status.RELEASED.value) if c.released_at > now - self.policy.release_hold
            }
            report = await self.service.tick()
            # Released earlier and still released after this pass: one that breached in the pass's time
            # step no longer holds an agent, so the release step of the same pass may use that agent.
            still = {c.id for c in await self.rows(Status.RELEASED.value)} & holding
            assert len(report.released) <= max(0, free - len(still)), (report, free, still)
            for c in await self.rows(*OPEN):
                grace = self.policy.in_progress_grace if c.status == Status.IN_PROGRESS else timedelta(0)
                assert now < c.deadline + grace, f"{c.id} open past its deadline after a pass"

        self.run(go())

    @rule(pick=st.integers(0, 50), agent=st.sampled_from(AGENTS))
    def accept(self, pick: int, agent: str) -> None:
        released = self.run(self.rows(Status.RELEASED.value))
        if released:
            c = released[pick % len(released)]
            self.run(self.consumer.handle(accepted(c.id, agent, self.clock.now())))

    @rule(pick=st.integers(0, 50), result=st.sampled_from(list(AttemptResult)))
    def attempt(self, pick: int, result: AttemptResult) -> None:
        rows = self.run(self.rows())
        if rows:
            c = rows[pick % len(rows)]
            # As the router reports them (calls that were made): the API refuses some by design (409).
            self.run(self.service.record_attempt(c.id, result, agent_id="a1", source="event"))

    # -- invariants -------------------------------------------------------------------------------

    @invariant()
    def consistent(self) -> None:
        if not hasattr(self, "service"):
            return
        rows = self.run(self.rows())
        open_customers = [c.customer_id for c in rows if c.status in OPEN]
        assert len(open_customers) == len(set(open_customers)), "two open commitments for one customer"
        for c in rows:
            assert c.attempts <= self.policy.max_attempts
            assert c.requested_at <= c.deadline
            if c.status in OPEN:
                assert c.open_customer_id == c.customer_id and c.next_check_at is not None
                assert c.ended_at is None
            else:
                assert c.open_customer_id is None and c.ended_at is not None and c.next_check_at is None
            if c.status == Status.FULFILLED:
                assert c.fulfilled_at is not None
                assert c.fulfilled_at <= c.deadline + self.policy.in_progress_grace
                assert c.last_result == AttemptResult.REACHED
            if c.status == Status.CLOSED:
                assert c.close_reason in ("wrong_number", "attempts_exhausted")
            if c.status == Status.BREACHED:
                assert c.close_reason == "deadline_passed"
            if c.status == Status.RELEASED:
                assert c.released_at is not None


CallbackMachine.TestCase.settings = settings(
    max_examples=25, stateful_step_count=30, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
TestCallbackStateMachine = CallbackMachine.TestCase
