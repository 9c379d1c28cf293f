"""Pure matching core: waiting contacts, available agents, explainable decisions.

No I/O, no clock: every call that depends on time takes ``now`` (seconds, any epoch, monotonic per
engine). The service feeds it events (agents, status, presence, contacts, offer outcomes) and turns its
:class:`Decision` objects into offers.

How it stays fast (a decision touches a few heaps, never a scan of all agents or contacts):

* **Pools** index available agents per eligibility class ``(site, channel, language, role, required
  skills)``. A pool is a heap ordered by fit (skill levels, primary role) and then the strategy's
  tie-break. Pools are created lazily when some contact needs one; an agent sits in every pool it
  qualifies for, and is a *member* only while it is available, connected and has free capacity on the
  pool's channel. Heap entries are invalidated lazily through a per-agent stamp.
* **Queues** hold the waiting contacts for which one pool's step is open (one queue per pool, two for
  sales pools: contacts the sales-share cap may hold back are kept apart from exempt ones). Priority ages
  linearly: ``priority(now) = base + rate * (now - enqueued_at)`` with ``rate`` fixed per channel, so it
  orders exactly like ``v = enqueued_at - base / rate`` — a time-invariant key. Heap order never has to be
  recomputed; the current priority is ``rate * (now - v)``.
* **Active heaps** (one per channel) hold the heads of the queues whose pool has a member. A decision
  takes the highest-priority head across channels (a handful of comparisons), serves that contact through
  its own order of preference (promised agent first, then the open steps in order) and assigns the best
  agent of the first step that has one. A contact's later steps open through a single promotion heap
  keyed by the time they open.
* Reservations, releases and completions change one agent: its pool memberships are updated (lazy heap
  deletion; heaps are compacted when stale entries outnumber live ones).

Invariants (checked by the property tests): a contact is waiting, reserved to exactly one agent, or gone
(finished/withdrawn); an agent's load never exceeds its capacity through a decision; no contact is lost.

Interface notes for the service (additions to the agreed signatures; none were changed):

* ``release(contact_id, now, *, requeue=True, missed=True) -> agent id | None``: ``missed`` counts the
  decline/timeout against the agent's consecutive misses (see ``missed_offers`` and
  ``strategy.max_missed_offers``); ``accept(contact_id)`` ends a run of misses.
* ``finish`` returns the agent id (None if the contact was not reserved); ``withdraw`` also cancels a
  reservation (the caller hung up during the offer) and returns the contact.
* ``remove_agent`` returns the contact ids it put back in line (original place).
* ``upsert_agent``: a new agent is taken as given (load included); for a known agent the engine keeps
  its own load/idle_since and replaces the rest of the profile.
* ``restore_reservation(contact, agent_id, now)`` rebuilds an offer/assignment after a restart (it adds
  the load: upsert such agents with ``load={}``).
* ``queue_snapshot(now, limit=None, *, site=None, channel=None) -> list[QueueEntry]``.
* Views: ``agent(agent_id)`` (a copy), ``agent_ids()``, ``reserved_agent``, ``is_waiting``,
  ``waiting_count``, ``plan_for(contact)``, ``stats(now)``; ``engine.sales`` is the strategy's
  :class:`~services.router.strategy.SalesShare` (decisions record offers; feed completions).
* A promised (preferred) agent serves only contacts of its own site; role, language and skills are not
  required of them (they promised), availability and capacity are.
* ``set_status``/``set_connected`` about an unknown agent are no-ops.
* Channel blending (``strategy.blending``): an agent on an exclusive channel (voice) gets nothing else,
  and gets an exclusive-channel contact only when idle on every channel.
* ``Decision.explanation`` keys: rule, step, role, preferred_agent, priority, waited_seconds,
  required_skills, agent_skills, primary_role, skill_fit, tie_break, tie_break_value, upsell,
  short_question, allowed_handling_seconds, goodwill_budget, asked_again, strategy_version.
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple

from services.router.eligibility import Eligibility, eligibility
from services.router.leeway import leeway_for
from services.router.strategy import PlanStep, RoutingPlan, SalesShare, Strategy
from shared.events import AgentStatus, Channel, Intent, Role, Tier

# The index keys. A pool or queue is either a class one (site, channel, language, role, required skills)
# or an agent's personal one ("personal", agent_id, site, channel).
_Skills = tuple[tuple[str, int], ...]  # sorted (name, min level)
_BaseKey = tuple[str, Channel, str, Role]  # site, channel, language, role
_PersonalKey = tuple[Literal["personal"], str, str, Channel]
_PoolKey = tuple[str, Channel, str, Role, _Skills] | _PersonalKey
_QueueKey = tuple[str, Channel, str, Role, _Skills, bool] | _PersonalKey  # class queues add "sales capped"
_PlanKey = tuple[Intent | None, Channel, Tier, bool, _Skills]  # intent, channel, tier, short question, skills
_ClassKey = tuple[int, str, str]  # id(plan), site, language

_WAITING = 0
_RESERVED = 1
_GONE = 2
_PARKED = 3

_AHT_ALPHA = 0.1  # weight of the newest handling time in the running average
# Lazy-deletion heaps are rebuilt when stale entries exceed live ones by this much (tests set 0).
_HEAP_SLACK = 64
_ACTIVE_SLACK = 1024


@dataclass
class AgentState:
    agent_id: str
    site: str
    roles: list[Role]  # primary first
    skills: dict[str, int]  # name -> level 1..5
    languages: set[str]
    capacity: dict[Channel, int]
    status: AgentStatus
    load: dict[Channel, int] = field(default_factory=dict)
    idle_since: float = 0.0
    connected: bool = True


@dataclass
class WaitingContact:
    contact_id: str
    site: str
    channel: Channel
    intent: Intent | None
    tier: Tier
    language: str
    enqueued_at: float  # virtual start time: a callback keeps its original place in line
    expected_handling_seconds: float | None = None
    required_skills: dict[str, int] = field(default_factory=dict)
    priority_boost: float = 0.0
    preferred_agent_id: str | None = None
    widen_roles: bool = False
    callback_id: str | None = None


@dataclass
class Decision:
    """A reservation: the contact has left the queue and counts against the agent's capacity."""

    contact_id: str
    agent_id: str
    rule: str
    score: float  # fit: the agent's levels summed over the required skills, +0.5 for a primary role
    # (with ``skill_fit: closest`` the lowest qualifying sum wins)
    explanation: dict[str, Any]


