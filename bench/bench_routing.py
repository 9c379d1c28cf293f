"""Routing decisions per second of the pure matching engine, with a baseline measured in the same run.

Scenario (the hard, realistic one): a backlog. Every agent is busy and ``--waiting`` contacts wait in
line (mixed channels, intents, tiers, languages, skills; the default strategy). Each cycle one piece of
work finishes, one new contact arrives, and the engine decides: the freed agent takes the best-priority
contact it fits. We time the whole cycle (finish + enqueue + decide) and report it per decision.

Baselines, run side by side because the machine is noisy:
* ``heap op``: one ``heappush`` + ``heappop`` on a heap of ``--waiting`` entries, the floor of any
  priority-queue router; the engine's cost is reported as a multiple of it.
* ``scan``: a naive matcher that, for each decision, scans every agent to find the best available one
  (what an index avoids); its cost grows linearly with the number of agents.

A second table measures the surplus regime (about half the agents idle, contacts served as they
arrive): the pools are then large heaps, so it shows how the agent side scales. The garbage collector is
off while timing (``--gc`` leaves it on); a long-running router should ``gc.freeze()`` after loading.

Targets (issue #4, the backlog table): >= 20,000 decisions/s at 10k agents on one core; cost per
decision growing < 2x from 1k to 100k agents.
Run: ``python bench/bench_routing.py`` (``--quick`` for a smaller run).
"""

from __future__ import annotations

import argparse
import gc
import heapq
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from services.router.matching import AgentState, MatchingEngine, WaitingContact  # noqa: E402
from services.router.strategy import load_strategy  # noqa: E402
from shared.events import AgentStatus, Channel, Intent, Role, Tier  # noqa: E402

INTENTS = [None, *Intent]
TIERS = [Tier.STANDARD] * 8 + [Tier.PREMIUM, Tier.VIP]


def make_agent(i: int, rng: random.Random) -> AgentState:
    r = rng.random()
    if r < 0.65:
        roles = [Role.SERVICE]
    elif r < 0.8:
        roles = [Role.SALES, Role.SERVICE]
    elif r < 0.9:
        roles = [Role.SALES]
    else:
        roles = [Role.BRAND_AMBASSADOR, Role.SERVICE]
    languages = {"en"} if rng.random() < 0.7 else {"en", "de"}
    capacity = {Channel.VOICE: 1} if rng.random() < 0.7 else {Channel.VOICE: 1, Channel.CHAT: 2}
    return AgentState(
        agent_id=f"a{i}",
        site="main",
        roles=roles,
        skills={"billing": rng.randint(1, 5)},
        languages=languages,
        capacity=capacity,
        status=AgentStatus.AVAILABLE,
        idle_since=rng.random(),
    )


def make_contact(i: int, now: float, rng: random.Random) -> WaitingContact:
    return WaitingContact(
        contact_id=f"c{i}",
        site="main",
        channel=Channel.VOICE if rng.random() < 0.7 else Channel.CHAT,
        intent=rng.choice(INTENTS),
        tier=rng.choice(TIERS),
        language="en" if rng.random() < 0.85 else "de",
        enqueued_at=now - rng.random() * 30.0,
        expected_handling_seconds=rng.choice([None, 60.0, 300.0]),
    )


def build(agents: int, waiting: int, seed: int) -> tuple[MatchingEngine, list[str], int, float]:
    """An engine with every agent busy and ``waiting`` contacts in line."""
    rng = random.Random(seed)
    engine = MatchingEngine(load_strategy())
    for i in range(agents):
        engine.upsert_agent(make_agent(i, rng))
    now = 1000.0
    reserved: list[str] = []
    n = 0
    while True:  # fill the agents, then top the line up to exactly `waiting`
        batch = max(waiting - engine.waiting_count(), 0) or agents // 4 + 1
        for _ in range(batch):
            engine.enqueue(make_contact(n, now, rng))
            n += 1
        decided = engine.decide(now)
        reserved.extend(d.contact_id for d in decided)
        if not decided and engine.waiting_count() >= waiting:
            break
    return engine, reserved, n, now


def build_surplus(agents: int, seed: int) -> tuple[MatchingEngine, list[str], int, float]:
    """An engine with about half the agents busy and contacts served as they arrive."""
    rng = random.Random(seed)
    engine = MatchingEngine(load_strategy())
    for i in range(agents):
        engine.upsert_agent(make_agent(i, rng))
    now = 1000.0
    n = agents // 2
    for i in range(n):
        engine.enqueue(make_contact(i, now, rng))
    reserved = [d.contact_id for d in engine.decide(now)]
    return engine, reserved, n, now


