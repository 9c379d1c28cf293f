"""The callback service over a real database (SQLite, and PostgreSQL when configured):
requests and merges, inbox dedupe, capacity-gated releases, preferred agents, attempts, restarts."""

from __future__ import annotations

from datetime import UTC, timedelta

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import func, select

from services.callback.clock import ManualClock
from services.callback.consumers import CallbackConsumer
from services.callback.lifecycle import Status
from services.callback.service import CallbackService, CommitmentClosed, ListFilter
from services.callback.store import Commitment
from services.callback.use_cases.agent_presence import Presence, free_agents, presence_in
from shared.events import AgentActivity, AgentStatus, AttemptResult, CallbackBreached, CallbackDue, CallbackScheduled
from tests.callback.conftest import Outbox, ServiceFactory, berlin
from tests.callback.helpers import accepted, agent_status, agent_work, attempted, completed, declined, requested

pytestmark = pytest.mark.asyncio


@pytest.fixture
def consumer(service: CallbackService) -> CallbackConsumer:
    return CallbackConsumer(service)


async def count(service: CallbackService) -> int:
    async with service.sessionmaker() as s:
        return (await s.execute(select(func.count()).select_from(Commitment))).scalar_one()


async def test_request_creates_a_commitment_and_answers_with_the_promise(
    consumer: CallbackConsumer, service: CallbackService, staged: Outbox, clock: ManualClock
) -> None:
    clock.set(berlin(2026, 3, 25, 10, 0))
    assert await consumer.handle(requested("cust-1", berlin(2026, 3, 25, 10, 0)))
    [c] = await service.list(ListFilter())
    assert c.status == Status.PENDING and c.deadline == berlin(2026, 3, 25, 18, 0)
    assert c.deadline_day.isoformat() == "2026-03-25" and not c.next_business_day
    [ev] = await staged.take()
    assert isinstance(ev.payload, CallbackScheduled)
    assert ev.payload.callback_id == c.id and ev.payload.promise_text == "We will call you back today by 18:00."


async def test_redelivery_and_repeated_request_ids_have_no_effect(
    consumer: CallbackConsumer, service: CallbackService, staged: Outbox
) -> None:
    env = requested("cust-1", berlin(2026, 3, 25, 10, 0), request_id="req-1")
    assert await consumer.handle(env)
    assert not await consumer.handle(env)  # the same envelope again: inbox
    assert await consumer.handle(requested("cust-1", berlin(2026, 3, 25, 10, 1), request_id="req-1"))
    assert await count(service) == 1
    [c] = await service.list(ListFilter())
    assert c.merged_requests == 1
    assert await staged.take_types() == ["callback.scheduled"]


async def test_a_batch_is_checked_against_the_inbox_at_once_and_applies_each_event_once(
    consumer: CallbackConsumer, service: CallbackService, staged: Outbox
) -> None:
    """One inbox statement for the whole batch: an event repeated inside the batch, or redelivered in a
    later one, has no second effect."""
    first = requested("cust-1", berlin(2026, 3, 25, 10, 0))
    second = requested("cust-2", berlin(2026, 3, 25, 10, 1))
    assert await consumer.handle_many([first, second, first]) == 2
    assert await count(service) == 2
    assert await consumer.handle_many([second, first]) == 0
    assert await staged.take_types() == ["callback.scheduled", "callback.scheduled"]


async def test_duplicate_requests_for_one_customer_merge(
    consumer: CallbackConsumer, service: CallbackService, staged: Outbox
) -> None:
    await consumer.handle(
        requested("cust-1", berlin(2026, 3, 25, 10, 0), virtual_start_time=berlin(2026, 3, 25, 9, 50))
    )
    await consumer.handle(
        requested(
            "cust-1",
            berlin(2026, 3, 25, 11, 0),
            agent="a7",
            window=(berlin(2026, 3, 25, 15, 0), berlin(2026, 3, 25, 16, 0)),
            virtual_start_time=berlin(2026, 3, 25, 9, 40),
        )
    )
    await consumer.handle(requested("cust-2", berlin(2026, 3, 25, 11, 0)))
    rows = await service.list(ListFilter(customer_id="cust-1"))
    assert len(rows) == 1
    c = rows[0]
    assert c.merged_requests == 2
    assert c.promised_by_agent_id == "a7"  # the later promise adds its agent
    assert c.window_start == berlin(2026, 3, 25, 15, 0)  # and its window, which fits
    assert c.virtual_start_time == berlin(2026, 3, 25, 9, 40)  # the earliest place in line
    events = [e.payload for e in await staged.take()]
    scheduled = [e for e in events if isinstance(e, CallbackScheduled)]
    assert [e.callback_id for e in scheduled].count(c.id) == 2  # each request got its answer
    assert await count(service) == 2


