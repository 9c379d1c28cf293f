"""Property-based tests: the engine's invariants under random sequences of everything that can happen.

A model kept beside the engine records where every contact must be (waiting, reserved to one agent, or
gone). After each step we check the engine agrees, that loads equal the reservations, and after each
``decide`` that (1) every decision was legal, (2) nothing that could be matched was left unmatched
(checked by brute force over all agents and contacts) and (3) no waiting contact of higher priority
was passed over for an agent that could have served it.
"""

from __future__ import annotations

import copy
import random
from dataclasses import replace

from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    initialize,
    invariant,
    multiple,
    precondition,
    rule,
)

from services.router import matching
from services.router.matching import AgentState, Decision, MatchingEngine, WaitingContact
from services.router.strategy import Strategy, load_strategy, parse_strategy
from shared.events import AgentStatus, Channel, Intent, Role, Tier

SITES = ["main", "berlin"]
LANGS = ["en", "de"]
CHANNELS = [Channel.VOICE, Channel.CHAT]


def _strategy(tie_break: str, max_sales_share: float = 1.0, skill_fit: str = "best") -> Strategy:
    data = load_strategy().model_dump(mode="json")
    data["tie_break"] = tie_break
    data["skill_fit"] = skill_fit
    data["reoffer_after_seconds"] = 20
    data["reoffer_alone_after_seconds"] = 6  # a decliner is asked again after 6 s if nobody else can help
    data["sales_share"] = {"max_share": max_sales_share, "period_seconds": 600, "min_sample": 3}
    return parse_strategy(data, "property-test")


STRATEGIES = {
    **{tb: _strategy(tb) for tb in ("longest_idle", "least_occupied", "round_robin")},
    "sales_capped": _strategy("longest_idle", max_sales_share=0.15),
    "closest_fit": _strategy("round_robin", skill_fit="closest"),
}

# Choices weighted towards matches happening: mostly available, connected agents on one site.
AGENT_CHOICES = {
    "site": ["main"] * 4 + ["berlin"],
    "roles": [
        [Role.SERVICE],
        [Role.SALES, Role.SERVICE],
        [Role.BRAND_AMBASSADOR],
        [Role.SERVICE, Role.BRAND_AMBASSADOR],
        [Role.SALES],
        list(Role),
    ],
    "skills": [{}, {"billing": 3}, {"billing": 1, "retention": 5}, {"retention": 2}, {"billing": 5}],
    "languages": [{"en"}, {"en"}, {"en", "de"}, {"de"}],
    "capacity": [
        {Channel.VOICE: 1},
        {Channel.VOICE: 1},
        {Channel.CHAT: 2},
        {Channel.VOICE: 1, Channel.CHAT: 3},
        {Channel.VOICE: 0, Channel.CHAT: 1},
    ],
    "status": [AgentStatus.AVAILABLE] * 4 + list(AgentStatus),
    "connected": [True, True, True, False],
}
CONTACT_CHOICES = {
    "site": ["main"] * 4 + ["berlin"],
    "channel": CHANNELS,
    "intent": [None, *Intent],
    "tier": list(Tier),
    "language": ["en", "en", "en", "de"],
    "age": [0, 0, 5, 30, 59, 60, 119, 120, 179, 200],  # enqueued_at = now - age (old: callbacks)
    "expected_handling_seconds": [None, 30.0, 600.0],
    "required_skills": [{}, {}, {}, {"billing": 2}, {"retention": 4}],
    "priority_boost": [0.0, 0.0, 15.0],
    "widen_roles": [False, False, False, True],
    "prefer": [False, False, True],
}
agent_profiles = st.fixed_dictionaries({k: st.sampled_from(v) for k, v in AGENT_CHOICES.items()})
contact_profiles = st.fixed_dictionaries({k: st.sampled_from(v) for k, v in CONTACT_CHOICES.items()})


