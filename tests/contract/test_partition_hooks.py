"""Partition ownership on every bus: ``partition_of`` agrees with delivery, and the ``on_assigned`` /
``on_revoked`` hooks of ``subscribe`` tell a member what it holds, at the moments shared.bus.base promises.

A router that owns routing domains per partition relies on these: a partition is held by one member at a
time (the next one's ``on_assigned`` comes after the last one's ``on_revoked`` returned), the handler only
sees records of partitions whose ``on_assigned`` returned, and ``on_revoked`` comes after what was handled
was committed.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
import structlog

from shared.bus import base as bus_base
from shared.bus.base import EventBus, Record, Subscription
from shared.events import Envelope
from shared.topics import CONTACTS
from tests.contract.support import WAIT, BusHarness, Collector
from tests.contract.test_bus_contract import event, member_process, ready

TP = tuple[str, int]


async def until(predicate: Callable[[], bool], what: str, timeout: float = WAIT) -> None:
    try:
        async with asyncio.timeout(timeout):
            while not predicate():
                await asyncio.sleep(0.02)
    except TimeoutError:
        raise AssertionError(f"timed out waiting for: {what}") from None


class Member:
    """A group member that checks, as it goes, what the hooks promise.

    ``held``: from ``on_assigned`` entry to ``on_revoked`` return (nobody else may hold these);
    ``active``: from ``on_assigned`` return to ``on_revoked`` entry (only these may be delivered).
    """

    def __init__(self, name: str, group: str, harness: BusHarness, peers: list[Member], violations: list[str]):
        self.name = name
        self.group = group
        self.harness = harness
        self.peers = peers
        self.violations = violations
        peers.append(self)
        self.held: set[TP] = set()
        self.active: set[TP] = set()
        self.calls: list[tuple[str, frozenset[TP], float]] = []
        self.handled: list[tuple[str, Record]] = []
        self.last_offset: dict[TP, int] = {}  # last record handled per partition since it was assigned
        self.assign_delay = 0.0
        self.revoke_delay = 0.3  # a slow hook: the next owner must wait for it
        self.handle_delay = 0.0
        self.block_once = 0.0  # the first delivery takes this long
        self.in_flight = 0
        self.sub: Subscription | None = None

    @property
    def ids(self) -> list[str]:
        return [i for i, _ in self.handled]

    async def subscribe(self, bus: EventBus, *, batched: bool = False) -> Subscription:
        self.sub = await bus.subscribe(
            [CONTACTS],
            self.group,
            self.handle,
            on_assigned=self.on_assigned,
            on_revoked=self.on_revoked,
            batch_handler=self.handle_batch if batched else None,
        )
        return self.sub

    async def handle_batch(self, batch: Sequence[tuple[Envelope, Record]]) -> None:
        for envelope, record in batch:
            await self.handle(envelope, record)

    async def on_assigned(self, tps: frozenset[TP]) -> None:
        self.calls.append(("assigned", tps, time.monotonic()))
        if not tps:
            self.violations.append(f"{self.name}: on_assigned with an empty set")
        for other in self.peers:
            if other is not self and other.held & tps:
                self.violations.append(f"{self.name} assigned {sorted(other.held & tps)} still held by {other.name}")
        if self.held & tps:
            self.violations.append(f"{self.name} assigned {sorted(self.held & tps)} twice")
        self.held |= tps
        await asyncio.sleep(self.assign_delay)
        self.active |= tps
        self.calls.append(("assigned-returned", tps, time.monotonic()))

    async def on_revoked(self, tps: frozenset[TP]) -> None:
        self.calls.append(("revoked", tps, time.monotonic()))
        if not tps:
            self.violations.append(f"{self.name}: on_revoked with an empty set")
        if not tps <= self.held:
            self.violations.append(f"{self.name} revoked {sorted(tps - self.held)} it did not hold")
        self.active -= tps
        if self.in_flight:
            self.violations.append(f"{self.name} revoked {sorted(tps)} while its handler was busy")
        # What was handled is committed by now.
        handled = {tp: offset for tp, offset in self.last_offset.items() if tp in tps}
        if handled:
            committed = await self.harness.committed(self.group, CONTACTS)
            for (_topic, partition), offset in handled.items():
                if committed.get(partition) != offset + 1:
                    self.violations.append(
                        f"{self.name} revoked {partition} after handling offset {offset}, "
                        f"committed: {committed.get(partition)}"
                    )
        for tp in tps:
            self.last_offset.pop(tp, None)
        await asyncio.sleep(self.revoke_delay)
        self.held -= tps

    async def handle(self, envelope: Envelope, record: Record) -> None:
        tp = (record.topic, record.partition)
        if tp not in self.active:
            self.violations.append(f"{self.name} handled {tp}@{record.offset} while not assigned to it")
        self.in_flight += 1
        try:
            delay, self.block_once = self.block_once or self.handle_delay, 0.0
            await asyncio.sleep(delay)
        finally:
            self.in_flight -= 1
        self.handled.append((envelope.id, record))
        self.last_offset[tp] = record.offset


async def keys_for_every_partition(bus: EventBus, per_partition: int = 2) -> list[str]:
    """Keys that land on every partition of CONTACTS (``per_partition`` each)."""
    count = await bus.partition_count(CONTACTS)
    by_partition: dict[int, list[str]] = {p: [] for p in range(count)}
    i = 0
    while any(len(keys) < per_partition for keys in by_partition.values()):
        key = f"site-{i}"
        keys = by_partition[await bus.partition_of(CONTACTS, key)]
        if len(keys) < per_partition:
            keys.append(key)
        i += 1
    return [key for keys in by_partition.values() for key in keys]


async def publish_round(bus: EventBus, keys: list[str], sent: list[str]) -> list[str]:
    ids = []
    for key in keys:
        env = event(len(sent), site=key)
        await bus.publish(CONTACTS, env, key)
        sent.append(env.id)
        ids.append(env.id)
    return ids


def settled(members: list[Member], everything: set[TP]) -> bool:
    """Every partition held by exactly one member, each member holding some, no hook under way."""
    held = [m.held for m in members]
    return (
        all(held)
        and set().union(*held) == everything
        and sum(len(h) for h in held) == len(everything)
        and all(m.held == m.active for m in members)
    )


# ------------------------------------------------------------------------------------------------


async def test_partition_of_is_where_the_producer_puts_the_key(harness: BusHarness) -> None:
    bus, other = await harness.new_bus(), await harness.new_bus()
    count = await bus.partition_count(CONTACTS)  # the topic does not exist yet: created, as a publish would
    assert count == int(harness.config["partitions"])
    assert await other.partition_count(CONTACTS) == count

    keys = [f"key-{i}" for i in range(40)] + ["default/main", "ü-ß-日本", ""]
    expected = {key: await bus.partition_of(CONTACTS, key) for key in keys}
    assert set(expected.values()) == set(range(count))  # the keys spread over every partition
    assert {key: await other.partition_of(CONTACTS, key) for key in keys} == expected  # another process agrees

    got = Collector()
    sub = await bus.subscribe([CONTACTS], harness.unique("g"), got)
    await ready(sub)
    for i, key in enumerate(keys):
        await bus.publish(CONTACTS, event(i, site=key), key)
    await got.wait_count(len(keys))
    assert {record.key: record.partition for _, record in got.deliveries} == expected


async def test_two_members_split_the_partitions_and_hand_them_over_when_one_stops(harness: BusHarness) -> None:
    group = harness.unique("g")
    violations: list[str] = []
    peers: list[Member] = []
    a = Member("a", group, harness, peers, violations)
    b = Member("b", group, harness, peers, violations)
    bus_a, bus_b = await harness.new_bus(), await harness.new_bus()
    everything = {(CONTACTS, p) for p in range(await bus_a.partition_count(CONTACTS))}
    keys = await keys_for_every_partition(bus_a)
    sent: list[str] = []

    sub_a = await a.subscribe(bus_a)
    await ready(sub_a)
    await until(lambda: a.active == everything, "a alone holds every partition")
    await publish_round(bus_a, keys, sent)
    await until(lambda: set(a.ids) >= set(sent), "a handled the first round")

    sub_b = await b.subscribe(bus_b)
    await until(lambda: settled([a, b], everything), "a and b share the partitions")
    assert sub_a.assignment() == frozenset(a.held) and sub_b.assignment() == frozenset(b.held)
    a_had = set(a.held)
    await publish_round(bus_a, keys, sent)
    await until(lambda: set(a.ids) | set(b.ids) >= set(sent), "the second round is handled")

    # A stops while it still has records in hand: it finishes the one in flight, commits, is told, leaves.
    a.handle_delay = 0.05
    round3 = await publish_round(bus_a, keys * 3, sent)
    await until(lambda: bool(set(a.ids) & set(round3)), "a works on the third round")
    revoked_before = len([c for c in a.calls if c[0] == "revoked"])
    await sub_a.stop()
    a_revoked = [c[1] for c in a.calls if c[0] == "revoked"][revoked_before:]
    assert a_revoked and set().union(*a_revoked) == a_had  # told of everything it held (Kafka: in one call)
    assert a.held == set() and sub_a.assignment() == frozenset()

    await until(lambda: b.active == everything, "b took over a's partitions")
    assert sub_b.assignment() == frozenset(everything)
    round4 = await publish_round(bus_b, keys, sent)
    await until(lambda: set(a.ids) | set(b.ids) >= set(sent), "every record is handled")
    await until(lambda: set(b.ids) >= set(round4), "b handles everything after a left")
    assert not violations, violations


async def test_records_taken_ahead_before_a_rebalance_go_to_their_next_owner(harness: BusHarness) -> None:
    """A batch handler is busy while records arrive (Kafka's consumer takes them ahead, for the next
    batch) and a member joins: what was taken ahead and not handled is neither handed to the old owner
    once its partitions were revoked nor lost; the next owner of each partition handles it."""
    group = harness.unique("g")
    violations: list[str] = []
    peers: list[Member] = []
    a = Member("a", group, harness, peers, violations)
    b = Member("b", group, harness, peers, violations)
    bus_a, bus_b = await harness.new_bus(), await harness.new_bus()
    everything = {(CONTACTS, p) for p in range(await bus_a.partition_count(CONTACTS))}
    keys = await keys_for_every_partition(bus_a)
    sent: list[str] = []

    await a.subscribe(bus_a, batched=True)
    await until(lambda: a.active == everything, "a alone holds every partition")
    a.block_once = 1.5
    await publish_round(bus_a, keys[:1], sent)
    await until(lambda: a.in_flight > 0, "a is busy with a batch")
    for _ in range(3):  # arriving one round at a time while a is busy: taken ahead
        await publish_round(bus_a, keys, sent)
        await asyncio.sleep(0.1)
    await b.subscribe(bus_b, batched=True)
    await until(lambda: settled([a, b], everything), "a and b share the partitions")
    await until(lambda: set(a.ids) | set(b.ids) >= set(sent), "every record is handled")
    assert not violations, violations
    for member in (a, b):  # each partition's records in offset order, by whoever handled them
        for tp in everything:
            offsets = [r.offset for _, r in member.handled if (r.topic, r.partition) == tp]
            assert offsets == sorted(offsets), (member.name, tp, offsets)


async def test_on_assigned_is_awaited_before_any_record_of_its_partitions_is_delivered(harness: BusHarness) -> None:
    bus = await harness.new_bus()
    keys = await keys_for_every_partition(bus)
    sent: list[str] = []
    await publish_round(bus, keys, sent)  # waiting before the member even joins
    entered, returned = asyncio.Event(), asyncio.Event()
    early: list[Record] = []

    async def on_assigned(_tps: frozenset[TP]) -> None:
        entered.set()
        await asyncio.sleep(2.0)
        returned.set()

    async def before_the_hook_returned(_envelope: Envelope, record: Record) -> None:
        if not returned.is_set():
            early.append(record)

    got = Collector(before_the_hook_returned)
    sub = await bus.subscribe([CONTACTS], harness.unique("g"), got, on_assigned=on_assigned)
    async with asyncio.timeout(WAIT):
        await entered.wait()
    await publish_round(bus, keys, sent)  # and more while the hook runs
    await asyncio.sleep(0.5)
    assert not sub.consuming()  # not ready while it cannot deliver
    assert got.ids == []
    await got.wait_for(lambda ids: set(ids) >= set(sent))
    assert early == []
    await until(sub.consuming, "ready once on_assigned returned")


async def test_an_on_assigned_longer_than_the_session_timeout_keeps_the_member_in_its_group(
    harness: BusHarness,
) -> None:
    """The hook may wait for a database lease: heartbeats (Kafka) and lease renewals (embedded) go on
    meanwhile, so nobody takes the member's partitions and no rebalance follows."""
    group = harness.unique("g")
    violations: list[str] = []
    peers: list[Member] = []
    b = Member("b", group, harness, peers, violations)
    a = Member("a", group, harness, peers, violations)
    a.assign_delay = harness.session_timeout + 2.0
    bus_a, bus_b = await harness.new_bus(), await harness.new_bus()
    everything = {(CONTACTS, p) for p in range(await bus_b.partition_count(CONTACTS))}
    keys = await keys_for_every_partition(bus_b)
    sent: list[str] = []

    await b.subscribe(bus_b)
    await until(lambda: b.active == everything, "b alone holds every partition")
    await a.subscribe(bus_a)
    await until(lambda: bool(a.calls), "a is being assigned its share")
    a_started = a.calls[0][2]
    await publish_round(bus_b, keys, sent)
    await until(lambda: settled([a, b], everything), "a's slow hook returned; a and b share the partitions")
    await until(lambda: set(a.ids) | set(b.ids) >= set(sent), "every record is handled")

    assert [kind for kind, _, _ in a.calls] == ["assigned", "assigned-returned"]  # never evicted, never revoked
    # b never got a's share back (it would have, had a been evicted or its leases lapsed)
    assert not [tps for kind, tps, t in b.calls if kind == "assigned" and t >= a_started and tps & a.held]
    assert {record.partition for _, record in a.handled} == {p for _, p in a.held}
    assert not violations, violations