async def test_asking_again_the_next_morning_turns_tomorrow_into_today(
    consumer: CallbackConsumer, service: CallbackService, staged: Outbox, clock: ManualClock
) -> None:
    clock.set(berlin(2026, 3, 24, 17, 50))
    await consumer.handle(requested("cust-1", berlin(2026, 3, 24, 17, 50)))
    [c] = await service.list(ListFilter())
    assert c.next_business_day and c.promise_text.startswith("It is too late to call you back today")
    clock.set(berlin(2026, 3, 25, 9, 0))
    await consumer.handle(requested("cust-1", berlin(2026, 3, 25, 9, 0)))
    [c] = await service.list(ListFilter())
    assert c.deadline == berlin(2026, 3, 25, 18, 0) and c.merged_requests == 2
    assert not c.next_business_day and c.promise_text == "We will call you back today by 18:00."
    texts = [e.payload.promise_text for e in await staged.take()]  # type: ignore[attr-defined]
    assert texts[-1] == "We will call you back today by 18:00."


async def test_a_new_request_after_the_end_opens_a_new_commitment(
    consumer: CallbackConsumer, service: CallbackService, clock: ManualClock
) -> None:
    await consumer.handle(requested("cust-1", berlin(2026, 3, 25, 10, 0)))
    [c] = await service.list(ListFilter())
    clock.set(berlin(2026, 3, 25, 10, 30))
    await service.record_attempt(c.id, AttemptResult.REACHED, agent_id="a1")
    await consumer.handle(requested("cust-1", berlin(2026, 3, 25, 12, 0)))
    rows = await service.list(ListFilter(customer_id="cust-1"))
    assert sorted(r.status for r in rows) == ["fulfilled", "pending"]


async def test_releases_never_exceed_free_agents(
    consumer: CallbackConsumer, service: CallbackService, staged: Outbox, clock: ManualClock
) -> None:
    t = berlin(2026, 3, 25, 9, 0)
    clock.set(t)
    for i in range(3):
        await consumer.handle(requested(f"cust-{i}", t - timedelta(minutes=10 - i)))
    await staged.take()
    assert not (await service.tick()).released  # nobody is available
    await consumer.handle(agent_status("a1", AgentStatus.AVAILABLE, t))
    report = await service.tick()
    assert len(report.released) == 1
    assert not (await service.tick()).released  # the one free agent already has one offered
    await consumer.handle(agent_status("a2", AgentStatus.AVAILABLE, t))
    assert len((await service.tick()).released) == 1
    dues = [e.payload for e in await staged.take() if isinstance(e.payload, CallbackDue)]
    # Released in the customers' original order (virtual start time), not by arrival at this service.
    first = (await service.get(dues[0].callback_id)).customer_id
    assert first == "cust-0"
    assert dues[0].virtual_start_time == t - timedelta(minutes=10)
    # An acceptance flagged as not a callback is skipped without a lookup, even under a callback's id.
    assert not await consumer.handle(accepted(dues[0].callback_id, "a1", t, is_callback=False))
    assert (await service.get(dues[0].callback_id)).status == Status.RELEASED
    # Agent a1 accepts: the callback is in progress and no longer waits for an agent; a1 is busy now.
    await consumer.handle(accepted(dues[0].callback_id, "a1", t))
    await consumer.handle(agent_status("a1", AgentStatus.BUSY, t + timedelta(seconds=1)))
    assert not (await service.tick()).released  # a2 still has the second one
    await consumer.handle(agent_status("a3", AgentStatus.AVAILABLE, t))
    assert len((await service.tick()).released) == 1
    async with service.sessionmaker() as s:
        statuses = (await s.execute(select(Commitment.status).order_by(Commitment.virtual_start_time))).scalars().all()
    assert statuses == ["in_progress", "released", "released"]


