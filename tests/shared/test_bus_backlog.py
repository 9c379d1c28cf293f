"""Consumer lag and DLQ size of each bus (embedded, and a real Kafka broker), as the /metrics gauges
report them: lag is what the group has not handled yet, and it falls to 0 once the handler catches up;
bytes that are not an event land in the DLQ and are counted there; a topic that never dead-lettered
anything reports 0, not nothing."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY

from shared.bus.base import EventBus
from shared.bus.embedded import EmbeddedBus
from shared.observability import refresh_bus_gauges
from shared.topics import CALLBACKS, CONTACTS
from tests.router.conftest import contact, eventually


@pytest.fixture(params=["embedded", "kafka"])
async def bus(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[EventBus]:
    if request.param == "embedded":
        built: EventBus = EmbeddedBus(tmp_path / "bus.db", partitions=1, poll_max=0.005)
    else:
        from shared.bus.kafka import KafkaBus

        servers = request.getfixturevalue("kafka_bootstrap_servers")
        built = KafkaBus(servers, partitions=1, topic_prefix=f"backlog-{uuid.uuid4().hex[:8]}-")
    await built.start()
    try:
        yield built
    finally:
        await built.stop()


def gauge(name: str, **labels: str) -> float | None:
    return REGISTRY.get_sample_value(name, labels)


async def test_lag_rises_while_the_handler_is_held_and_falls_when_it_catches_up(bus: EventBus) -> None:
    group = f"lag-{uuid.uuid4().hex[:6]}"
    for i in range(3):
        await bus.emit(contact(f"c{i}"), source="test")
    await bus.publish_raw(CONTACTS, "k", b"not an event")
    gate = asyncio.Event()
    handled: list[Any] = []

    async def handler(envelope: Any, _record: Any) -> None:
        await gate.wait()
        handled.append(envelope)

    sub = await bus.subscribe([CONTACTS, CALLBACKS], group, handler)

    async def held() -> Any:  # nothing handled (or committed) yet: all four count, the first in hand too
        b = await bus.backlog()
        return b if b.lag.get((group, CONTACTS)) == 4 else None

    backlog = await eventually(held, timeout=30)
    assert backlog.dlq == {CONTACTS: 0, CALLBACKS: 0}  # no dead letter yet: 0, not absent
    await refresh_bus_gauges(bus)
    assert gauge("switchboard_bus_consumer_lag", group=group, topic=CONTACTS) == 4
    assert gauge("switchboard_bus_dlq_size", topic=CALLBACKS) == 0
    gate.set()

    async def caught_up() -> Any:
        b = await bus.backlog()
        return b if b.lag.get((group, CONTACTS)) == 0 and b.dlq.get(CONTACTS) == 1 else None

    await eventually(caught_up, timeout=30)
    assert len(handled) == 3
    await refresh_bus_gauges(bus)
    assert gauge("switchboard_bus_consumer_lag", group=group, topic=CONTACTS) == 0
    assert gauge("switchboard_bus_dlq_size", topic=CONTACTS) == 1
    await sub.stop()


async def test_a_bus_that_does_not_answer_in_time_leaves_the_scrape_prompt(tmp_path: Path) -> None:
    class Stuck(EmbeddedBus):
        async def backlog(self) -> Any:
            await asyncio.sleep(30)

    loop = asyncio.get_running_loop()
    started = loop.time()
    await refresh_bus_gauges(Stuck(tmp_path / "bus.db"), timeout=0.1)
    assert loop.time() - started < 1.0
