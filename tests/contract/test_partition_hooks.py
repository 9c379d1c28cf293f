"""Partition ownership on every bus: ``partition_of`` agrees with delivery.

A router that owns routing domains per partition computes the partition of its keys with it.
"""

from __future__ import annotations

from shared.topics import CONTACTS
from tests.contract.support import BusHarness, Collector
from tests.contract.test_bus_contract import event, ready

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
