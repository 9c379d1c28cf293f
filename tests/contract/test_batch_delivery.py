"""Batch delivery (the router's group commit): consecutive records of a partition reach a batch handler
together, in order, each exactly once; a poison record fails alone; an outage is waited out. On every bus."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Sequence

from shared.bus.base import DLQ_ATTEMPTS, Record
from shared.events import Envelope, decode_event
from shared.topics import CONTACTS
from tests.contract.support import WAIT, BusHarness, Collector, header
from tests.contract.test_bus_contract import event, ready


class BatchCollector:
    """All-or-nothing, like a handler with one transaction: it records a batch only when it succeeds."""

    def __init__(self, fail: set[str] | None = None) -> None:
        self.batches: list[list[str]] = []
        self.calls = 0
        self.fail = fail or set()
        self.outage = asyncio.Event()

    async def __call__(self, batch: Sequence[tuple[Envelope, Record]]) -> None:
        self.calls += 1
        ids = [env.id for env, _ in batch]
        if self.outage.is_set():
            raise sqlite3.OperationalError("database is locked")
        if self.fail & set(ids):
            raise RuntimeError("poison in the batch")
        self.batches.append(ids)

    @property
    def ids(self) -> list[str]:
        return [i for b in self.batches for i in b]


async def wait_until(predicate, what: str) -> None:  # type: ignore[no-untyped-def]
    async with asyncio.timeout(WAIT):
        while not predicate():
            await asyncio.sleep(0.02)


async def test_consecutive_records_arrive_together_in_order_each_once(harness: BusHarness) -> None:
    bus = await harness.new_bus()
    events = [event(n) for n in range(40)]
    for e in events:  # all there before the consumer starts: its first fetch holds many of them
        await bus.publish(CONTACTS, e, "one-key")
    single, batched = Collector(), BatchCollector()
    sub = await bus.subscribe([CONTACTS], harness.unique("g"), single, batch_handler=batched)
    await ready(sub)
    await wait_until(lambda: len(batched.ids) >= len(events), "all delivered")
    assert batched.ids == [e.id for e in events]  # one key: publish order, nothing twice
    assert max(len(b) for b in batched.batches) > 1  # really batched
    assert single.ids == []


async def test_a_poison_record_in_a_batch_fails_alone(harness: BusHarness) -> None:
    bus = await harness.new_bus()
    before, poison, after = event(1), event(2), event(3)
    for e in (before, poison, after):
        await bus.publish(CONTACTS, e, "one-key")
    attempts: dict[str, int] = {}

    async def one(env: Envelope, _record: Record) -> None:
        attempts[env.id] = attempts.get(env.id, 0) + 1
        if env.id == poison.id:
            raise RuntimeError(f"cannot handle {env.id}")

    single, batched = Collector(one), BatchCollector(fail={poison.id})
    sub = await bus.subscribe([CONTACTS], harness.unique("g"), single, batch_handler=batched)
    await ready(sub)
    await single.wait_for(lambda ids: after.id in ids)
    assert single.ids == [before.id, after.id]  # the others landed, one by one, in order
    assert attempts[poison.id] == harness.max_attempts
    dead = await harness.dead_letters(CONTACTS)
    assert [decode_event(r.value).id for r in dead] == [poison.id]
    assert header(dead[0], DLQ_ATTEMPTS) == str(harness.max_attempts)


async def test_a_batch_waits_out_an_outage_and_nothing_is_dead_lettered(harness: BusHarness) -> None:
    bus = await harness.new_bus()
    events = [event(n) for n in range(10)]
    for e in events:
        await bus.publish(CONTACTS, e, "one-key")
    single, batched = Collector(), BatchCollector()
    batched.outage.set()
    sub = await bus.subscribe([CONTACTS], harness.unique("g"), single, batch_handler=batched)
    await ready(sub)
    await wait_until(lambda: batched.calls > harness.max_attempts + 1, "retried past max_attempts")
    assert not sub.consuming() and batched.ids == []  # stalled, not ready, not moving on
    batched.outage.clear()
    await wait_until(lambda: len(batched.ids) >= len(events), "all delivered after the outage")
    assert batched.ids == [e.id for e in events] and single.ids == []
    assert await harness.dead_letters(CONTACTS) == []


async def test_a_gathering_subscription_takes_a_steady_flow_in_fewer_batches(harness: BusHarness) -> None:
    """``gather``: records that arrive one by one wait a moment for more (the callback service's
    consumer, to which a fifth of a second costs nothing), so a steady flow is handled in fewer, larger
    batches than by a subscription that takes each fetch at once; still each once and in order."""
    bus = await harness.new_bus()
    plain, gathered = BatchCollector(), BatchCollector()

    def alone(batches: BatchCollector):  # type: ignore[no-untyped-def]
        async def one(env: Envelope, record: Record) -> None:  # a record fetched alone: a batch of one
            await batches([(env, record)])

        return one

    subs = [
        await bus.subscribe([CONTACTS], harness.unique("plain"), alone(plain), batch_handler=plain),
        await bus.subscribe(
            [CONTACTS], harness.unique("gathered"), alone(gathered), batch_handler=gathered, gather=0.4
        ),
    ]
    for sub in subs:
        await ready(sub)
    events = [event(n) for n in range(12)]
    for e in events:  # a steady flow: one every 40 ms, about half a second in all
        await bus.publish(CONTACTS, e, "one-key")
        await asyncio.sleep(0.04)
    await wait_until(lambda: len(plain.ids) == len(gathered.ids) == len(events), "all delivered to both")
    assert plain.ids == gathered.ids == [e.id for e in events]  # each once, in publish order
    assert len(gathered.batches) <= 4, gathered.batches
    assert len(gathered.batches) < len(plain.batches), (gathered.batches, plain.batches)


class HeldBatches:
    """A batch handler that holds its first batch until released, recording each batch it completes;
    with ``outage`` set it fails as a locked database does (the bus retries the same batch)."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.started: list[list[str]] = []
        self.batches: list[list[str]] = []
        self.outage = asyncio.Event()
        self.failed = 0

    async def __call__(self, batch: Sequence[tuple[Envelope, Record]]) -> None:
        ids = [env.id for env, _ in batch]
        self.started.append(ids)
        if len(self.started) == 1:
            await self.release.wait()
        if self.outage.is_set():
            self.failed += 1
            raise sqlite3.OperationalError("database is locked")
        self.batches.append(ids)

    async def one(self, env: Envelope, record: Record) -> None:
        """A record fetched alone comes to the single handler: a batch of one."""
        await self([(env, record)])

    @property
    def ids(self) -> list[str]:
        return [i for b in self.batches for i in b]