async def test_a_release_nobody_accepts_stops_holding_the_free_agent_after_the_hold(
    consumer: CallbackConsumer, service: CallbackService, staged: Outbox, clock: ManualClock
) -> None:
    """The free agent may not fit the released callback (another language, say): it waits in the
    router's line, and after the hold the agent may be offered a callback it does fit."""
    t = berlin(2026, 3, 25, 9, 0)
    clock.set(t)
    await consumer.handle(agent_status("a1", AgentStatus.AVAILABLE, t))
    for i in range(2):
        await consumer.handle(requested(f"cust-{i}", t - timedelta(minutes=10 - i)))
    [first] = (await service.tick()).released
    hold = service.policy.release_hold
    clock.set(t + hold - timedelta(seconds=1))
    assert not (await service.tick()).released  # still within the hold: a1 has it on offer
    clock.set(t + hold)
    [second] = (await service.tick()).released
    assert second != first
    assert {c.status for c in await service.list(ListFilter())} == {Status.RELEASED}
    await staged.take()
    # The first is still released (the router still has it) and counts as released, not pending.
    assert (await service.get(first)).released_at == t
    # The second holds a1 for its own hold: nothing more is released meanwhile.
    await consumer.handle(requested("cust-2", t + hold))
    assert not (await service.tick()).released


async def test_an_old_agent_status_arriving_late_does_not_win(
    consumer: CallbackConsumer, service: CallbackService, clock: ManualClock
) -> None:
    t = berlin(2026, 3, 25, 9, 0)
    clock.set(t)
    await consumer.handle(agent_status("a1", AgentStatus.OFFLINE, t))
    await consumer.handle(agent_status("a1", AgentStatus.AVAILABLE, t - timedelta(minutes=5)))
    await consumer.handle(requested("cust-1", t))
    assert not (await service.tick()).released


async def test_preferred_agent_first_then_the_pool(
    consumer: CallbackConsumer, service: CallbackService, staged: Outbox, clock: ManualClock
) -> None:
    t = berlin(2026, 3, 25, 8, 0)
    clock.set(t)
    await consumer.handle(agent_status("a7", AgentStatus.AVAILABLE, t))
    await consumer.handle(agent_status("a1", AgentStatus.AVAILABLE, t))
    await consumer.handle(requested("cust-1", t, agent="a7", origin="agent_promise"))  # type: ignore[arg-type]
    await staged.take()
    await service.tick()
    [due] = [e.payload for e in await staged.take()]
    assert isinstance(due, CallbackDue) and due.preferred_agent_id == "a7" and due.priority_boost == 0
    c = await service.get(due.callback_id)
    assert c.preferred_until == berlin(2026, 3, 25, 12, 25)
    clock.set(berlin(2026, 3, 25, 12, 24))
    assert not (await service.tick()).fallbacks
    clock.set(berlin(2026, 3, 25, 12, 25))
    assert (await service.tick()).fallbacks == [c.id]
    [again] = [e.payload for e in await staged.take()]
    assert isinstance(again, CallbackDue) and again.callback_id == c.id
    assert again.preferred_agent_id is None and again.priority_boost > 0