@dataclass
class QueueEntry:
    contact_id: str
    site: str
    channel: Channel
    priority: float
    waited_seconds: float
    rule: str
    open_roles: list[Role]
    callback_id: str | None = None
    preferred_agent_id: str | None = None


# --------------------------------------------------------------------------------------------------
# Internal records
# --------------------------------------------------------------------------------------------------

# Heap entries. Each is a NamedTuple: it compares exactly like the plain tuple it replaced, field by
# field in the order declared (so the field order *is* the heap order), at tuple speed. The last fields
# only break ties or let a reader check whether the entry is still valid (lazy deletion).
# Entries are built with ``_new(_PoolEntry, (fields in declared order))``, the same object as
# ``_PoolEntry(...)``: calling the class runs a Python-level ``__new__`` (about 0.2 us per entry, which
# made a routing decision ~10% slower in bench/bench_routing.py); ``tuple.__new__`` is the C one.
_new = tuple.__new__


class _PoolEntry(NamedTuple):
    """An available agent in a pool's heap: best fit first, then the strategy's tie-break."""

    fit: int  # the agent's levels summed over the pool's required skills, times the fit sign (lower wins)
    primary: int  # -1 if the pool's role is the agent's primary role, else 0
    tie: float  # tie-break: idle_since (longest_idle), last reservation (round_robin) or occupancy
    tie2: float  # second tie-break: idle_since after occupancy, else 0.0
    seq: int  # the agent's registration order: a unique, stable last resort
    stamp: int  # valid while it equals ``_Pool.members[agent_id]``
    agent_id: str


class _LineEntry(NamedTuple):
    """A waiting contact in a queue's heap: the highest aged priority (lowest ``v``) first."""

    v: float  # the contact's time-invariant priority key (see the module docstring)
    seq: int  # the contact's arrival order in the engine
    token: int  # valid while it equals ``_Contact.token``
    contact: _Contact


class _PromoEntry(NamedTuple):
    """When a waiting contact's next plan step opens (the promotion heap)."""

    due: float  # when the step opens: enqueued_at + its opens_after_seconds
    seq: int  # the contact's arrival order in the engine
    token: int  # valid while it equals ``_Contact.token``
    contact: _Contact


class _HeadEntry(NamedTuple):
    """A queue's head on its channel's active heap: the highest aged priority first."""

    v: float  # the head contact's ``v``
    seq: int  # the head contact's ``seq``
    push: int  # push counter: a unique tie-break (queues themselves never get compared)
    queue: _Queue
    contact_id: str  # valid while it equals ``queue.pushed_head``


class _ClassEligibility(NamedTuple):
    """Who on duty could serve a class of contact (cached per roster version)."""

    who: Eligibility
    agent_ids: frozenset[str]  # ``who.agent_ids`` as a set
    slots: int  # their summed capacity on the contact's channel


class _Agent:
    __slots__ = ("state", "seq", "stamp", "pools", "rr", "eligible", "staffed", "missed", "reserved")

    def __init__(self, state: AgentState, seq: int) -> None:
        self.state = state
        self.seq = seq
        self.stamp = 0
        self.pools: list[_Pool] = []
        self.rr = 0  # round-robin: sequence number of the last reservation
        self.eligible: frozenset[Channel] = frozenset()
        self.staffed = False
        self.missed = 0
        self.reserved: set[str] = set()  # contact ids reserved to this agent


class _Pool:
    """Available agents of one eligibility class, best first."""

    __slots__ = ("key", "channel", "role", "reqs", "heap", "members", "queues", "personal")

    def __init__(
        self, key: _PoolKey, channel: Channel, role: Role | None, reqs: _Skills, personal: bool = False
    ) -> None:
        self.key = key
        self.channel = channel
        self.role = role
        self.reqs = reqs
        self.heap: list[_PoolEntry] = []
        self.members: dict[str, int] = {}  # agent id -> stamp of its valid heap entry
        self.queues: list[_Queue] = []
        self.personal = personal


class _Queue:
    """Waiting contacts for which one pool's step is open, ordered by the time-invariant key ``v``."""

    __slots__ = ("qid", "pool", "capped", "site", "heap", "live", "pushed_head")

    def __init__(self, qid: int, pool: _Pool, capped: bool, site: str) -> None:
        self.qid = qid
        self.pool = pool
        self.capped = capped  # sales step of a non-exempt contact: the sales-share cap applies
        self.site = site  # whose sales share binds it when the cap is counted per site
        self.heap: list[_LineEntry] = []
        self.live = 0
        self.pushed_head: str | None = None  # contact id of this queue's entry in the active heap

    def head(self) -> _Contact | None:
        heap = self.heap
        while heap:
            entry = heap[0]
            c = entry.contact
            if c.state == _WAITING and c.token == entry.token:
                return c
            heapq.heappop(heap)
        return None


class _Contact:
    __slots__ = (
        "wc",
        "plan",
        "v",
        "seq",
        "token",
        "state",
        "agent_id",
        "excluded",
        "queues",
        "opened",
        "reserved_at",
        "step_queues",
        "pref_queue",
        "role",
    )

    def __init__(self, wc: WaitingContact, plan: RoutingPlan, v: float, seq: int) -> None:
        self.wc = wc
        self.plan = plan
        self.v = v
        self.seq = seq
        self.token = 0
        self.state = _WAITING
        self.agent_id: str | None = None
        self.excluded: dict[str, float] = {}  # agent id -> when it declined/missed
        self.queues: list[_Queue] = []  # queues this contact is currently pushed into
        self.opened = 1  # steps open so far
        self.reserved_at = 0.0
        self.step_queues: list[_Queue] = []
        self.pref_queue: _Queue | None = None
        self.role: Role | None = None


# --------------------------------------------------------------------------------------------------
# The engine
# --------------------------------------------------------------------------------------------------