class RoutingMachine(RuleBasedStateMachine):
    agents = Bundle("agents")
    contacts = Bundle("contacts")

    @initialize(
        target=agents,
        tie_break=st.sampled_from(sorted(STRATEGIES)),
        compact=st.booleans(),
        staff=st.lists(agent_profiles, min_size=2, max_size=8),
    )
    def setup(self, tie_break: str, compact: bool, staff):
        # negative slack: every lazy-deletion heap is compacted at every opportunity
        self._slack = (matching._HEAP_SLACK, matching._ACTIVE_SLACK)
        if compact:
            matching._HEAP_SLACK, matching._ACTIVE_SLACK = -(10**9), -(10**9)
        self.engine = MatchingEngine(STRATEGIES[tie_break])
        self.now = 1000.0
        self.n_agents = 0
        self.n_contacts = 0
        self.agent_ids: set[str] = set()
        self.capacity: dict[str, dict[Channel, int]] = {}
        self.waiting: dict[str, WaitingContact] = {}
        self.reserved: dict[str, tuple[str, WaitingContact]] = {}  # contact -> (agent, contact)
        self.gone: set[str] = set()
        self.excluded: dict[str, dict[str, float]] = {}  # contact -> agent -> when
        return multiple(*(self._add_agent(p) for p in staff))

    # -- agents ----------------------------------------------------------------------------------------

    @rule(target=agents, p=agent_profiles)
    def add_agent(self, p) -> str:
        return self._add_agent(p)

    @precondition(lambda self: self.waiting)
    @rule(target=agents, data=st.data(), capacity=st.integers(1, 3), roles=st.sampled_from([list(Role), None]))
    def hire_for_a_waiting_contact(self, data, capacity, roles) -> str:
        """An agent who fits some waiting contact (so decisions, competition and drains happen often)."""
        return self._hire(data.draw(st.sampled_from(sorted(self.waiting))), capacity, roles)

    def _hire(self, cid: str, capacity: int, roles: list[Role] | None) -> str:
        wc = self.waiting[cid]
        return self._add_agent(
            {
                "site": wc.site,
                "roles": roles or [self._open_steps(wc, self.now)[-1].role],
                "skills": {"billing": 5, "retention": 5},
                "languages": {wc.language},
                "capacity": {wc.channel: capacity},
                "status": AgentStatus.AVAILABLE,
                "connected": True,
            }
        )

    def _add_agent(self, p) -> str:
        self.n_agents += 1
        aid = f"a{self.n_agents}"
        self.engine.upsert_agent(
            AgentState(
                agent_id=aid,
                site=p["site"],
                roles=p["roles"],
                skills=p["skills"],
                languages=p["languages"],
                capacity=p["capacity"],
                status=p["status"],
                idle_since=self.now - self.n_agents,
                connected=p["connected"],
            )
        )
        self.agent_ids.add(aid)
        self.capacity[aid] = dict(p["capacity"])
        return aid

    @rule(aid=agents, p=agent_profiles)
    def update_agent(self, aid, p) -> None:
        assume(aid in self.agent_ids)
        self.engine.upsert_agent(
            AgentState(
                agent_id=aid,
                site=p["site"],
                roles=p["roles"],
                skills=p["skills"],
                languages=p["languages"],
                capacity=p["capacity"],
                status=p["status"],
                connected=p["connected"],
            )
        )
        self.capacity[aid] = dict(p["capacity"])

    @rule(aid=consumes(agents))
    def remove_agent(self, aid) -> None:
        if aid not in self.agent_ids:
            return
        expected = sorted(c for c, (a, _) in self.reserved.items() if a == aid)
        back = self.engine.remove_agent(aid)
        assert sorted(back) == expected
        for cid in back:
            self.waiting[cid] = self.reserved.pop(cid)[1]
        self.agent_ids.discard(aid)

    @rule(aid=agents, status=st.sampled_from([AgentStatus.AVAILABLE] * 3 + list(AgentStatus)))
    def set_status(self, aid, status) -> None:
        assume(aid in self.agent_ids)
        self.engine.set_status(aid, status, self.now)

    @rule(aid=agents, connected=st.sampled_from([True, True, False]))
    def set_connected(self, aid, connected) -> None:
        assume(aid in self.agent_ids)
        self.engine.set_connected(aid, connected, self.now)

    # -- contacts --------------------------------------------------------------------------------------

    @rule(target=contacts, p=contact_profiles, data=st.data())
    def enqueue(self, p, data) -> str:
        preferred = None
        if p["prefer"] and self.agent_ids:
            preferred = data.draw(st.sampled_from(sorted(self.agent_ids)))
        return self._enqueue(p, preferred)

    def _enqueue(self, p, preferred: str | None) -> str:
        self.n_contacts += 1
        cid = f"c{self.n_contacts}"
        wc = WaitingContact(
            contact_id=cid,
            site=p["site"],
            channel=p["channel"],
            intent=p["intent"],
            tier=p["tier"],
            language=p["language"],
            enqueued_at=self.now - p["age"],
            expected_handling_seconds=p["expected_handling_seconds"],
            required_skills=p["required_skills"],
            priority_boost=p["priority_boost"],
            preferred_agent_id=preferred,
            widen_roles=p["widen_roles"],
        )
        self.engine.enqueue(wc)
        self.engine.enqueue(replace(wc, enqueued_at=0.0))  # a redelivery changes nothing
        self.waiting[cid] = wc
        return cid

    @rule(cid=contacts)
    def withdraw(self, cid) -> None:
        got = self.engine.withdraw(cid)
        if cid in self.waiting:
            assert got is not None and got.contact_id == cid
            del self.waiting[cid]
        elif cid in self.reserved:
            assert got is not None
            del self.reserved[cid]
        else:
            assert got is None
            return
        self.gone.add(cid)

    @precondition(lambda self: self.reserved)
    @rule(data=st.data(), requeue=st.booleans())
    def release_reserved(self, data, requeue) -> None:
        self.release(data.draw(st.sampled_from(sorted(self.reserved))), requeue)

    @precondition(lambda self: self.reserved)
    @rule(data=st.data())
    def finish_reserved(self, data) -> None:
        self.finish(data.draw(st.sampled_from(sorted(self.reserved))))

    @rule(cid=contacts, requeue=st.booleans())
    def release(self, cid, requeue) -> None:
        aid = self.engine.release(cid, self.now, requeue=requeue)
        if cid not in self.reserved:
            assert aid is None
            return
        expected_agent, wc = self.reserved.pop(cid)
        assert aid == expected_agent
        self.excluded.setdefault(cid, {})[aid] = self.now
        if requeue:
            self.waiting[cid] = wc
        else:
            self.gone.add(cid)

    @rule(cid=contacts)
    def finish(self, cid) -> None:
        aid = self.engine.finish(cid, self.now)
        if cid not in self.reserved:
            assert aid is None
            return
        assert aid == self.reserved.pop(cid)[0]
        self.gone.add(cid)

    @rule(seconds=st.sampled_from([1, 5, 30, 61, 125]))
    def advance(self, seconds) -> None:
        self.now += seconds

    @rule(tie_break=st.sampled_from(sorted(STRATEGIES)))
    def replace_strategy(self, tie_break) -> None:
        self.engine.replace_strategy(STRATEGIES[tie_break])

    # -- decisions -------------------------------------------------------------------------------------

    @rule(limit=st.sampled_from([None, None, 1, 2]))
    def decide(self, limit) -> None:
        engine = self.engine
        now = self.now
        before = {aid: engine.agent(aid) for aid in self.agent_ids}
        self._tracker_before = copy.deepcopy(engine.sales)
        waiting_before = dict(self.waiting)
        decisions = engine.decide(now, limit)
        if limit is not None:
            assert len(decisions) <= limit
        seen: set[str] = set()
        sim = {aid: replace(st_, load=dict(st_.load)) for aid, st_ in before.items()}
        tracker = copy.deepcopy(self._tracker_before)  # replays the sales share decision by decision
        for d in decisions:
            assert d.contact_id in waiting_before, f"{d.contact_id} was not waiting"
            assert d.contact_id not in seen, "one contact decided twice"
            seen.add(d.contact_id)
            wc = self.waiting.pop(d.contact_id)
            self.reserved[d.contact_id] = (d.agent_id, wc)
            # legal: the agent could serve it, given what it had already taken in this decide
            a = sim[d.agent_id]
            sales_ok = tracker.sales_allowed(now, wc.site)
            assert self._eligible(a, wc, now, sim.values(), sales_ok), (d, a, sales_ok)
            self._check_preference(d, wc, sim, now, sales_ok)
            a.load[wc.channel] = a.load.get(wc.channel, 0) + 1
            tracker.record_offer(d.contact_id, Role(d.explanation["role"]), now, wc.site)
            after = engine.agent(d.agent_id)
            assert after.load.get(wc.channel, 0) <= after.capacity.get(wc.channel, 0)
            assert d.explanation["rule"] and isinstance(d.score, float)
        if limit is None:
            self._check_maximal(now, engine.sales.sales_allowed(now, "main"))  # per tenant: one answer for all sites
            self._check_priority_order(decisions, waiting_before, before, now)

    # -- helpers ---------------------------------------------------------------------------------------

    def _open_steps(self, wc: WaitingContact, now: float):
        plan = self.engine.plan_for(wc)
        return plan.open_steps(now - wc.enqueued_at, wc.widen_roles)

    def _excluded(self, cid: str, aid: str, now: float, alone: bool) -> bool:
        """Skipped for having declined/missed it: ``alone`` is the case where nobody else can take it."""
        at = self.excluded.get(cid, {}).get(aid)
        strategy = self.engine.strategy
        pause = strategy.reoffer_alone_after_seconds if alone else strategy.reoffer_after_seconds
        return at is not None and now - at < pause

    def _eligible(self, a: AgentState, wc: WaitingContact, now: float, agents, sales_ok: bool) -> bool:
        """``a`` may take ``wc``: as anyone may, or as a past decliner because none of ``agents`` can."""
        if self._can_serve(a, wc, now, sales_ok=sales_ok):
            return True
        return self._can_serve(a, wc, now, sales_ok=sales_ok, alone=True) and not any(
            self._can_serve(b, wc, now, sales_ok=sales_ok) for b in agents
        )

    def _can_serve(
        self,
        a: AgentState,
        wc: WaitingContact,
        now: float,
        ignore_load: bool = False,
        sales_ok: bool = True,
        alone: bool = False,
    ) -> bool:
        if a.status is not AgentStatus.AVAILABLE or not a.connected or a.site != wc.site:
            return False
        ch = wc.channel
        if not ignore_load:
            load = a.load
            if load.get(ch, 0) >= a.capacity.get(ch, 0):
                return False
            busy = sum(load.values())
            if ch is Channel.VOICE and busy:
                return False
            if ch is not Channel.VOICE and load.get(Channel.VOICE, 0):
                return False
        elif a.capacity.get(ch, 0) <= 0:
            return False
        if self._excluded(wc.contact_id, a.agent_id, now, alone):
            return False
        if wc.preferred_agent_id == a.agent_id:
            return True
        if wc.language not in a.languages:
            return False
        for step in self._open_steps(wc, now):
            if not sales_ok and self._capped(wc, step):
                continue
            if step.role in a.roles and all(a.skills.get(n, 0) >= lv for n, lv in step.required_skills):
                return True
        return False

    def _capped(self, wc: WaitingContact, step) -> bool:
        return step.role is Role.SALES and not self.engine.plan_for(wc).sales_cap_exempt

    def _check_preference(
        self, d: Decision, wc: WaitingContact, sim: dict[str, AgentState], now: float, sales_ok: bool
    ) -> None:
        """The contact's own order: its promised agent if free, else the earliest open step with a free
        agent, and within the step no better-skilled free agent was passed over."""
        pid = wc.preferred_agent_id
        free = [a for a in sim.values() if self._can_serve(a, wc, now, sales_ok=sales_ok)]
        alone = not free  # nobody may take it but agents who declined it: they are asked again
        if alone:
            free = [a for a in sim.values() if self._can_serve(a, wc, now, sales_ok=sales_ok, alone=True)]
        promised_free = pid in sim and self._can_serve(sim[pid], wc, now, alone=alone) and sim[pid].site == wc.site
        assert d.explanation["asked_again"] is (d.agent_id in self.excluded.get(wc.contact_id, {}))
        if d.explanation["preferred_agent"]:
            assert d.agent_id == pid
            return
        assert not promised_free, f"{d.contact_id}: promised agent {pid} was free"
        k = d.explanation["step"]
        steps = self.engine.plan_for(wc).steps

        def fits(a: AgentState, step) -> bool:
            return (
                step.role in a.roles
                and wc.language in a.languages
                and all(a.skills.get(n, 0) >= lv for n, lv in step.required_skills)
            )

        for earlier in self._open_steps(wc, now)[:k]:
            if not sales_ok and self._capped(wc, earlier):
                continue
            assert not any(fits(a, earlier) for a in free), f"{d.contact_id}: skipped step {earlier}"
        step = steps[k]
        chosen = sim[d.agent_id]
        score = sum(chosen.skills.get(n, 0) for n, _ in step.required_skills)
        sign = 1 if self.engine.strategy.skill_fit == "best" else -1
        for a in free:
            if fits(a, step):
                other = sum(a.skills.get(n, 0) for n, _ in step.required_skills)
                assert sign * other <= sign * score, f"{a.agent_id} fits {d.contact_id} better"

    def _check_maximal(self, now: float, sales_ok: bool) -> None:
        """Nothing matchable left: no waiting contact that some agent could take right now, not even an
        agent who declined it, once its short pause is over (nobody else could have taken it)."""
        agents = [self.engine.agent(aid) for aid in self.agent_ids]
        for wc in self.waiting.values():
            for a in agents:
                assert not self._can_serve(a, wc, now, sales_ok=sales_ok, alone=True), (
                    f"{wc.contact_id} left though {a.agent_id} fits"
                )

    def _priority(self, wc: WaitingContact, now: float) -> float:
        plan = self.engine.plan_for(wc)
        return plan.priority + wc.priority_boost + plan.aging_per_second * (now - wc.enqueued_at)

    def _check_priority_order(self, decisions: list[Decision], waiting_before, before, now: float) -> None:
        """No agent took a contact while a higher-priority one it could serve stayed waiting."""
        for d in decisions:
            wc = waiting_before[d.contact_id]
            p = self._priority(wc, now)
            a = before[d.agent_id]
            for other in self.waiting.values():
                if other.channel is wc.channel and self._priority(other, now) > p + 1e-6:
                    assert not self._can_serve(a, other, now, ignore_load=True, sales_ok=False), (
                        f"{d.agent_id} took {d.contact_id} though {other.contact_id} ranked higher"
                    )

    def teardown(self) -> None:
        if hasattr(self, "_slack"):
            matching._HEAP_SLACK, matching._ACTIVE_SLACK = self._slack

    # -- invariants ------------------------------------------------------------------------------------

    @invariant()
    def every_contact_is_accounted_for(self) -> None:
        engine = self.engine
        for cid in self.waiting:
            assert engine.is_waiting(cid) and engine.reserved_agent(cid) is None
        for cid, (aid, _) in self.reserved.items():
            assert engine.reserved_agent(cid) == aid and not engine.is_waiting(cid)
        for cid in self.gone:
            assert not engine.is_waiting(cid) and engine.reserved_agent(cid) is None
        assert engine.waiting_count() == len(self.waiting)
        assert engine.stats(self.now)["reserved"] == len(self.reserved)
        assert sorted(e.contact_id for e in engine.queue_snapshot(self.now)) == sorted(self.waiting)

    @invariant()
    def loads_equal_reservations(self) -> None:
        expected: dict[tuple[str, Channel], int] = {}
        for aid, wc in self.reserved.values():
            expected[(aid, wc.channel)] = expected.get((aid, wc.channel), 0) + 1
        for aid in self.agent_ids:
            a = self.engine.agent(aid)
            for ch in CHANNELS:
                assert a.load.get(ch, 0) == expected.get((aid, ch), 0), (aid, ch)

    @invariant()
    def snapshot_is_ordered_by_priority(self) -> None:
        snap = self.engine.queue_snapshot(self.now)
        prios = [e.priority for e in snap]
        assert prios == sorted(prios, reverse=True)
        top = self.engine.queue_snapshot(self.now, limit=3)
        assert [e.contact_id for e in top] == [e.contact_id for e in snap[:3]]

    @precondition(lambda self: hasattr(self, "engine"))
    @rule()
    def estimated_wait_is_sane(self) -> None:
        for site in SITES:
            for ch in CHANNELS:
                assert self.engine.estimated_wait(site, ch, self.now) >= 0

    def verify_all(self) -> None:
        self.every_contact_is_accounted_for()
        self.loads_equal_reservations()
        self.snapshot_is_ordered_by_priority()
        self.estimated_wait_is_sane()