async def test_preferred_agent_busy_waits_offline_goes_to_pool_decline_falls_back(
    consumer: CallbackConsumer, service: CallbackService, staged: Outbox, clock: ManualClock
) -> None:
    t = berlin(2026, 3, 25, 8, 0)
    clock.set(t)
    await consumer.handle(agent_status("a7", AgentStatus.AVAILABLE, t))
    await consumer.handle(agent_work("a7", AgentActivity.ON_CONTACT, t))  # available, but working
    await consumer.handle(agent_status("a8", AgentStatus.OFFLINE, t))
    await consumer.handle(agent_status("a1", AgentStatus.AVAILABLE, t))
    await consumer.handle(requested("cust-7", t, agent="a7"))
    await consumer.handle(requested("cust-8", t, agent="a8"))
    await staged.take()
    report = await service.tick()
    [due] = [e.payload for e in await staged.take()]
    assert isinstance(due, CallbackDue) and due.preferred_agent_id is None  # a8 is offline: pool
    assert (await service.get(due.callback_id)).customer_id == "cust-8"
    assert len(report.released) == 1  # cust-7 waits for its busy agent
    await consumer.handle(agent_work("a7", AgentActivity.IDLE, t + timedelta(minutes=5)))
    clock.set(t + timedelta(minutes=5))
    await service.tick()
    [due7] = [e.payload for e in await staged.take()]
    assert isinstance(due7, CallbackDue) and due7.preferred_agent_id == "a7"
    await consumer.handle(declined(due7.callback_id, "a7", t + timedelta(minutes=6)))
    [fallback] = [e.payload for e in await staged.take()]
    assert isinstance(fallback, CallbackDue) and fallback.preferred_agent_id is None


async def test_attempts_retry_spacing_and_exhaustion(
    consumer: CallbackConsumer, service: CallbackService, staged: Outbox, clock: ManualClock
) -> None:
    t = berlin(2026, 3, 25, 9, 0)
    clock.set(t)
    await consumer.handle(agent_status("a1", AgentStatus.AVAILABLE, t))
    await consumer.handle(requested("cust-1", t))
    await service.tick()
    [c] = await service.list(ListFilter())
    clock.set(t + timedelta(minutes=2))
    await consumer.handle(attempted(c.id, AttemptResult.NO_ANSWER, t + timedelta(minutes=2)))
    c = await service.get(c.id)
    assert c.status == Status.PENDING and c.not_before == t + timedelta(minutes=32) and c.attempts == 1
    clock.set(t + timedelta(minutes=31))
    assert not (await service.tick()).released  # spacing holds
    clock.set(t + timedelta(minutes=32))
    assert (await service.tick()).released == [c.id]
    clock.set(t + timedelta(minutes=33))
    await consumer.handle(attempted(c.id, AttemptResult.BUSY, t + timedelta(minutes=33)))
    clock.set(t + timedelta(minutes=63))
    await service.tick()
    await staged.take()
    clock.set(t + timedelta(minutes=64))
    env = attempted(c.id, AttemptResult.VOICEMAIL, t + timedelta(minutes=64))
    await consumer.handle(env)
    await consumer.handle(env)  # redelivered: counted once
    c = await service.get(c.id)
    assert c.status == Status.CLOSED and c.close_reason == "attempts_exhausted" and c.attempts == 3
    assert [a.result for a in c.attempt_history] == ["no_answer", "busy", "voicemail"]
    [breach] = [e.payload for e in await staged.take()]
    assert isinstance(breach, CallbackBreached) and breach.reason == "attempts_exhausted" and breach.attempts == 3


async def test_wrong_number_closes_honestly_and_reached_fulfils(
    consumer: CallbackConsumer, service: CallbackService, staged: Outbox, clock: ManualClock
) -> None:
    t = berlin(2026, 3, 25, 9, 0)
    clock.set(t)
    await consumer.handle(requested("cust-1", t))
    await consumer.handle(requested("cust-2", t))
    a, b = await service.list(ListFilter())
    await staged.take()
    await service.record_attempt(a.id, AttemptResult.WRONG_NUMBER, agent_id="a1")
    await service.record_attempt(b.id, AttemptResult.REACHED, agent_id="a2")
    types = await staged.take_types()
    assert types.count("callback.breached") == 1 and types.count("callback.fulfilled") == 1
    assert types.count("callback.attempted") == 2  # API-recorded attempts are published for ops
    assert (await service.get(a.id)).close_reason == "wrong_number"
    b2 = await service.get(b.id)
    assert b2.status == Status.FULFILLED and b2.fulfilled_by_agent_id == "a2"
    # A late attempt on an ended commitment reported by the router (a call that was made) is kept in
    # the history and changes nothing; typed in through the API it is refused (issue 12: 409).
    with pytest.raises(CommitmentClosed):
        await service.record_attempt(b.id, AttemptResult.NO_ANSWER, agent_id="a2")
    await service.record_attempt(b.id, AttemptResult.NO_ANSWER, agent_id="a2", source="event")
    b3 = await service.get(b.id)
    assert b3.status == Status.FULFILLED and b3.attempts == 1 and b3.attempt_history[-1].late


