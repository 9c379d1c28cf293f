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