RoutingMachine.TestCase.settings = settings(
    max_examples=200,
    stateful_step_count=80,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
TestRoutingInvariants = RoutingMachine.TestCase


# Hypothesis keeps state-machine runs short; long random workloads (seeded, so any failure replays) reach
# deep backlogs, many requeues and strategy swaps in the middle of it all, through the same checks.
OPS = {
    "add_agent": 3,
    "hire": 4,
    "update_agent": 2,
    "remove_agent": 1,
    "set_status": 4,
    "set_connected": 2,
    "enqueue": 10,
    "withdraw": 2,
    "release": 3,
    "finish": 5,
    "advance": 4,
    "decide": 8,
    "replace_strategy": 1,
}


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1), tie_break=st.sampled_from(sorted(STRATEGIES)), compact=st.booleans())
# Found by a full run: a contact parked because the sales share was at its cap stayed waiting for the rest
# of the pass after a non-sales offer brought the share back under it, next to a free sales agent.
@example(seed=1453755201, tie_break="closest_fit", compact=True)
def test_long_random_workloads_keep_the_invariants(seed, tie_break, compact):
    rng = random.Random(seed)
    agent_p = lambda: {k: rng.choice(v) for k, v in AGENT_CHOICES.items()}  # noqa: E731
    contact_p = lambda: {k: rng.choice(v) for k, v in CONTACT_CHOICES.items()}  # noqa: E731
    m = RoutingMachine()
    m.setup(tie_break, compact, [agent_p() for _ in range(rng.randint(2, 8))])
    names, weights = zip(*OPS.items(), strict=True)
    try:
        for _ in range(400):
            op = rng.choices(names, weights)[0]
            agents = sorted(m.agent_ids)
            if op == "add_agent":
                m._add_agent(agent_p())
            elif op == "hire" and m.waiting:
                m._hire(rng.choice(sorted(m.waiting)), rng.randint(1, 3), rng.choice([list(Role), None]))
            elif op == "update_agent" and agents:
                m.update_agent(rng.choice(agents), agent_p())
            elif op == "remove_agent" and agents:
                m.remove_agent(rng.choice(agents))
            elif op == "set_status" and agents:
                m.set_status(rng.choice(agents), rng.choice(AGENT_CHOICES["status"]))
            elif op == "set_connected" and agents:
                m.set_connected(rng.choice(agents), rng.choice(AGENT_CHOICES["connected"]))
            elif op == "enqueue":
                p = contact_p()
                m._enqueue(p, rng.choice(agents) if p["prefer"] and agents else None)
            elif op == "withdraw" and (m.waiting or m.reserved):
                m.withdraw(rng.choice(sorted([*m.waiting, *m.reserved])))
            elif op == "release" and m.reserved:
                m.release(rng.choice(sorted(m.reserved)), rng.random() < 0.8)
            elif op == "finish" and m.reserved:
                m.finish(rng.choice(sorted(m.reserved)))
            elif op == "advance":
                m.advance(rng.choice([1, 5, 30, 61, 125]))
            elif op == "decide":
                m.decide(rng.choice([None, None, None, 1, 2]))
            elif op == "replace_strategy":
                m.replace_strategy(rng.choice(sorted(STRATEGIES)))
            m.verify_all()
    finally:
        m.teardown()