async def test_reached_after_the_deadline_is_a_breach_not_a_fulfilment(
    consumer: CallbackConsumer, service: CallbackService, staged: Outbox, clock: ManualClock
) -> None:
    t = berlin(2026, 3, 25, 17, 0)
    clock.set(t)
    await consumer.handle(requested("cust-1", t))
    [c] = await service.list(ListFilter())
    clock.set(berlin(2026, 3, 25, 18, 5))  # the scheduler has not run yet
    await service.record_attempt(c.id, AttemptResult.REACHED, agent_id="a1", at=berlin(2026, 3, 25, 18, 4))
    c = await service.get(c.id)
    assert c.status == Status.BREACHED and c.attempt_history[-1].late


async def test_reached_before_the_deadline_but_reported_after_it_counts(
    consumer: CallbackConsumer, service: CallbackService, clock: ManualClock
) -> None:
    clock.set(berlin(2026, 3, 25, 17, 0))
    await consumer.handle(requested("cust-1", berlin(2026, 3, 25, 17, 0)))
    [c] = await service.list(ListFilter())
    clock.set(berlin(2026, 3, 25, 18, 2))  # the report arrives late; no scheduler pass in between
    await consumer.handle(attempted(c.id, AttemptResult.REACHED, berlin(2026, 3, 25, 17, 55)))
    c = await service.get(c.id)
    assert c.status == Status.FULFILLED and c.fulfilled_at == berlin(2026, 3, 25, 17, 55)


async def test_call_accepted_before_the_deadline_may_finish_after_it(
    consumer: CallbackConsumer, service: CallbackService, clock: ManualClock
) -> None:
    t = berlin(2026, 3, 25, 17, 30)
    clock.set(t)
    await consumer.handle(agent_status("a1", AgentStatus.AVAILABLE, t))
    await consumer.handle(requested("cust-1", t))
    await service.tick()
    [c] = await service.list(ListFilter())
    await consumer.handle(accepted(c.id, "a1", berlin(2026, 3, 25, 17, 58)))
    clock.set(berlin(2026, 3, 25, 18, 10))
    assert not (await service.tick()).breached
    await consumer.handle(attempted(c.id, AttemptResult.REACHED, berlin(2026, 3, 25, 18, 10)))
    assert (await service.get(c.id)).status == Status.FULFILLED


async def test_completed_without_an_attempt_goes_back_in_line(
    consumer: CallbackConsumer, service: CallbackService, clock: ManualClock
) -> None:
    t = berlin(2026, 3, 25, 9, 0)
    clock.set(t)
    await consumer.handle(agent_status("a1", AgentStatus.AVAILABLE, t))
    await consumer.handle(requested("cust-1", t))
    await service.tick()
    [c] = await service.list(ListFilter())
    await consumer.handle(accepted(c.id, "a1", t, is_callback=None))  # from a router before the flag
    assert (await service.get(c.id)).status == Status.IN_PROGRESS  # looked up, and applied
    await consumer.handle(completed(c.id, "a1", t + timedelta(minutes=3)))
    c = await service.get(c.id)
    assert c.status == Status.PENDING and c.not_before == t + timedelta(minutes=8)