def run_engine(
    agents: int, waiting: int, cycles: int, seed: int, scenario: str = "backlog", collect: bool = False
) -> tuple[float, float, int, int]:
    """(seconds for the whole cycles, seconds inside decide, decisions, waiting at the end)."""
    if scenario == "backlog":
        engine, reserved, n, now = build(agents, waiting, seed)
    else:
        engine, reserved, n, now = build_surplus(agents, seed)
    rng = random.Random(seed + 1)
    warmup = cycles // 10  # untimed: settles heaps left lopsided by the build (one-off compactions)
    total = warmup + cycles
    contacts = [make_contact(n + i, now, rng) for i in range(total)]
    picks = [rng.random() for _ in range(total)]
    decisions = 0
    in_decide = 0.0
    clock = time.perf_counter
    gc.collect()
    if not collect:
        gc.disable()
    try:
        for i in range(total):
            if i == warmup:
                decisions = 0
                in_decide = 0.0
                t0 = clock()
            now += 0.001
            j = int(picks[i] * len(reserved))
            reserved[j], reserved[-1] = reserved[-1], reserved[j]
            engine.finish(reserved.pop(), now)
            contact = contacts[i]
            contact.enqueued_at = now
            engine.enqueue(contact)
            t1 = clock()
            decided = engine.decide(now)
            in_decide += clock() - t1
            for d in decided:
                reserved.append(d.contact_id)
            decisions += len(decided)
        elapsed = clock() - t0
    finally:
        gc.enable()
    if scenario == "backlog":
        assert engine.waiting_count() >= 0.95 * waiting, "the backlog must stay (about) full during the run"
    return elapsed, in_decide, decisions, engine.waiting_count()


def run_heap(size: int, ops: int, seed: int) -> float:
    """Seconds per heappush + heappop on a heap of ``size`` entries (best of 3: the floor)."""
    return min(_run_heap(size, ops, seed + k) for k in range(3))


def _run_heap(size: int, ops: int, seed: int) -> float:
    rng = random.Random(seed)
    heap = [(rng.random(), i) for i in range(size)]
    heapq.heapify(heap)
    keys = [rng.random() for _ in range(ops)]
    t0 = time.perf_counter()
    for i in range(ops):
        heapq.heappush(heap, (keys[i], i))
        heapq.heappop(heap)
    return (time.perf_counter() - t0) / ops


def run_scan(agents: int, decisions: int, seed: int) -> float:
    """Naive matcher: each decision scans all agents for the best available fit."""
    rng = random.Random(seed)
    states = [make_agent(i, rng) for i in range(agents)]
    for st in states:  # all busy but one in a hundred, as in a backlog
        st.load = {Channel.VOICE: 0 if rng.random() < 0.01 else 1}
    contact = make_contact(0, 0.0, rng)
    t0 = time.perf_counter()
    for _ in range(decisions):
        best = None
        best_key = None
        for st in states:
            if st.status is not AgentStatus.AVAILABLE or not st.connected:
                continue
            if contact.language not in st.languages or Role.SERVICE not in st.roles:
                continue
            if st.load.get(contact.channel, 0) >= st.capacity.get(contact.channel, 0):
                continue
            key = (-st.skills.get("billing", 0), st.idle_since)
            if best_key is None or key < best_key:
                best, best_key = st, key
        assert best is not None
    return (time.perf_counter() - t0) / decisions