class MatchingEngine:
    """Queue, agent indices and decisions for one routing domain. Not thread-safe (one owner)."""

    def __init__(self, strategy: Strategy) -> None:
        self.strategy = strategy
        self.sales = SalesShare(strategy.sales_share)
        self._reset()

    def _reset(self) -> None:
        self._agents: dict[str, _Agent] = {}
        self._contacts: dict[str, _Contact] = {}
        self._pools: dict[_PoolKey, _Pool] = {}
        self._pools_by_base: dict[_BaseKey, list[_Pool]] = {}
        self._by_base: dict[_BaseKey, set[str]] = {}
        self._queues: dict[_QueueKey, _Queue] = {}
        self._active: dict[Channel, list[_HeadEntry]] = {}
        self._rates: dict[Channel, float] = {}
        self._promo: list[_PromoEntry] = []
        self._plans: dict[_PlanKey, RoutingPlan] = {}
        self._class_queues: dict[_ClassKey, list[_Queue]] = {}
        self._capped_waiting: dict[int, _Queue] = {}  # sales queues held back by the cap, by qid
        self._waiting_count: dict[tuple[str, Channel], int] = {}
        self._available_count: dict[tuple[str, Channel], int] = {}
        self._available_ids: dict[tuple[str, Channel], set[str]] = {}  # who those counted agents are
        self._staffed_slots: dict[tuple[str, Channel], int] = {}
        # Who on duty could serve a class of contact (eligibility.py) scans every agent: 9 ms per arriving
        # contact at 2,000 agents, 47 ms at 10,000. It only changes when the roster does (an agent comes on
        # or goes off duty, a profile changes), so it is kept per class until the roster version moves.
        self._roster_version = 0
        self._eligibility_version = -1
        self._eligibility_cache: dict[tuple[Any, ...], _ClassEligibility] = {}
        self._aht: dict[tuple[str, Channel], float] = {}
        self._reserved_count = 0
        # Agents whose load (offers + assignments) changed since the service last looked: their work
        # as the router reports it (agent_work.py) is settled at the end of each transaction.
        self.work_changed: set[str] = set()
        self._seq = itertools.count(1)
        self._qids = itertools.count(1)
        self._pushes = itertools.count(1)
        self._rr = itertools.count(1)
        self._exclusive = frozenset(self.strategy.blending.exclusive_channels)
        self._tie_break = self.strategy.tie_break
        # best: the most skilled agent first; closest: the least over-qualified (keeps experts free)
        self._fit_sign = -1 if self.strategy.skill_fit == "best" else 1

    # -- strategy -----------------------------------------------------------------------------------

    def replace_strategy(self, strategy: Strategy) -> None:
        """Switch strategies without losing anyone: agents, reservations and the line are rebuilt, every
        contact keeps its place (enqueued_at) and every reservation its agent."""
        agents = [a.state for a in self._agents.values()]
        contacts = sorted(self._contacts.values(), key=lambda c: c.seq)
        missed = {aid: a.missed for aid, a in self._agents.items()}
        self.strategy = strategy
        self.sales.set_cap(strategy.sales_share)
        self._reset()
        tracked: dict[tuple[str, Channel], int] = {}
        for c in contacts:
            if c.state == _RESERVED and c.agent_id is not None:
                key = (c.agent_id, c.wc.channel)
                tracked[key] = tracked.get(key, 0) + 1
        for state in agents:
            # reservations are re-added below; load the engine did not reserve itself is kept
            state.load = {ch: n - tracked.get((state.agent_id, ch), 0) for ch, n in state.load.items()}
            self.upsert_agent(state)
            self._agents[state.agent_id].missed = missed.get(state.agent_id, 0)
        for c in contacts:
            if c.state == _RESERVED and c.agent_id is not None:
                self.restore_reservation(c.wc, c.agent_id, c.reserved_at)
            else:
                self.enqueue(c.wc)
            self._contacts[c.wc.contact_id].excluded = dict(c.excluded)

    def plan_for(self, contact: WaitingContact) -> RoutingPlan:
        """The strategy's plan for this contact (cached per distinct routing-relevant attributes)."""
        strategy = self.strategy
        short = strategy.is_short_question(contact.intent, contact.expected_handling_seconds)
        reqs = tuple(sorted(contact.required_skills.items())) if contact.required_skills else ()
        key = (contact.intent, contact.channel, contact.tier, short, reqs)
        plan = self._plans.get(key)
        if plan is None:
            plan = strategy.plan(contact)
            self._plans[key] = plan
        return plan

    # -- agents -------------------------------------------------------------------------------------

    def upsert_agent(self, agent: AgentState) -> None:
        """Add an agent, or update its profile and presence.

        A new agent is taken as given, load included (work in progress on restore). For a known agent the
        engine keeps its own accounting (load, idle_since); the rest of the profile is replaced.
        """
        _check_agent(agent)
        a = self._agents.get(agent.agent_id)
        if a is None:
            state = AgentState(
                agent_id=agent.agent_id,
                site=agent.site,
                roles=list(agent.roles),
                skills=dict(agent.skills),
                languages=set(agent.languages),
                capacity=dict(agent.capacity),
                status=agent.status,
                load={ch: n for ch, n in agent.load.items() if n},
                idle_since=agent.idle_since,
                connected=agent.connected,
            )
            a = _Agent(state, next(self._seq))
            self._agents[agent.agent_id] = a
        else:
            self._detach(a)
            old = a.state
            if agent.status is AgentStatus.AVAILABLE and old.status is not AgentStatus.AVAILABLE:
                idle_since = max(old.idle_since, agent.idle_since)
            else:
                idle_since = old.idle_since
            a.state = AgentState(
                agent_id=agent.agent_id,
                site=agent.site,
                roles=list(agent.roles),
                skills=dict(agent.skills),
                languages=set(agent.languages),
                capacity=dict(agent.capacity),
                status=agent.status,
                load=old.load,
                idle_since=idle_since,
                connected=agent.connected,
            )
        self._attach(a)
        self._refresh(a, key_changed=True)
        self._roster_version += 1

    def remove_agent(self, agent_id: str) -> list[str]:
        """Forget an agent. Contacts reserved to it go back in line (original place) and are returned;
        the service should ``finish`` work that was actually completed before removing."""
        a = self._agents.get(agent_id)
        if a is None:
            return []
        back = sorted(a.reserved, key=lambda cid: self._contacts[cid].seq)
        for cid in back:
            self._unreserve(self._contacts[cid], exclude=None, now=None)
        self._detach(a)
        del self._agents[agent_id]
        self._roster_version += 1
        return back

    def set_status(self, agent_id: str, status: AgentStatus, now: float) -> None:
        """Presence status; entering ``available`` makes the agent idle from ``now``. Unknown agents are
        ignored (a late event about a removed agent must not break the caller)."""
        a = self._agents.get(agent_id)
        if a is None:
            return
        st = a.state
        if st.status is status:
            return
        if status is AgentStatus.AVAILABLE:
            st.idle_since = max(st.idle_since, now)
            a.missed = 0
            st.status = status
            self._refresh(a, key_changed=True)
        else:
            st.status = status
            self._refresh(a, key_changed=False)

    def set_connected(self, agent_id: str, connected: bool, now: float) -> None:
        """Whether the agent's client stream is up (after the service's grace period). Unknown agents
        are ignored."""
        a = self._agents.get(agent_id)
        if a is None or a.state.connected is connected:
            return
        a.state.connected = connected
        self._refresh(a, key_changed=False)

    def agent(self, agent_id: str) -> AgentState | None:
        """A copy of the engine's view of an agent (load as the engine counts it)."""
        a = self._agents.get(agent_id)
        if a is None:
            return None
        st = a.state
        return AgentState(
            st.agent_id,
            st.site,
            list(st.roles),
            dict(st.skills),
            set(st.languages),
            dict(st.capacity),
            st.status,
            dict(st.load),
            st.idle_since,
            st.connected,
        )

    def agent_ids(self) -> list[str]:
        return list(self._agents)

    def status_of(self, agent_id: str) -> AgentStatus | None:
        a = self._agents.get(agent_id)
        return a.state.status if a is not None else None

    def load_of(self, agent_id: str) -> dict[Channel, int]:
        """The agent's offered + assigned contacts per channel (a copy; empty for unknown agents)."""
        a = self._agents.get(agent_id)
        return {ch: n for ch, n in a.state.load.items() if n} if a is not None else {}

    def missed_offers(self, agent_id: str) -> int:
        """Consecutive offers this agent let time out or declined since its last accepted work."""
        a = self._agents.get(agent_id)
        return a.missed if a else 0

    # -- contacts -----------------------------------------------------------------------------------

    def enqueue(self, contact: WaitingContact, *, declined: Mapping[str, float] | None = None) -> None:
        """Put a contact in line at ``enqueued_at`` (its virtual start time). Enqueueing an id already
        waiting or reserved is ignored (idempotent redelivery). ``declined``: agents who declined or missed
        this contact before, and when (a restart or a changed contact keeps them skipped as before)."""
        if contact.contact_id in self._contacts:
            return
        plan = self.plan_for(contact)
        rate = plan.aging_per_second
        self._rates.setdefault(contact.channel, rate)
        v = contact.enqueued_at - (plan.priority + contact.priority_boost) / rate
        c = self._new_contact(contact, plan, v, declined)
        self._contacts[contact.contact_id] = c
        self._enter_line(c)

    def declined_by(self, contact_id: str) -> dict[str, float]:
        """Agents who declined or missed this contact, and when (empty for an unknown contact)."""
        c = self._contacts.get(contact_id)
        return dict(c.excluded) if c is not None else {}

    def _new_contact(
        self, contact: WaitingContact, plan: RoutingPlan, v: float, declined: Mapping[str, float] | None = None
    ) -> _Contact:
        c = _Contact(contact, plan, v, next(self._seq))
        if declined:
            c.excluded = dict(declined)
        # The queues of a plan's steps depend only on (plan, site, language): looked up once per class.
        ckey = (id(plan), contact.site, contact.language)
        queues = self._class_queues.get(ckey)
        if queues is None:
            queues = self._class_queues[ckey] = [
                self._queue(
                    contact.site,
                    contact.channel,
                    contact.language,
                    s,
                    s.role is Role.SALES and not plan.sales_cap_exempt,
                )
                for s in plan.steps
            ]
        c.step_queues = queues  # shared, never mutated
        if contact.preferred_agent_id is not None:
            c.pref_queue = self._personal_queue(contact.preferred_agent_id, contact.site, contact.channel)
        c.opened = len(plan.steps) if contact.widen_roles else 1
        return c

    def withdraw(self, contact_id: str) -> WaitingContact | None:
        """The caller hung up (or the contact is handled elsewhere): it leaves the line. A reservation
        in progress is cancelled too (the agent's load goes back). Returns the contact, None if unknown."""
        c = self._contacts.get(contact_id)
        if c is None:
            return None
        if c.state == _RESERVED:
            self._unreserve(c, exclude=None, now=None, requeue=False)
        else:
            self._leave_line(c)
            c.state = _GONE
            del self._contacts[contact_id]
        return c.wc

    def restore_reservation(
        self, contact: WaitingContact, agent_id: str, now: float, *, declined: Mapping[str, float] | None = None
    ) -> None:
        """Rebuild a reservation (open offer or assignment in progress) after a restart. Pass agents
        without that load in ``AgentState.load``: this adds it. Unknown agents put the contact in line.
        ``declined`` as for :meth:`enqueue`: if this offer is declined too, the earlier ones still count."""
        if contact.contact_id in self._contacts:
            return
        a = self._agents.get(agent_id)
        if a is None:
            self.enqueue(contact, declined=declined)
            return
        plan = self.plan_for(contact)
        self._rates.setdefault(contact.channel, plan.aging_per_second)
        v = contact.enqueued_at - (plan.priority + contact.priority_boost) / plan.aging_per_second
        c = self._new_contact(contact, plan, v, declined)
        c.state = _RESERVED
        c.agent_id = agent_id
        c.reserved_at = now
        self._contacts[contact.contact_id] = c
        a.reserved.add(contact.contact_id)
        self._reserved_count += 1
        load = a.state.load
        load[contact.channel] = load.get(contact.channel, 0) + 1
        self.work_changed.add(agent_id)
        self._refresh(a, key_changed=self._tie_break != "longest_idle")

    def release(self, contact_id: str, now: float, *, requeue: bool = True, missed: bool = True) -> str | None:
        """The offer was declined or timed out: the agent's load goes back and the contact returns to its
        original place in line; that agent is not offered it again for ``reoffer_after_seconds``.
        ``missed`` counts against the agent's consecutive misses. Returns the agent id."""
        c = self._contacts.get(contact_id)
        if c is None or c.state != _RESERVED:
            return None
        aid = c.agent_id
        a = self._agents.get(aid) if aid is not None else None
        if a is not None and missed:
            a.missed += 1
        self._unreserve(c, exclude=aid, now=now, requeue=requeue)
        return aid

    def accept(self, contact_id: str) -> str | None:
        """The agent accepted the offer: its run of missed offers ends. Returns the agent id."""
        c = self._contacts.get(contact_id)
        if c is None or c.state != _RESERVED:
            return None
        a = self._agents.get(c.agent_id) if c.agent_id else None
        if a is not None:
            a.missed = 0
            self.work_changed.add(a.state.agent_id)
        return c.agent_id

    def finish(self, contact_id: str, now: float) -> str | None:
        """The work is done: the agent's load goes back and it counts as idle from ``now``."""
        c = self._contacts.get(contact_id)
        if c is None or c.state != _RESERVED:
            return None
        aid = c.agent_id
        del self._contacts[contact_id]
        c.state = _GONE
        a = self._agents.get(aid) if aid is not None else None
        ch = c.wc.channel
        key = (c.wc.site, ch)
        handled = max(now - c.reserved_at, 0.0)
        prev = self._aht.get(key)
        self._aht[key] = handled if prev is None else prev + _AHT_ALPHA * (handled - prev)
        self._reserved_count -= 1
        if a is not None:
            a.reserved.discard(contact_id)
            st = a.state
            st.load[ch] = max(st.load.get(ch, 0) - 1, 0)
            st.idle_since = max(st.idle_since, now)
            a.missed = 0
            self.work_changed.add(st.agent_id)
            self._refresh(a, key_changed=True)
        return aid

    def reserved_agent(self, contact_id: str) -> str | None:
        c = self._contacts.get(contact_id)
        return c.agent_id if c is not None and c.state == _RESERVED else None

    def is_waiting(self, contact_id: str) -> bool:
        c = self._contacts.get(contact_id)
        return c is not None and c.state == _WAITING

    def waiting_count(self) -> int:
        return sum(self._waiting_count.values())

    # -- decisions ----------------------------------------------------------------------------------

    def decide(self, now: float, limit: int | None = None) -> list[Decision]:
        """Match waiting contacts to available agents, best priority first. Each decision reserves."""
        self._promote(now)
        if self._capped_waiting and self.sales.any_sales_allowed(now):
            self._release_capped()
        decisions: list[Decision] = []
        parked: list[_Contact] = []
        held_by_cap: list[_Contact] = []  # parked only because the sales share was at its cap
        active = self._active
        rates = self._rates
        while limit is None or len(decisions) < limit:
            best_q: _Queue | None = None
            best_p = -math.inf
            for ch, heap in active.items():
                q = self._clean_active(heap, now)
                if q is not None:
                    p = rates[ch] * (now - heap[0].v)
                    if p > best_p:
                        best_p, best_q = p, q
            if best_q is None:
                break
            c = best_q.head()
            assert c is not None  # _clean_active guarantees a live head
            decision = self._serve(c, now, best_p)
            if decision is None:
                self._leave_line(c)
                c.state = _PARKED
                parked.append(c)
                if self._held_by_cap(c, now):
                    held_by_cap.append(c)
            else:
                decisions.append(decision)
                if (
                    (self._capped_waiting or held_by_cap)
                    and c.role is not Role.SALES
                    and self.sales.sales_allowed(now, c.wc.site)
                ):
                    # The share fell: held-back overflow may go to sales again, both the queues set
                    # aside and the contacts parked earlier in this pass for want of an allowed step.
                    self._release_capped()
                    for h in held_by_cap:
                        if h.state == _PARKED:
                            h.state = _WAITING
                            self._enter_line(h)
                    held_by_cap.clear()
        for c in parked:
            if c.state == _PARKED:
                c.state = _WAITING
                self._enter_line(c)
        return decisions

    def _held_by_cap(self, c: _Contact, now: float) -> bool:
        """Did the sales-share cap alone stop this contact (a capped step with agents in its pool)?"""
        return not self.sales.sales_allowed(now, c.wc.site) and any(
            q.capped and q.pool.members for q in c.step_queues[: c.opened]
        )

    def _release_capped(self) -> None:
        queues, self._capped_waiting = self._capped_waiting, {}
        for q in queues.values():
            self._activate(q)

    def _clean_active(self, heap: list[_HeadEntry], now: float) -> _Queue | None:
        """Pop stale entries; return the queue whose head is on top, or None."""
        while heap:
            entry = heap[0]
            q = entry.queue
            cid = entry.contact_id
            if q.pushed_head != cid:
                heapq.heappop(heap)
                continue
            head = q.head()
            if head is None or head.wc.contact_id != cid:
                heapq.heappop(heap)
                q.pushed_head = None
                self._activate(q)
                continue
            if not q.pool.members:
                heapq.heappop(heap)
                q.pushed_head = None
                continue
            if q.capped and not self.sales.sales_allowed(now, q.site):
                heapq.heappop(heap)
                q.pushed_head = None
                self._capped_waiting[q.qid] = q
                continue
            return q
        return None

    def _serve(self, c: _Contact, now: float, priority: float) -> Decision | None:
        """Reserve the best agent for this contact following its own order of preference.

        Agents who declined or missed it are skipped for ``reoffer_after_seconds``, but only while someone
        else can take it: when nobody else can, those whose ``reoffer_alone_after_seconds`` have passed
        are asked again rather than leave the customer waiting next to an idle agent."""
        if not c.excluded:
            return self._serve_excluding(c, now, priority, ())
        strategy = self.strategy
        since = c.excluded
        excluded = {aid for aid, at in since.items() if now - at < strategy.reoffer_after_seconds}
        decision = self._serve_excluding(c, now, priority, excluded)
        if decision is None and excluded:
            alone = strategy.reoffer_alone_after_seconds
            still = {aid for aid in excluded if now - since[aid] < alone}
            if len(still) < len(excluded):
                decision = self._serve_excluding(c, now, priority, still)
        return decision

    def _serve_excluding(self, c: _Contact, now: float, priority: float, excluded: Any) -> Decision | None:
        wc = c.wc
        plan = c.plan
        pq = c.pref_queue
        if pq is not None and pq.pool.members:
            pid = wc.preferred_agent_id
            if pid not in excluded:
                return self._reserve(c, self._agents[pid], None, -1, now, priority, 0.0)  # type: ignore[index]
        sales_ok: bool | None = None
        for k in range(c.opened):
            q = c.step_queues[k]
            pool = q.pool
            if not pool.members:
                continue
            if q.capped:
                if sales_ok is None:
                    sales_ok = self.sales.sales_allowed(now, wc.site)
                if not sales_ok:
                    continue
            entry = _best_in_pool(pool, excluded)
            if entry is not None:
                a = self._agents[entry.agent_id]
                score = self._fit_sign * entry.fit + (0.5 if entry.primary else 0.0)
                return self._reserve(c, a, plan.steps[k], k, now, priority, score)
        return None

    def _reserve(
        self, c: _Contact, a: _Agent, step: PlanStep | None, k: int, now: float, priority: float, score: float
    ) -> Decision:
        wc = c.wc
        plan = c.plan
        self._leave_line(c)
        c.state = _RESERVED
        c.agent_id = a.state.agent_id
        c.reserved_at = now
        a.reserved.add(wc.contact_id)
        self._reserved_count += 1
        st = a.state
        ch = wc.channel
        st.load[ch] = st.load.get(ch, 0) + 1
        self.work_changed.add(st.agent_id)
        role = step.role if step is not None else st.roles[0]
        c.role = role
        self.sales.record_offer(wc.contact_id, role, now, wc.site)
        tb = self._tie_break
        if tb == "round_robin":
            a.rr = next(self._rr)
        tb_value = st.idle_since if tb == "longest_idle" else a.rr if tb == "round_robin" else _occupancy(st)
        self._refresh(a, key_changed=tb != "longest_idle")
        leeway = leeway_for(self.strategy, plan, role)
        explanation: dict[str, Any] = {
            "rule": plan.rule,
            "step": k,
            "role": role.value,
            "preferred_agent": step is None,
            "priority": round(priority, 3),
            "waited_seconds": round(now - wc.enqueued_at, 3),
            "required_skills": dict(step.required_skills) if step is not None else {},
            "agent_skills": {n: st.skills.get(n, 0) for n, _ in step.required_skills} if step else {},
            "primary_role": st.roles[0] is role,
            "skill_fit": self.strategy.skill_fit,
            "tie_break": tb,
            "tie_break_value": tb_value,
            "upsell": leeway.upsell,
            "short_question": plan.short_question,
            # the leeway of the role this agent was offered the contact under (leeway.py)
            "allowed_handling_seconds": leeway.allowed_handling_seconds,
            "goodwill_budget": leeway.goodwill_budget,
            # this agent declined or missed this contact before (asked again: nobody else could take it,
            # or reoffer_after_seconds have passed)
            "asked_again": st.agent_id in c.excluded,
            "strategy_version": self.strategy.version,
        }
        return Decision(
            wc.contact_id, st.agent_id, "preferred_agent" if step is None else plan.rule, score, explanation
        )

    def _unreserve(self, c: _Contact, exclude: str | None, now: float | None, requeue: bool = True) -> None:
        aid = c.agent_id
        a = self._agents.get(aid) if aid is not None else None
        c.agent_id = None
        self._reserved_count -= 1
        if a is not None:
            a.reserved.discard(c.wc.contact_id)
            st = a.state
            ch = c.wc.channel
            st.load[ch] = max(st.load.get(ch, 0) - 1, 0)
            self.work_changed.add(st.agent_id)
            self._refresh(a, key_changed=True)
        if exclude is not None and now is not None:
            c.excluded[exclude] = now
        if requeue:
            c.state = _WAITING
            self._enter_line(c)
        else:
            c.state = _GONE
            del self._contacts[c.wc.contact_id]

    # -- line keeping -------------------------------------------------------------------------------

    def _enter_line(self, c: _Contact) -> None:
        """Push a waiting contact into its open queues (and its promised agent's queue)."""
        c.token += 1
        entry = _new(_LineEntry, (c.v, c.seq, c.token, c))
        queues = list(dict.fromkeys(c.step_queues[: c.opened]))
        if c.pref_queue is not None:
            queues.append(c.pref_queue)
        c.queues = queues
        for q in queues:
            self._push(q, entry)
        key = (c.wc.site, c.wc.channel)
        self._waiting_count[key] = self._waiting_count.get(key, 0) + 1
        self._schedule_promotion(c)

    def _leave_line(self, c: _Contact) -> None:
        c.token += 1  # every heap entry of this contact is now stale
        for q in c.queues:
            q.live -= 1
            if len(q.heap) > 2 * q.live + _HEAP_SLACK:
                q.heap = [e for e in q.heap if e.contact.state == _WAITING and e.contact.token == e.token]
                heapq.heapify(q.heap)
        c.queues = []
        key = (c.wc.site, c.wc.channel)
        self._waiting_count[key] -= 1

    def _push(self, q: _Queue, entry: _LineEntry) -> None:
        heapq.heappush(q.heap, entry)
        q.live += 1
        if q.heap[0] is entry:
            self._activate(q)

    def _schedule_promotion(self, c: _Contact) -> None:
        steps = c.plan.steps
        if c.opened < len(steps):
            due = c.wc.enqueued_at + steps[c.opened].opens_after_seconds
            heapq.heappush(self._promo, _new(_PromoEntry, (due, c.seq, c.token, c)))

    def _promote(self, now: float) -> None:
        """Open the next steps of contacts that have waited long enough (expansion over waiting time)."""
        promo = self._promo
        while promo and promo[0].due <= now:
            top = heapq.heappop(promo)
            c = top.contact
            if c.state != _WAITING or c.token != top.token:
                continue
            steps = c.plan.steps
            entry = _new(_LineEntry, (c.v, c.seq, c.token, c))
            while c.opened < len(steps) and c.wc.enqueued_at + steps[c.opened].opens_after_seconds <= now:
                q = c.step_queues[c.opened]
                c.opened += 1
                if q not in c.queues:
                    c.queues.append(q)
                    self._push(q, entry)
            self._schedule_promotion(c)

    def _activate(self, q: _Queue) -> None:
        """Make sure the queue's head is on its channel's active heap if an agent could take it."""
        if not q.pool.members:
            return
        head = q.head()
        if head is None or q.pushed_head == head.wc.contact_id:
            return
        q.pushed_head = head.wc.contact_id
        heap = self._active.get(q.pool.channel)
        if heap is None:
            heap = self._active[q.pool.channel] = []
        heapq.heappush(heap, _new(_HeadEntry, (head.v, head.seq, next(self._pushes), q, head.wc.contact_id)))
        if len(heap) > 2 * len(self._queues) + _ACTIVE_SLACK:
            _compact_active(heap)

    def _queue(self, site: str, channel: Channel, language: str, step: PlanStep, capped: bool) -> _Queue:
        key = (site, channel, language, step.role, step.required_skills, capped)
        q = self._queues.get(key)
        if q is None:
            pool = self._pool(site, channel, language, step.role, step.required_skills)
            q = self._queues[key] = _Queue(next(self._qids), pool, capped, site)
            pool.queues.append(q)
        return q

    def _personal_queue(self, agent_id: str, site: str, channel: Channel) -> _Queue:
        """The promised agent's own queue (same site: a promise does not cross routing domains)."""
        key: _PersonalKey = ("personal", agent_id, site, channel)
        q = self._queues.get(key)
        if q is None:
            pool = self._pools.get(key)
            if pool is None:
                pool = self._pools[key] = _Pool(key, channel, None, (), personal=True)
                a = self._agents.get(agent_id)
                if a is not None and a.state.site == site and a.state.capacity.get(channel, 0) > 0:
                    a.pools.append(pool)
                    if channel in a.eligible:
                        self._pool_add(pool, a)
            q = self._queues[key] = _Queue(next(self._qids), pool, False, site)
            pool.queues.append(q)
        return q

    # -- agent indexing -----------------------------------------------------------------------------

    def _pool(self, site: str, channel: Channel, language: str, role: Role, reqs: tuple[tuple[str, int], ...]) -> _Pool:
        key = (site, channel, language, role, reqs)
        pool = self._pools.get(key)
        if pool is None:
            pool = self._pools[key] = _Pool(key, channel, role, reqs)
            base = (site, channel, language, role)
            self._pools_by_base.setdefault(base, []).append(pool)
            for aid in self._by_base.get(base, ()):
                a = self._agents[aid]
                if _qualifies(a.state.skills, reqs):
                    a.pools.append(pool)
                    if channel in a.eligible:
                        self._pool_add(pool, a)
        return pool

    def _attach(self, a: _Agent) -> None:
        st = a.state
        pools: list[_Pool] = []
        for ch, cap in st.capacity.items():
            if cap <= 0:
                continue
            for lang in st.languages:
                for role in st.roles:
                    base = (st.site, ch, lang, role)
                    members = self._by_base.get(base)
                    if members is None:
                        members = self._by_base[base] = set()
                    members.add(st.agent_id)
                    for pool in self._pools_by_base.get(base, ()):
                        if _qualifies(st.skills, pool.reqs):
                            pools.append(pool)
            personal = self._pools.get(("personal", st.agent_id, st.site, ch))
            if personal is not None:
                pools.append(personal)
        a.pools = pools

    def _detach(self, a: _Agent) -> None:
        st = a.state
        aid = st.agent_id
        for pool in a.pools:
            pool.members.pop(aid, None)
        a.pools = []
        for ch in st.capacity:
            for lang in st.languages:
                for role in st.roles:
                    members = self._by_base.get((st.site, ch, lang, role))
                    if members is not None:
                        members.discard(aid)
        self._set_eligible(a, frozenset())
        self._set_staffed(a, False)

    def _eligible_channels(self, a: _Agent) -> frozenset[Channel]:
        st = a.state
        if st.status is not AgentStatus.AVAILABLE or not st.connected:
            return frozenset()
        load = st.load
        exclusive = self._exclusive
        busy_total = 0
        busy_exclusive = 0
        for ch, n in load.items():
            if n:
                busy_total += n
                if ch in exclusive:
                    busy_exclusive += n
        out = []
        for ch, cap in st.capacity.items():
            if load.get(ch, 0) >= cap:
                continue
            if ch in exclusive:
                if busy_total:
                    continue
            elif busy_exclusive:
                continue
            out.append(ch)
        return frozenset(out)

    def _refresh(self, a: _Agent, key_changed: bool) -> None:
        """Bring the agent's pool memberships in line with its state (after any change)."""
        if key_changed:
            a.stamp += 1
        eligible = self._eligible_channels(a)
        self._set_eligible(a, eligible)
        st = a.state
        aid = st.agent_id
        self._set_staffed(a, st.connected and st.status not in (AgentStatus.OFFLINE, AgentStatus.BREAK))
        for pool in a.pools:
            if pool.channel in eligible:
                if key_changed or aid not in pool.members:
                    self._pool_add(pool, a)
            else:
                pool.members.pop(aid, None)

    def _pool_add(self, pool: _Pool, a: _Agent) -> None:
        st = a.state
        aid = st.agent_id
        members = pool.members
        was_empty = not members
        if pool.personal:
            fit = 0
            primary = 0
        else:
            skills = st.skills
            fit = self._fit_sign * sum(skills.get(n, 0) for n, _ in pool.reqs) if pool.reqs else 0
            primary = -1 if st.roles[0] is pool.role else 0
        tb = self._tie_break
        if tb == "longest_idle":
            tie, tie2 = st.idle_since, 0.0
        elif tb == "round_robin":
            tie, tie2 = float(a.rr), 0.0
        else:
            tie, tie2 = _occupancy(st), st.idle_since
        members[aid] = a.stamp
        heap = pool.heap
        heapq.heappush(heap, _new(_PoolEntry, (fit, primary, tie, tie2, a.seq, a.stamp, aid)))
        if len(heap) > 2 * len(members) + _HEAP_SLACK:
            pool.heap = [e for e in heap if members.get(e.agent_id) == e.stamp]
            heapq.heapify(pool.heap)
        if was_empty:
            for q in pool.queues:
                self._activate(q)

    def _set_eligible(self, a: _Agent, eligible: frozenset[Channel]) -> None:
        old = a.eligible
        if old == eligible:
            return
        site = a.state.site
        aid = a.state.agent_id
        counts = self._available_count
        for ch in old - eligible:
            counts[(site, ch)] -= 1
            self._available_ids[(site, ch)].discard(aid)
        for ch in eligible - old:
            counts[(site, ch)] = counts.get((site, ch), 0) + 1
            self._available_ids.setdefault((site, ch), set()).add(aid)
        a.eligible = eligible

    def _set_staffed(self, a: _Agent, staffed: bool) -> None:
        if a.staffed == staffed:
            return
        st = a.state
        sign = 1 if staffed else -1
        for ch, cap in st.capacity.items():
            key = (st.site, ch)
            self._staffed_slots[key] = self._staffed_slots.get(key, 0) + sign * cap
        a.staffed = staffed
        self._roster_version += 1

    # -- views --------------------------------------------------------------------------------------

    def queue_snapshot(
        self, now: float, limit: int | None = None, *, site: str | None = None, channel: Channel | None = None
    ) -> list[QueueEntry]:
        """Waiting contacts, highest current priority first (optionally the top ``limit`` of one site
        and/or channel: O(n log limit) instead of a full sort)."""
        waiting = [
            c
            for c in self._contacts.values()
            if c.state == _WAITING
            and (site is None or c.wc.site == site)
            and (channel is None or c.wc.channel is channel)
        ]

        def rank(c: _Contact) -> tuple[float, float]:
            return (-c.plan.aging_per_second * (now - c.v), c.wc.enqueued_at)

        if limit is None:
            waiting.sort(key=rank)
        else:
            waiting = heapq.nsmallest(limit, waiting, key=rank)
        out = []
        for c in waiting:
            wc = c.wc
            waited = now - wc.enqueued_at
            open_steps = c.plan.open_steps(waited, wc.widen_roles)
            out.append(
                QueueEntry(
                    contact_id=wc.contact_id,
                    site=wc.site,
                    channel=wc.channel,
                    priority=c.plan.aging_per_second * (now - c.v),
                    waited_seconds=waited,
                    rule=c.plan.rule,
                    open_roles=list(dict.fromkeys(s.role for s in open_steps)),
                    callback_id=wc.callback_id,
                    preferred_agent_id=wc.preferred_agent_id,
                )
            )
        return out

    def eligibility(self, wc: WaitingContact, plan: RoutingPlan | None = None) -> Eligibility:
        """Who on duty (connected, not offline or on break) could serve this contact (eligibility.py)."""
        return self._eligible(wc, plan).who

    def _eligible(self, wc: WaitingContact, plan: RoutingPlan | None = None) -> _ClassEligibility:
        """The eligibility of the contact's class, the same agents as a set, and their slots on its
        channel (cached per roster version: see ``_eligibility_cache``)."""
        if self._eligibility_version != self._roster_version:
            self._eligibility_cache.clear()
            self._eligibility_version = self._roster_version
        plan = plan or self.plan_for(wc)
        key = (wc.site, wc.channel, wc.language, wc.widen_roles, tuple((s.role, s.required_skills) for s in plan.steps))
        found = self._eligibility_cache.get(key)
        if found is None:
            who = eligibility(
                site=wc.site,
                channel=wc.channel,
                language=wc.language,
                plan=plan,
                widen_roles=wc.widen_roles,
                on_duty=(a.state for a in self._agents.values() if a.staffed),
            )
            slots = sum(self._agents[aid].state.capacity.get(wc.channel, 0) for aid in who.agent_ids)
            found = self._eligibility_cache[key] = _ClassEligibility(who, frozenset(who.agent_ids), slots)
        return found

    def waiting_ids(self) -> list[str]:
        """Contacts waiting in line now (not those being offered): the ones that may be unservable."""
        return [cid for cid, c in self._contacts.items() if c.state == _WAITING]

    def unservable_reason(self, contact_id: str) -> str | None:
        """For a waiting contact: why nobody on duty can serve it (None if someone can, or unknown)."""
        return self.unservable_reasons([contact_id])[contact_id]

    def unservable_reasons(self, contact_ids: Iterable[str]) -> dict[str, str | None]:
        """``unservable_reason`` for many contacts, one scan of the agents per class of contact (site,
        channel, language, plan): a queue view of hundreds of contacts stays cheap under the lock."""
        out: dict[str, str | None] = {}
        known: dict[tuple[Any, ...], str | None] = {}
        for cid in contact_ids:
            c = self._contacts.get(cid)
            if c is None or c.state != _WAITING or c.wc.preferred_agent_id is not None:
                out[cid] = None
                continue
            wc = c.wc
            key = (wc.site, wc.channel, wc.language, id(c.plan), wc.widen_roles)
            if key not in known:
                known[key] = self.eligibility(wc, c.plan).reason
            out[cid] = known[key]
        return out

    def estimated_wait_for(self, wc: WaitingContact, now: float) -> float:
        """Expected wait for this contact joining now, counting only the agents on duty who could serve
        it (language, skills, roles): 0 if one of them is free for everyone waiting ahead on its site and
        channel, inf if none is on duty. (Those ahead are all counted: an upper bound, never a silent 0.)"""
        found, eligible_ids, slots = self._eligible(wc)
        if not found.servable:
            return math.inf
        key = (wc.site, wc.channel)
        waiting = self._waiting_count.get(key, 0)
        available = 0
        for aid in self._available_ids.get(key, ()):  # the free agents there: few when the line is long
            if aid in eligible_ids:
                available += 1
                if available > waiting:  # one of them is free for everyone ahead
                    return 0.0
        aht = self._aht.get(key) or self.strategy.channel_policy(wc.channel).expected_handling_seconds
        return (waiting - available + 1) * aht / slots

    def estimated_wait(self, site: str, channel: Channel, now: float) -> float:
        """Expected wait for a contact joining now: 0 if an agent is free for everyone ahead, else the
        contacts ahead times the (measured) handling time over the staffed slots; inf if nobody staffs
        the channel."""
        key = (site, channel)
        waiting = self._waiting_count.get(key, 0)
        available = self._available_count.get(key, 0)
        if waiting < available:
            return 0.0
        slots = self._staffed_slots.get(key, 0)
        if slots <= 0:
            return math.inf
        aht = self._aht.get(key) or self.strategy.channel_policy(channel).expected_handling_seconds
        return (waiting - available + 1) * aht / slots

    def stats(self, now: float) -> dict[str, Any]:
        sales, total = self.sales.counts(now)
        return {
            "strategy_version": self.strategy.version,
            "agents": len(self._agents),
            "waiting": self.waiting_count(),
            "reserved": self._reserved_count,
            "sales_share": sales / total if total else 0.0,
            "pools": len(self._pools),
            "queues": len(self._queues),
        }