async def test_restart_rederives_due_at_risk_and_breached_from_the_database(
    make_service: ServiceFactory, staged: Outbox, clock: ManualClock
) -> None:
    first = make_service()
    consumer = CallbackConsumer(first)
    t = berlin(2026, 3, 25, 15, 0)
    clock.set(t)
    await consumer.handle(agent_status("a1", AgentStatus.AVAILABLE, t))
    await consumer.handle(requested("early", berlin(2026, 3, 25, 9, 0)))  # deadline 18:00
    await consumer.handle(requested("late", berlin(2026, 3, 25, 17, 20)))  # deadline 18:00 too
    await consumer.handle(requested("tomorrow", berlin(2026, 3, 25, 17, 45)))  # next business day
    await staged.take()
    del first, consumer  # the process dies; nothing in memory survives
    clock.set(berlin(2026, 3, 25, 17, 0))
    second = make_service()
    report = await second.tick()
    assert len(report.at_risk) == 2 and len(report.released) == 1  # one free agent
    types = await staged.take_types()
    assert types.count("callback.at_risk") == 2 and types.count("callback.due") == 1
    clock.set(berlin(2026, 3, 25, 18, 1))
    third = make_service()
    report = await third.tick()
    assert len(report.breached) == 2
    rows = {c.customer_id: c for c in await third.list(ListFilter())}
    assert rows["tomorrow"].status == Status.PENDING and rows["tomorrow"].next_business_day
    assert (await staged.take_types()).count("callback.breached") == 2
    assert not (await make_service().tick())  # nothing twice


async def test_a_breach_after_downtime_through_the_at_risk_point_says_it_was_not_flagged(
    make_service: ServiceFactory, staged: Outbox, clock: ManualClock
) -> None:
    """ "Kept, or flagged before it breaks": when nothing ran through a promise's at-risk point, its
    breach says so (event, summary, metric), unlike a breach that was flagged in time."""
    clock.set(berlin(2026, 3, 25, 9, 0))
    service = make_service()
    consumer = CallbackConsumer(service)
    await consumer.handle(requested("flagged", berlin(2026, 3, 25, 9, 0)))  # deadline 18:00
    await consumer.handle(requested("unflagged", berlin(2026, 3, 25, 9, 0), site="nyc"))
    clock.set(berlin(2026, 3, 25, 17, 0))  # "flagged" is at risk; "nyc" (New York) is hours away from it
    assert len((await service.tick()).at_risk) == 1
    await staged.take()
    unflagged = REGISTRY.get_sample_value("switchboard_callback_breaches_unflagged_total", {"site": "nyc"}) or 0
    clock.set(berlin(2026, 3, 25, 18, 0))
    assert len((await service.tick()).breached) == 1  # "flagged": warned an hour ahead
    # The service is down from here until after New York's deadline: nothing flags "unflagged".
    nyc = await service.list(ListFilter(site="nyc"))
    clock.set(nyc[0].deadline + timedelta(minutes=5))
    assert len((await make_service().tick()).breached) == 1
    breaches = {
        e.payload.customer.id: e.payload for e in await staged.take() if isinstance(e.payload, CallbackBreached)
    }
    assert breaches["flagged"].at_risk_at == berlin(2026, 3, 25, 17, 0)
    assert breaches["unflagged"].at_risk_at is None and breaches["unflagged"].reason == "deadline_passed"
    after = REGISTRY.get_sample_value("switchboard_callback_breaches_unflagged_total", {"site": "nyc"})
    assert after == unflagged + 1
    summary = await service.summary_today(berlin(2026, 3, 26, 0, 30))  # still the 25th in New York
    by_site = {e.site: e for e in summary.sites}
    assert by_site["nyc"].breached == 1 and by_site["nyc"].breached_unflagged == 1


async def test_a_promise_ending_after_the_sites_midnight_is_one_of_todays(
    make_service: ServiceFactory, clock: ManualClock
) -> None:
    """A site open round the clock in UTC; a customer three hours west asks at 15:30 UTC (12:30 for
    them): "today by 21:00" for them ends at 00:00 UTC, the site's tomorrow. It is still one of today's
    promises in the summary, and only today's."""
    from datetime import UTC, datetime

    from shared.business_hours import BusinessCalendars

    week = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
    always_open = {"timezone": "UTC", "hours": {d: ["00:00-24:00"] for d in week}}
    calendars = BusinessCalendars.from_config({"default": always_open})
    service = make_service(calendars=calendars)
    consumer = CallbackConsumer(service)
    asked = datetime(2026, 11, 25, 15, 30, tzinfo=UTC)
    clock.set(asked)
    assert await consumer.handle(requested("west", asked, timezone="Etc/GMT+3"))
    [c] = await service.list(ListFilter())
    assert c.deadline == datetime(2026, 11, 26, 0, 0, tzinfo=UTC) and not c.next_business_day
    assert (c.promise_day.isoformat(), c.deadline_day.isoformat()) == ("2026-11-25", "2026-11-26")
    today = await service.summary_today(asked)
    assert (today.overall.promised, today.overall.open) == (1, 1)
    assert today.sites[0].date.isoformat() == "2026-11-25"
    tomorrow = await service.summary_today(asked + timedelta(hours=9))  # 00:30 UTC on the 26th
    assert tomorrow.overall.promised == 0