def table(scenario: str, agent_sizes: list[int], waiting: int, cycles: int, args: argparse.Namespace) -> None:
    header = (
        f"{'agents':>8} {'waiting':>8} {'decisions':>9} {'dec/s':>9} {'us/dec':>7} {'decide':>7} "
        f"{'heap us':>7} {'x heap':>7} {'scan us':>9} {'scan/eng':>8} {'growth':>7} {'raw':>5}"
    )
    what = {
        "backlog": f"backlog: every agent busy, {waiting:,} contacts waiting",
        "surplus": "surplus: about half the agents idle, contacts served as they arrive",
    }[scenario]
    print(
        f"\n{what}; cycle = finish + enqueue + decide; {cycles:,} cycles; GC {'on' if args.gc else 'off'} while timing"
    )
    print(header)
    print("-" * len(header))
    first_ratio = first_per = None
    results = []
    heap_ops = 30_000 if args.quick else 100_000
    for agents in agent_sizes:
        heap_before = run_heap(waiting, heap_ops, args.seed)
        elapsed, in_decide, decisions, left = run_engine(agents, waiting, cycles, args.seed, scenario, collect=args.gc)
        heap_after = run_heap(waiting, heap_ops, args.seed)
        heap_per = min(heap_before, heap_after)
        per = elapsed / max(decisions, 1)
        scan_per = run_scan(agents, max(3, min(200, 2_000_000 // agents)), args.seed)
        ratio = per / heap_per
        first_ratio = first_ratio or ratio
        first_per = first_per or per
        growth = ratio / first_ratio
        results.append((agents, decisions / elapsed, growth))
        print(
            f"{agents:>8} {left:>8} {decisions:>9} {decisions / elapsed:>9.0f} {per * 1e6:>7.1f} "
            f"{in_decide / max(decisions, 1) * 1e6:>7.1f} {heap_per * 1e6:>7.2f} {ratio:>7.1f} "
            f"{scan_per * 1e6:>9.1f} {scan_per / per:>8.1f} {growth:>7.2f} {per / first_per:>5.2f}",
            flush=True,
        )
    if scenario != "backlog":
        return
    for agents, rate, _growth in results:
        if agents == 10_000:
            print(f"target >= 20,000 decisions/s at 10k agents: {rate:,.0f} -> {'OK' if rate >= 20_000 else 'MISSED'}")
    if len(results) > 1:
        g = results[-1][2]
        print(
            f"target cost growth < 2x from {results[0][0]:,} to {results[-1][0]:,} agents: {g:.2f}x -> "
            f"{'OK' if g < 2 else 'MISSED'}"
        )


def arrival_estimates(agent_sizes: list[int], seed: int) -> None:
    """What an arriving contact costs before it is queued: who on duty could serve it and the wait
    estimate (issue 15). Warm: the engine's answer per class of contact, kept until the roster changes;
    scan: the same answer computed over every agent on duty (what each arrival cost before the cache)."""
    from services.router.eligibility import eligibility

    print()
    print("arrival estimate (eligibility + estimated_wait_for per arriving contact)")
    print(f"{'agents':>8}{'warm us':>10}{'scan us':>10}{'scan/warm':>11}")
    for size in agent_sizes:
        rng = random.Random(seed)
        engine = MatchingEngine(load_strategy())
        for i in range(size):
            engine.upsert_agent(make_agent(i, rng))
        contacts = [make_contact(i, 0.0, rng) for i in range(300)]
        for c in contacts:  # fill the per-class answers once
            engine.estimated_wait_for(c, 0.0)
        t0 = time.perf_counter()
        for c in contacts:
            engine.estimated_wait_for(c, 0.0)
        warm = (time.perf_counter() - t0) / len(contacts) * 1e6
        on_duty = [a.state for a in engine._agents.values() if a.staffed]
        sample = contacts[:30]
        t0 = time.perf_counter()
        for c in sample:
            eligibility(
                site=c.site,
                channel=c.channel,
                language=c.language,
                plan=engine.plan_for(c),
                widen_roles=False,
                on_duty=on_duty,
            )
        scan = (time.perf_counter() - t0) / len(sample) * 1e6
        print(f"{size:>8}{warm:>10.1f}{scan:>10.1f}{scan / max(warm, 1e-9):>11.0f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller run (20k waiting, fewer cycles)")
    parser.add_argument("--agents", type=int, nargs="*", default=None)
    parser.add_argument("--waiting", type=int, default=None)
    parser.add_argument("--cycles", type=int, default=None)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--scenario", choices=["backlog", "surplus", "both"], default="both")
    parser.add_argument("--gc", action="store_true", help="leave the garbage collector on while timing")
    args = parser.parse_args()
    agent_sizes = args.agents or [1_000, 10_000, 100_000]
    waiting = args.waiting or (20_000 if args.quick else 100_000)
    cycles = args.cycles or (5_000 if args.quick else 30_000)
    print("routing benchmark (services.router.matching, one core)")
    for scenario in ["backlog", "surplus"] if args.scenario == "both" else [args.scenario]:
        table(scenario, agent_sizes, waiting, cycles, args)
    arrival_estimates(agent_sizes, args.seed)
    print()
    print("waiting: contacts in line at the end; us/dec: whole cycle per decision; decide: the part inside")
    print("decide(); heap us: one heappush + heappop on a heap of `waiting` entries (best of 3, before and")
    print("after); scan us: a naive matcher's linear scan over all agents for one decision. growth = (us/dec")
    print("/ heap us) relative to the first size, which cancels machine noise; raw = us/dec relative to the")
    print("first size.")


if __name__ == "__main__":
    main()