async def publish_one_by_one(harness: BusHarness, bus: object, events: list[Envelope]) -> None:
    for e in events:  # each after the one before could have been fetched
        await bus.publish(CONTACTS, e, "one-key")  # type: ignore[attr-defined]
        await asyncio.sleep(0.05)


async def test_what_arrives_while_a_batch_is_handled_is_the_next_batch_whole(harness: BusHarness) -> None:
    """Records that reach the bus while a batch handler runs come together in the next batch, all of
    them: on Kafka the consumer takes them as they are fetched (aiokafka fetches a partition again only
    once what it holds was taken, so otherwise all but the first waited for another fetch and another
    handler each: the router's group commits, one after the other)."""
    bus = await harness.new_bus()
    held = HeldBatches()
    sub = await bus.subscribe([CONTACTS], harness.unique("g"), held.one, batch_handler=held)
    await ready(sub)
    first, later = event(0), [event(n) for n in range(1, 9)]
    await bus.publish(CONTACTS, first, "one-key")
    await wait_until(lambda: held.started, "the first batch in hand")
    await publish_one_by_one(harness, bus, later)
    held.release.set()
    await wait_until(lambda: len(held.ids) >= 1 + len(later), "all delivered")
    assert held.batches == [[first.id], [e.id for e in later]]


async def test_records_taken_ahead_wait_out_an_outage_each_once_in_order(harness: BusHarness) -> None:
    """Records taken while a batch was handled are not lost or reordered when their own batch meets an
    outage: it is retried until the database is back, nothing is dead-lettered, and what arrives during
    the outage follows them."""
    bus = await harness.new_bus()
    held = HeldBatches()
    sub = await bus.subscribe([CONTACTS], harness.unique("g"), held.one, batch_handler=held)
    await ready(sub)
    first, ahead, during = event(0), [event(n) for n in range(1, 6)], [event(n) for n in range(6, 10)]
    await bus.publish(CONTACTS, first, "one-key")
    await wait_until(lambda: held.started, "the first batch in hand")
    await publish_one_by_one(harness, bus, ahead)
    held.outage.set()
    held.release.set()
    await wait_until(lambda: held.failed > harness.max_attempts + 1, "retried past max_attempts")
    await publish_one_by_one(harness, bus, during)
    held.outage.clear()
    everything = [first, *ahead, *during]
    await wait_until(lambda: len(held.ids) >= len(everything), "all delivered after the outage")
    assert held.ids == [e.id for e in everything]
    assert await harness.dead_letters(CONTACTS) == []