async def test_the_told_deadline_is_tracked_and_a_drift_is_flagged(
    consumer: CallbackConsumer, service: CallbackService, clock: ManualClock
) -> None:
    """Intake carries what it told the customer; the callback service tracks exactly that (issue 12)."""
    t = berlin(2026, 3, 25, 9, 0)
    clock.set(t)
    before = (
        REGISTRY.get_sample_value(
            "switchboard_callback_promise_drift_total", {"site": "main", "kind": "deadline_differs"}
        )
        or 0
    )
    await consumer.handle(requested("agrees", t, promised_deadline=berlin(2026, 3, 25, 18, 0)))
    told = berlin(2026, 3, 25, 17, 0)  # e.g. intake ran with other calendars
    await consumer.handle(
        requested("drifts", t, promised_deadline=told, promise_text="We will call you back today by 17:00.")
    )
    by_customer = {c.customer_id: c for c in await service.list(ListFilter())}
    assert by_customer["agrees"].deadline.replace(tzinfo=UTC) == berlin(2026, 3, 25, 18, 0)
    drifted = by_customer["drifts"]
    assert drifted.deadline.replace(tzinfo=UTC) == told and drifted.promise_text.endswith("by 17:00.")
    after = REGISTRY.get_sample_value(
        "switchboard_callback_promise_drift_total", {"site": "main", "kind": "deadline_differs"}
    )
    assert after == before + 1  # only the drifting one


async def test_an_event_for_an_unknown_site_is_kept_on_the_default_calendar(
    consumer: CallbackConsumer, service: CallbackService, clock: ManualClock
) -> None:
    """The APIs refuse unknown sites; one already on the bus must not be lost."""
    t = berlin(2026, 3, 25, 9, 0)
    clock.set(t)
    assert await consumer.handle(requested("lost?", t, site="atlantis"))
    [c] = await service.list(ListFilter())
    assert c.site == "atlantis" and c.status == Status.PENDING


async def test_an_event_with_no_callable_moment_is_kept_on_the_site_hours_and_flagged(
    consumer: CallbackConsumer, service: CallbackService, clock: ManualClock
) -> None:
    """Pacific/Gambier's 08:00-21:00 never meets Munich's hours: an accepted request (e.g. an agent's
    promise) is not refused after the fact; it is planned within the site's hours and counted."""
    t = berlin(2026, 3, 25, 9, 0)
    clock.set(t)
    await consumer.handle(requested("far", t, timezone="Pacific/Gambier"))
    [c] = await service.list(ListFilter())
    # 09:00 in Munich is 23:00 on the 24th in Gambier: the customer's today still has an hour of site time.
    assert c.status == Status.PENDING and c.deadline.replace(tzinfo=UTC) == berlin(2026, 3, 25, 10, 0)
    assert c.promise_text == (
        "We will call you back today by 00:00 your time (Pacific/Gambier), outside your usual hours."
    )
    assert REGISTRY.get_sample_value("switchboard_callback_promise_drift_total", {"site": "main", "kind": "site_hours"})
    # Its callable windows are the site's hours (not the customer's, which never meet them): releasable now.
    assert service.windows(c)[-1] == (berlin(2026, 3, 25, 8, 0), berlin(2026, 3, 25, 10, 0))