async def test_a_rebalance_during_on_assigned_revokes_after_it_returned(harness: BusHarness) -> None:
    """A second member joins while the first one's on_assigned still runs: the first is told of the
    revocation only after its on_assigned returned, and the newcomer gets its share only after that."""
    group = harness.unique("g")
    violations: list[str] = []
    peers: list[Member] = []
    a = Member("a", group, harness, peers, violations)
    b = Member("b", group, harness, peers, violations)
    a.assign_delay = 3.0
    bus_a, bus_b = await harness.new_bus(), await harness.new_bus()
    everything = {(CONTACTS, p) for p in range(await bus_a.partition_count(CONTACTS))}
    keys = await keys_for_every_partition(bus_a)
    sent: list[str] = []

    await a.subscribe(bus_a)
    await until(lambda: bool(a.calls), "a is being assigned every partition")
    await publish_round(bus_a, keys, sent)
    await b.subscribe(bus_b)
    await until(lambda: settled([a, b], everything), "a and b share the partitions")
    a.assign_delay = 0.0
    await publish_round(bus_a, keys, sent)
    await until(lambda: set(a.ids) | set(b.ids) >= set(sent), "every record is handled")

    kinds = [kind for kind, _, _ in a.calls]
    assert kinds[:3] == ["assigned", "assigned-returned", "revoked"]  # on_revoked waited for on_assigned
    assert a.calls[0][1] == frozenset(everything)
    assert not violations, violations


