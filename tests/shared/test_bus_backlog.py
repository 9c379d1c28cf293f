"""Consumer lag and DLQ size of the embedded bus, as the /metrics gauges report them: lag is what the
group has not handled yet, and it falls to 0 once the handler catches up; bytes that are not an event
land in the DLQ and are counted there."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from prometheus_client import REGISTRY

from shared.bus.embedded import EmbeddedBus
from shared.observability import refresh_bus_gauges
from shared.topics import CONTACTS
from tests.router.conftest import contact, eventually


async def test_lag_rises_while_the_handler_is_held_and_falls_when_it_catches_up(tmp_path: Path) -> None:
    bus = EmbeddedBus(tmp_path / "bus.db", partitions=1, poll_max=0.005)
    await bus.start()
    try:
        for i in range(3):
            await bus.emit(contact(f"c{i}"), source="test")
        await bus.publish_raw(CONTACTS, "k", b"not an event")
        gate = asyncio.Event()
        handled: list[Any] = []

        async def handler(envelope: Any, _record: Any) -> None:
            await gate.wait()
            handled.append(envelope)

        sub = await bus.subscribe([CONTACTS], "lag-test", handler)
        backlog = await bus.backlog()
        assert backlog.lag == {("lag-test", CONTACTS): 4}  # nothing handled (or committed) yet
        await refresh_bus_gauges(bus)
        assert REGISTRY.get_sample_value("switchboard_bus_consumer_lag", {"group": "lag-test", "topic": CONTACTS}) == 4
        gate.set()

        async def caught_up() -> Any:
            b = await bus.backlog()
            return b if b.lag[("lag-test", CONTACTS)] == 0 and b.dlq.get(CONTACTS) == 1 else None

        await eventually(caught_up)
        assert len(handled) == 3
        await refresh_bus_gauges(bus)
        assert REGISTRY.get_sample_value("switchboard_bus_consumer_lag", {"group": "lag-test", "topic": CONTACTS}) == 0
        assert REGISTRY.get_sample_value("switchboard_bus_dlq_size", {"topic": CONTACTS}) == 1
        await sub.stop()
    finally:
        await bus.stop()


async def test_a_bus_that_does_not_answer_in_time_leaves_the_scrape_prompt(tmp_path: Path) -> None:
    class Stuck(EmbeddedBus):
        async def backlog(self) -> Any:
            await asyncio.sleep(30)

    loop = asyncio.get_running_loop()
    started = loop.time()
    await refresh_bus_gauges(Stuck(tmp_path / "bus.db"), timeout=0.1)
    assert loop.time() - started < 1.0
