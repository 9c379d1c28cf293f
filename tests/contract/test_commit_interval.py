"""Offsets are committed every ``commit_interval`` while records flow, not after each batch (a commit is a
round trip to the coordinator, or an fsync'd write on the embedded log, that the next fetch waited for),
and within the interval once they stop: a member killed after that gives nothing handled to the next
one. On every bus."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from shared.topics import CONTACTS
from tests.contract.support import BusHarness, Collector
from tests.contract.test_bus_contract import event, member_process, read_lines, ready, wait_for_lines


def count_commits(harness: BusHarness, bus: Any) -> list[int]:
    """A counter of the commits the bus's consumer makes from now on (the one subscription of ``bus``)."""
    calls = [0]
    owner = bus._consumers[0] if harness.kind == "kafka" else bus
    commit = owner._commit

    async def kafka_commit(*args: Any, **kwargs: Any) -> None:
        calls[0] += 1
        await commit(*args, **kwargs)

    def embedded_commit(*args: Any, **kwargs: Any) -> None:
        calls[0] += 1
        commit(*args, **kwargs)

    owner._commit = kafka_commit if harness.kind == "kafka" else embedded_commit
    return calls


async def test_a_steady_flow_is_committed_every_interval_not_every_batch(harness: BusHarness) -> None:
    bus: Any = await harness.new_bus()
    bus.commit_interval = 0.5
    got = Collector()
    sub = await bus.subscribe([CONTACTS], harness.unique("g"), got)
    await ready(sub)
    commits = count_commits(harness, bus)
    events = [event(n) for n in range(30)]
    for e in events:  # 1.5 s of a record every 50 ms: each one its own fetch
        await bus.publish(CONTACTS, e, "one-key")
        await asyncio.sleep(0.05)
    await got.wait_count(len(events))
    assert got.ids == [e.id for e in events]
    # About one commit per interval (three), with room for a slow machine; after each batch it was ~30.
    assert 1 <= commits[0] <= 8, commits[0]


async def test_what_was_handled_is_committed_within_the_interval_once_records_stop(
    harness: BusHarness, tmp_path: Path
) -> None:
    """A member handles a flow, goes idle past the interval and is killed (SIGKILL, no stop, no commit
    of its own): the next member of the group starts after everything it handled."""
    group = harness.unique("g")
    bus = await harness.new_bus()
    events = [event(n) for n in range(20)]
    log_file = tmp_path / "member.log"
    with member_process(harness, group, log_file, "handle") as child:
        async with asyncio.timeout(30):
            while not (tmp_path / "member.log.ready").exists():
                await asyncio.sleep(0.05)
        for e in events:
            await bus.publish(CONTACTS, e, "one-key")
            await asyncio.sleep(0.03)
        await wait_for_lines(child, log_file, lambda ids: len(ids) >= len(events))
        await asyncio.sleep(1.5)  # the interval (0.5 s), the idle loop's turn (0.2 s on Kafka), and margin
        child.kill()
    assert read_lines(log_file) == [e.id for e in events]
    later = event(99)
    await bus.publish(CONTACTS, later, "one-key")
    got = Collector()
    sub = await bus.subscribe([CONTACTS], group, got)
    await ready(sub)
    await got.wait_for(lambda ids: later.id in ids)
    assert got.ids == [later.id]  # nothing it handled is delivered again


async def test_the_lag_counts_what_was_handled_not_only_what_was_committed(harness: BusHarness) -> None:
    bus: Any = await harness.new_bus()
    bus.commit_interval = 3600.0  # nothing committed after the first batch during this test
    group = harness.unique("g")
    got = Collector()
    sub = await bus.subscribe([CONTACTS], group, got)
    await ready(sub)
    events = [event(n) for n in range(10)]
    for e in events:
        await bus.publish(CONTACTS, e, "one-key")
        await asyncio.sleep(0.02)
    await got.wait_count(len(events))
    async with asyncio.timeout(10):
        while (await bus.backlog()).lag.get((group, CONTACTS)) != 0:
            await asyncio.sleep(0.05)