async def test_on_revoked_waits_for_a_delivery_that_outlasts_the_shutdown_grace(harness: BusHarness) -> None:
    """A rebalance while the handler is busy past ``shutdown_grace``: on_revoked still comes after it
    returned and was committed, and the newcomer gets its share only after that (within the rebalance
    timeout, and on the embedded bus within grace + lease lifetime)."""
    group = harness.unique("g")
    violations: list[str] = []
    peers: list[Member] = []
    a = Member("a", group, harness, peers, violations)
    b = Member("b", group, harness, peers, violations)
    bus_a, bus_b = await harness.new_bus(), await harness.new_bus()
    everything = {(CONTACTS, p) for p in range(await bus_a.partition_count(CONTACTS))}
    keys = await keys_for_every_partition(bus_a)
    sent: list[str] = []

    await a.subscribe(bus_a)
    await until(lambda: a.active == everything, "a alone holds every partition")
    a.block_once = float(harness.config["shutdown_grace"]) + 0.5
    await publish_round(bus_a, keys[:1], sent)
    await until(lambda: a.in_flight > 0, "a is busy with a record")
    await b.subscribe(bus_b)
    await until(lambda: settled([a, b], everything), "a and b share the partitions")
    assert any(kind == "revoked" for kind, _, _ in a.calls)
    assert sent[0] in a.ids
    await publish_round(bus_a, keys, sent)
    await until(lambda: set(a.ids) | set(b.ids) >= set(sent), "every record is handled")
    assert not violations, violations