# --------------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------------


def _qualifies(skills: dict[str, int], reqs: tuple[tuple[str, int], ...]) -> bool:
    for name, level in reqs:
        if skills.get(name, 0) < level:
            return False
    return True


def _occupancy(st: AgentState) -> float:
    cap = sum(st.capacity.values())
    return sum(st.load.values()) / cap if cap else 1.0


def _best_in_pool(pool: _Pool, excluded: Any) -> _PoolEntry | None:
    """The best valid member not excluded, without removing it (excluded ones are set aside and put
    back)."""
    heap = pool.heap
    members = pool.members
    held = []
    found = None
    while heap:
        entry = heap[0]
        if members.get(entry.agent_id) != entry.stamp:
            heapq.heappop(heap)
            continue
        if excluded and entry.agent_id in excluded:
            held.append(heapq.heappop(heap))
            continue
        found = entry
        break
    for entry in held:
        heapq.heappush(heap, entry)
    return found


def _compact_active(heap: list[_HeadEntry]) -> None:
    """Drop stale heads (in place: callers hold the list), keeping one entry per queue."""
    seen: set[int] = set()
    keep = []
    for entry in heap:
        q = entry.queue
        if q.pushed_head == entry.contact_id and q.qid not in seen:
            seen.add(q.qid)
            keep.append(entry)
    heapq.heapify(keep)
    heap[:] = keep


def _check_agent(agent: AgentState) -> None:
    if not agent.roles:
        raise ValueError(f"agent {agent.agent_id}: at least one role is required")
    for name, level in agent.skills.items():
        if not 1 <= level <= 5:
            raise ValueError(f"agent {agent.agent_id}: skill {name!r} level {level} outside 1..5")
    for ch, cap in agent.capacity.items():
        if cap < 0:
            raise ValueError(f"agent {agent.agent_id}: negative capacity on {ch}")