async def test_a_free_agent_is_available_and_idle_status_apart_from_work(
    consumer: CallbackConsumer, service: CallbackService, staged: Outbox, clock: ManualClock
) -> None:
    """The router reports the agent's own status and its view of their work apart (issue 14). An agent
    who chose available but is on a contact is not free; once idle they are, and a work report arriving
    late (older than the one kept) does not make them busy again."""
    t = berlin(2026, 3, 25, 9, 0)
    clock.set(t)
    await consumer.handle(requested("cust-w", t - timedelta(minutes=5)))
    await staged.take()
    await consumer.handle(agent_status("a1", AgentStatus.AVAILABLE, t))
    await consumer.handle(agent_work("a1", AgentActivity.ON_CONTACT, t + timedelta(seconds=1)))
    assert not (await service.tick()).released  # available by choice, but working
    await consumer.handle(agent_work("a1", AgentActivity.WRAP_UP, t + timedelta(seconds=2)))
    assert not (await service.tick()).released
    await consumer.handle(agent_work("a1", AgentActivity.IDLE, t + timedelta(seconds=3)))
    await consumer.handle(agent_work("a1", AgentActivity.OFFERED, t + timedelta(seconds=2, milliseconds=500)))
    assert len((await service.tick()).released) == 1  # idle; the late "offered" did not win


async def test_reports_of_one_agent_in_one_batch_keep_the_newest_of_status_and_of_work_apart(
    consumer: CallbackConsumer, service: CallbackService, clock: ManualClock
) -> None:
    """A consumed batch often holds several reports of one agent, out of order, each written as one
    conditional upsert. Within the batch as across batches: an agent first heard of by its work has no
    status (not free); the newest status and the newest work each win apart; a legacy ``busy`` carries
    work, which an older work report does not undo."""
    t = berlin(2026, 3, 25, 9, 0)
    clock.set(t)
    s = timedelta(seconds=1)
    applied = await consumer.handle_many(
        [
            agent_work("a1", AgentActivity.ON_CONTACT, t + s),  # first heard of by its work
            agent_status("a1", AgentStatus.AVAILABLE, t),
            agent_work("a1", AgentActivity.IDLE, t + 3 * s),
            agent_work("a1", AgentActivity.OFFERED, t + 2 * s),  # older than idle: does not win
            agent_status("a1", AgentStatus.OFFLINE, t - 300 * s),  # older than available: does not win
            agent_status("a2", AgentStatus.BUSY, t + s),  # legacy: available, on a contact
            agent_work("a2", AgentActivity.IDLE, t),  # older than the legacy busy's work
            agent_work("a3", AgentActivity.IDLE, t),  # no status yet
        ]
    )
    assert applied == 8
    async with service.sessionmaker() as session:
        known = await presence_in(session, "default", "main")
    assert known == {
        "a1": Presence("available", "idle"),
        "a2": Presence("available", "on_contact"),
        "a3": Presence(None, "idle"),
    }
    assert free_agents(known) == ["a1"]
    # A later batch: a2 is idle now, a1 goes on a break; an old available of a1's does not undo it. a3's
    # first status is a legacy busy older than its work: the status counts, its work does not.
    await consumer.handle_many(
        [
            agent_work("a2", AgentActivity.IDLE, t + 4 * s),
            agent_status("a1", AgentStatus.BREAK, t + 5 * s),
            agent_status("a1", AgentStatus.AVAILABLE, t + 4 * s),
            agent_status("a3", AgentStatus.BUSY, t - 10 * s),
        ]
    )
    async with service.sessionmaker() as session:
        assert sorted(free_agents(await presence_in(session, "default", "main"))) == ["a2", "a3"]


async def test_a_router_from_before_the_split_is_still_understood(
    consumer: CallbackConsumer, service: CallbackService, staged: Outbox, clock: ManualClock
) -> None:
    """Status events written before status and work were apart (``busy``, ``wrap_up``) may still sit on the
    bus after an upgrade: busy reads as available-but-working, and available after busy as idle."""
    t = berlin(2026, 3, 25, 9, 0)
    clock.set(t)
    await consumer.handle(requested("cust-l", t - timedelta(minutes=5)))
    await staged.take()
    await consumer.handle(agent_status("a1", AgentStatus.BUSY, t))
    assert not (await service.tick()).released
    later = t + timedelta(seconds=5)
    await consumer.handle(agent_status("a1", AgentStatus.AVAILABLE, later, previous=AgentStatus.BUSY))
    assert len((await service.tick()).released) == 1