async def test_a_hook_that_raises_does_not_stop_consumption(
    harness: BusHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The bus's own logger, captured directly: ``structlog.testing.capture_logs`` misses loggers cached
    # under an earlier configuration (any test that configured logging before this one).
    logs = structlog.testing.LogCapture()
    monkeypatch.setattr(bus_base, "log", structlog.wrap_logger(None, processors=[logs]))
    group = harness.unique("g")
    bus_a, bus_b = await harness.new_bus(), await harness.new_bus()
    keys = await keys_for_every_partition(bus_a)
    calls: list[str] = []

    async def broken(kind: str) -> None:
        calls.append(kind)
        raise RuntimeError(f"{kind} hook is broken")

    async def on_assigned(_tps: frozenset[TP]) -> None:
        await broken("assigned")

    async def on_revoked(_tps: frozenset[TP]) -> None:
        await broken("revoked")

    got_a = Collector()
    sent: list[str] = []
    sub_a = await bus_a.subscribe([CONTACTS], group, got_a, on_assigned=on_assigned, on_revoked=on_revoked)
    await ready(sub_a)
    await publish_round(bus_a, keys, sent)
    await got_a.wait_for(lambda ids: set(ids) >= set(sent))
    await until(sub_a.consuming, "a consumes despite its hook")

    # A second member joins: a's on_revoked raises, the hand-over goes on all the same.
    got_b = Collector()
    sub_b = await bus_b.subscribe([CONTACTS], group, got_b)
    await ready(sub_b)
    await until(lambda: "revoked" in calls, "a was told of a rebalance")
    await until(lambda: bool(sub_b.assignment()) and bool(sub_a.assignment()), "the partitions are shared")
    round2 = await publish_round(bus_a, keys, sent)
    await until(lambda: set(got_a.ids) | set(got_b.ids) >= set(sent), "both handle their share")
    assert set(got_a.ids) & set(round2) and set(got_b.ids) & set(round2)
    async with asyncio.timeout(WAIT):
        await sub_a.stop()  # on_revoked raises once more: a still leaves
    round3 = await publish_round(bus_a, keys, sent)
    await got_b.wait_for(lambda ids: set(ids) >= set(round3))
    failures = [e for e in logs.entries if e["event"] == "bus.partition_hook_failed"]
    assert {e["hook"] for e in failures} == {"on_assigned", "on_revoked"}
    assert calls.count("revoked") >= 2


def _hooks_log(path: Path) -> list[dict[str, object]]:
    import json

    hooks = Path(f"{path}.hooks")
    return [json.loads(line) for line in hooks.read_text().splitlines()] if hooks.exists() else []


def _held_by_child(path: Path) -> set[TP]:
    held: set[TP] = set()
    for entry in _hooks_log(path):
        tps = {(str(t), int(p)) for t, p in entry["partitions"]}  # type: ignore[attr-defined]
        held = held | tps if entry["hook"] == "assigned" else held - tps
    return held


def _write_lock_free(db: str) -> bool:
    """Nobody holds the embedded log's write lock (a process stopped inside a transaction would)."""
    conn = sqlite3.connect(db, timeout=0.2, isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("ROLLBACK")
        return True
    except sqlite3.OperationalError:
        return False
    finally:
        conn.close()


async def test_a_member_paused_past_its_session_is_told_it_lost_its_partitions(
    harness: BusHarness, tmp_path: Path
) -> None:
    """SIGSTOP past the session timeout: the survivor takes the partitions without a hand-over, and the
    paused member, once it runs again, calls on_revoked for what it held as soon as it notices."""
    group = harness.unique("g")
    bus = await harness.new_bus()
    everything = {(CONTACTS, p) for p in range(await bus.partition_count(CONTACTS))}
    violations: list[str] = []
    survivor = Member("survivor", group, harness, [], violations)
    survivor.revoke_delay = 0.0
    log_file = tmp_path / "paused.log"
    with member_process(harness, group, log_file, "hooks") as child:
        async with asyncio.timeout(WAIT):
            while not Path(f"{log_file}.ready").exists():
                assert child.poll() is None, log_file.with_suffix(".out").read_text()
                await asyncio.sleep(0.05)
        await survivor.subscribe(bus)
        await until(
            lambda: (
                bool(survivor.held)
                and survivor.held == survivor.active
                and survivor.held | _held_by_child(log_file) == everything
                and not survivor.held & _held_by_child(log_file)
            ),
            "the child and the survivor share the partitions",
        )
        child_had = _held_by_child(log_file)
        assert child_had
        seen = len(_hooks_log(log_file))
        while True:  # stop it outside a transaction of the embedded log: the survivor must still write
            os.kill(child.pid, signal.SIGSTOP)
            if harness.kind != "embedded" or await asyncio.to_thread(_write_lock_free, harness.config["path"]):
                break
            os.kill(child.pid, signal.SIGCONT)
            await asyncio.sleep(0.05)
        try:
            await until(lambda: survivor.active == everything, "the survivor took over the paused member's share")
        finally:
            resumed = time.time()
            os.kill(child.pid, signal.SIGCONT)

        def revoked_since_pause() -> list[dict[str, object]]:
            return [e for e in _hooks_log(log_file)[seen:] if e["hook"] == "revoked"]

        await until(lambda: bool(revoked_since_pause()), "the resumed member noticed it lost its partitions")
        revoked = revoked_since_pause()[0]
        assert {(str(t), int(p)) for t, p in revoked["partitions"]} == child_had  # type: ignore[attr-defined]
        assert float(revoked["t"]) >= resumed  # type: ignore[arg-type]
        print(f"\n[{harness.kind}] on_revoked {float(revoked['t']) - resumed:.2f}s after SIGCONT")  # type: ignore[arg-type]
    assert not violations, violations
