"""Property-based test of the router service (hypothesis state machine), without HTTP.

Random sequences of agents, contacts, abandonments, ticks (with time jumping so offers expire), accepts,
declines, completions, status changes and crash-restarts (a new service rebuilt from the same database)
run against a real SQLite database and the real matching engine, with an injected clock. After every
step the database and the engine must agree, and the guarantees must hold: a contact is waiting, offered
to one agent, assigned to one agent or finished, never lost; no agent is over capacity."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import hypothesis.strategies as st
from hypothesis import HealthCheck, settings
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule
from sqlalchemy import select

from services.router import leadership, rebuild
from services.router.agent_work import activity_of, routable_status
from services.router.app import MIGRATIONS
from services.router.auth import Principal
from services.router.errors import RouterError
from services.router.service import AgentProfile, RouterService
from services.router.settings import RouterSettings
from services.router.store import ContactState, OfferState, agents, contacts, offers
from services.router.strategy import load_strategy
from shared import db
from shared.events import (
    AgentStatus,
    AttemptResult,
    CallbackAttempted,
    CallbackBreached,
    CallbackDue,
    CallbackFulfilled,
    Channel,
    ContactAbandoned,
    ContactRequested,
    Customer,
    Intent,
    Outcome,
    Role,
    Tier,
    make_event,
)

ADMIN = Principal.admin()
STRATEGY = load_strategy(None)


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


class RouterMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.clock = Clock()
        self.engine_db: Any = None
        self.service: RouterService | None = None
        self.contact_ids: list[str] = []
        self.agent_ids: list[str] = []
        self.capacity: dict[str, dict[str, int]] = {}

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)

    # -- set-up and tear-down ------------------------------------------------------------------------

    @initialize(tmp=st.integers(0, 10**9))
    def setup(self, tmp: int) -> None:
        import tempfile

        self.dir = Path(tempfile.mkdtemp(prefix=f"router-sm-{tmp}-"))
        self.url = f"sqlite+aiosqlite:///{self.dir / 'router.sqlite3'}"
        self.run(db.migrate(MIGRATIONS, self.url))
        self.engine_db = db.make_engine(self.url)
        self.service = self.run(self._open())

    async def _open(self) -> RouterService:
        service = RouterService(
            sessionmaker=db.make_sessionmaker(self.engine_db),
            settings=RouterSettings(presence_grace_seconds=1e9, offer_timeout_seconds=15),
            strategy=STRATEGY,
            clock=self.clock,
        )
        await leadership.acquire(service)
        async with service.writer.lock:
            await rebuild.from_database(service)
        return service

    def teardown(self) -> None:
        if self.engine_db is not None:
            self.run(self.engine_db.dispose())
        self.loop.close()

    @property
    def svc(self) -> RouterService:
        assert self.service is not None
        return self.service

    # -- rules ---------------------------------------------------------------------------------------

    @precondition(lambda self: len(self.agent_ids) < 5)
    @rule(
        chat=st.integers(0, 3),
        voice=st.integers(0, 1),
        role=st.sampled_from(list(Role)),
        status=st.sampled_from([AgentStatus.AVAILABLE, AgentStatus.OFFLINE]),
    )
    def add_agent(self, chat: int, voice: int, role: Role, status: AgentStatus) -> None:
        if chat + voice == 0:
            chat = 1
        agent_id = f"a{len(self.agent_ids)}"
        capacity = {Channel.CHAT: chat, Channel.VOICE: voice}
        profile = AgentProfile(
            name=agent_id,
            roles=[role],
            primary_role=role,
            skills={"billing": 3},
            languages=["en"],
            capacity=capacity,
            site="main",
        )
        self.run(self.svc.register_agent(agent_id, profile, status))
        self.agent_ids.append(agent_id)

    @precondition(lambda self: len(self.contact_ids) < 25)
    @rule(
        channel=st.sampled_from([Channel.CHAT, Channel.VOICE]),
        intent=st.sampled_from([None, *Intent]),
        tier=st.sampled_from(list(Tier)),
    )
    def contact_arrives(self, channel: Channel, intent: Intent | None, tier: Tier) -> None:
        n = len(self.contact_ids)
        event = ContactRequested(
            contact_id=f"c{n}",
            source="test",
            external_id=str(n),
            channel=channel,
            intent=intent,
            customer=Customer(id=f"cust{n}", tier=tier),
            within_business_hours=True,
        )
        self.run(self.svc.handle_event(make_event(event, source="test")))
        self.contact_ids.append(event.contact_id)

    @rule(
        data=st.data(),
        widen=st.booleans(),
        boost=st.sampled_from([0.0, 5.0]),
        waited=st.sampled_from([0, 300]),
        callback=st.sampled_from(["cb0", "cb1", "cb2"]),
        attempt=st.integers(1, 3),
    )
    def callback_due(
        self, data: st.DataObject, widen: bool, boost: float, waited: int, callback: str, attempt: int
    ) -> None:
        """New, repeated (an escalation replaces it) or next-attempt callbacks: one work item per id."""
        preferred = data.draw(st.sampled_from([None, *self.agent_ids]))
        now = datetime.fromtimestamp(self.clock.now, UTC)
        event = CallbackDue(
            callback_id=callback,
            customer=Customer(id=f"cust-{callback}"),
            channel=Channel.VOICE,
            deadline=now + timedelta(hours=1),
            attempt=attempt,
            priority_boost=boost,
            widen_roles=widen,
            preferred_agent_id=preferred,
            virtual_start_time=now - timedelta(seconds=waited),
        )
        self.run(self.svc.handle_event(make_event(event, source="switchboard/callback")))
        if callback not in self.contact_ids:
            self.contact_ids.append(callback)

    @precondition(lambda self: any(c.startswith("cb") for c in self.contact_ids))
    @rule(data=st.data(), kind=st.sampled_from(["attempted", "fulfilled", "breached"]))
    def callback_closed_elsewhere(self, data: st.DataObject, kind: str) -> None:
        callback = data.draw(st.sampled_from([c for c in self.contact_ids if c.startswith("cb")]))
        customer = Customer(id=f"cust-{callback}")
        at = datetime.fromtimestamp(self.clock.now, UTC)
        event = {
            "attempted": CallbackAttempted(callback_id=callback, customer=customer, result=AttemptResult.BUSY, at=at),
            "fulfilled": CallbackFulfilled(callback_id=callback, customer=customer, at=at),
            "breached": CallbackBreached(callback_id=callback, customer=customer, deadline=at, at=at),
        }[kind]
        self.run(self.svc.handle_event(make_event(event, source="switchboard/callback")))

    @precondition(lambda self: self.contact_ids)
    @rule(data=st.data())
    def caller_hangs_up(self, data: st.DataObject) -> None:
        contact_id = data.draw(st.sampled_from(self.contact_ids))
        self.run(self.svc.handle_event(make_event(ContactAbandoned(contact_id=contact_id), source="test")))

    @rule(seconds=st.sampled_from([0.0, 1.0, 10.0, 16.0, 40.0]))
    def time_passes(self, seconds: float) -> None:
        self.clock.now += seconds
        self.run(self.svc.tick())

    def _pending(self) -> list[Any]:
        async def q() -> list[Any]:
            async with self.svc.sessionmaker() as s:
                return list((await s.execute(select(offers).where(offers.c.state == OfferState.PENDING))).all())

        return self.run(q())  # type: ignore[no-any-return]

    @rule(data=st.data(), accept=st.booleans())
    def agent_answers(self, data: st.DataObject, accept: bool) -> None:
        pending = self._pending()
        if not pending:
            return
        offer = data.draw(st.sampled_from(pending))
        who = Principal.agent(offer.agent_id)
        try:
            if accept:
                self.run(self.svc.accept(offer.offer_id, who))
            else:
                self.run(self.svc.decline(offer.offer_id, who, "busy"))
        except RouterError as exc:
            assert exc.status_code == 409  # expired meanwhile: timed out and requeued instead

    @rule(data=st.data(), sold=st.booleans())
    def agent_completes(self, data: st.DataObject, sold: bool) -> None:
        async def assigned() -> list[Any]:
            async with self.svc.sessionmaker() as s:
                stmt = select(contacts).where(contacts.c.state == ContactState.ASSIGNED)
                return list((await s.execute(stmt)).all())

        rows = self.run(assigned())
        if not rows:
            return
        row = data.draw(st.sampled_from(rows))
        result = AttemptResult.REACHED if row.callback_id else None
        self.run(self.svc.complete(row.contact_id, Principal.agent(row.agent_id), Outcome(sold=sold), result))

    @precondition(lambda self: self.agent_ids)
    @rule(
        data=st.data(),
        status=st.sampled_from([AgentStatus.AVAILABLE, AgentStatus.BREAK, AgentStatus.OFFLINE]),
    )
    def agent_changes_status(self, data: st.DataObject, status: AgentStatus) -> None:
        agent_id = data.draw(st.sampled_from(self.agent_ids))
        self.run(self.svc.change_status(agent_id, status, None))

    @rule()
    def crash_and_restart(self) -> None:
        """The process dies (nothing in memory survives); a new one takes over once the lease expired."""
        self.clock.now += self.svc.ownership.ttl + 0.1
        self.service = self.run(self._open())
        self.run(self.svc.tick())  # what start() does before consuming: heal expired offers

    # -- invariants ----------------------------------------------------------------------------------

    @invariant()
    def database_and_engine_agree_and_guarantees_hold(self) -> None:
        if self.service is None:
            return
        self.run(self._check())

    async def _check(self) -> None:
        svc = self.svc
        async with svc.sessionmaker() as s:
            rows = {r.contact_id: r for r in (await s.execute(select(contacts))).all()}
            all_offers = (await s.execute(select(offers))).all()
            agent_rows = {r.agent_id: r for r in (await s.execute(select(agents))).all()}
        assert set(rows) == set(self.contact_ids)  # nothing lost, nothing invented
        pending = Counter(o.contact_id for o in all_offers if o.state == OfferState.PENDING)
        accepted = Counter(o.contact_id for o in all_offers if o.state == OfferState.ACCEPTED)
        assert all(n == 1 for n in pending.values())
        # one accepted offer per contact; a callback is one item with one accepted offer per attempt
        assert all(n == 1 or cid.startswith("cb") for cid, n in accepted.items())
        load: dict[str, Counter[str]] = {a: Counter() for a in agent_rows}
        for cid, row in rows.items():
            reserved = svc.engine.reserved_agent(cid)
            if row.state == ContactState.WAITING:
                assert svc.engine.is_waiting(cid) and cid not in pending and row.agent_id is None
            elif row.state == ContactState.OFFERED:
                assert pending[cid] == 1 and reserved == row.agent_id
                (o,) = [o for o in all_offers if o.contact_id == cid and o.state == OfferState.PENDING]
                assert o.agent_id == row.agent_id and svc.open_offers.of_contact[cid] == o.offer_id
                load[row.agent_id][row.channel] += 1
            elif row.state == ContactState.ASSIGNED:
                assert accepted[cid] >= 1 and cid not in pending and reserved == row.agent_id
                load[row.agent_id][row.channel] += 1
            else:
                assert reserved is None and not svc.engine.is_waiting(cid) and cid not in pending
        assert set(svc.open_offers.by_id) == {o.offer_id for o in all_offers if o.state == OfferState.PENDING}
        self._check_declines_survive(rows, all_offers)
        for agent_id, row in agent_rows.items():
            engine_load = {ch.value: n for ch, n in svc.engine.agent(agent_id).load.items() if n}
            assert engine_load == {ch: n for ch, n in load[agent_id].items() if n}, agent_id
            for ch, n in load[agent_id].items():
                assert n <= row.capacity.get(ch, 0), (agent_id, ch, n)
            # Status apart from work: the stored activity is what the rows say the agent is doing, whatever
            # path got there (an offer timing out after the last contact ended included), and the engine
            # routes by the agent's own choice, held back only by a wrap-up.
            assigned = sum(1 for r in rows.values() if r.agent_id == agent_id and r.state == ContactState.ASSIGNED)
            offered = sum(1 for r in rows.values() if r.agent_id == agent_id and r.state == ContactState.OFFERED)
            wrapping = row.wrap_up_until is not None
            expected = activity_of(load=assigned + offered, offered=offered, wrapping=wrapping)
            assert row.activity == expected, (agent_id, row.activity, expected, assigned, offered, wrapping)
            assert row.status in ("available", "break", "offline"), (agent_id, row.status)
            routed = svc.engine.status_of(agent_id)
            assert routed is routable_status(AgentStatus(row.status), wrapping=wrapping), (agent_id, routed)

    def _check_declines_survive(self, rows: dict[str, Any], all_offers: list[Any]) -> None:
        """Who declined or missed a waiting or offered contact (recently, in its current attempt) is what
        the offers table says: so a restart, or a callback escalated while waiting or while offered,
        skips the same agents as before. A callback's next attempt starts afresh; with this frozen clock
        an offer of the previous attempt can end at the very instant the next attempt starts, so for
        those instants the table may name more than the engine."""
        svc = self.svc
        now = self.clock.now
        window = svc.strategy.reoffer_after_seconds
        for cid, row in rows.items():
            if row.state not in (ContactState.WAITING, ContactState.OFFERED):
                continue
            start = row.received_at
            in_engine = {a: t for a, t in svc.engine.declined_by(cid).items() if now - t < window}
            in_table: dict[str, float] = {}
            for o in all_offers:
                if (
                    o.contact_id == cid
                    and o.state in (OfferState.DECLINED, OfferState.TIMED_OUT)
                    and o.resolved_at >= start
                    and now - o.resolved_at < window
                ):
                    in_table[o.agent_id] = max(o.resolved_at, in_table.get(o.agent_id, o.resolved_at))
            later = {a: t for a, t in in_engine.items() if t > start}
            assert later == {a: t for a, t in in_table.items() if t > start}, (cid, in_engine, in_table)
            if cid.startswith("cb"):
                assert in_engine.items() <= in_table.items(), (cid, in_engine, in_table)
            else:
                assert in_engine == in_table, (cid, in_engine, in_table)


TestRouterMachine = RouterMachine.TestCase
TestRouterMachine.settings = settings(
    max_examples=40,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
