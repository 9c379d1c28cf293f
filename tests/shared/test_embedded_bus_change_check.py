"""An idle embedded-bus consumer notices another connection's publish by asking ``PRAGMA data_version`` on
the event loop's own thread (``EmbeddedBus._peek_version``), not with a trip to the reader's thread: an
idle consumer asks every few milliseconds, and those trips were 6 % of a core per idle service. Where
SQLite would make that check wait (busy), it is asked on the reader's thread as before. Both paths must
still deliver what another process published.

A second ``EmbeddedBus`` on the same file stands for the other process: its connections are not the
consumer's, so only ``data_version`` tells the consumer of its commits (no in-process wake-up).
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import pytest

from shared.bus.embedded import EmbeddedBus
from shared.topics import CONTACTS
from tests.router.conftest import contact, eventually


@pytest.mark.parametrize("busy", [False, True], ids=["checked-inline", "sqlite-busy-falls-back"])
async def test_an_idle_consumer_gets_another_connections_publish(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, busy: bool
) -> None:
    path = tmp_path / "bus.db"
    consumer = EmbeddedBus(path, partitions=1)
    producer = EmbeddedBus(path, partitions=1)
    await consumer.start()
    await producer.start()
    threads: list[str] = []
    peek, version = EmbeddedBus._peek_version, EmbeddedBus._version

    def peeked(self: EmbeddedBus) -> int | None:
        threads.append(f"peek:{threading.current_thread().name}")
        return None if busy else peek(self)

    def read(self: EmbeddedBus) -> int:
        threads.append(f"read:{threading.current_thread().name}")
        return version(self)

    monkeypatch.setattr(consumer, "_peek_version", peeked.__get__(consumer))
    monkeypatch.setattr(consumer, "_version", read.__get__(consumer))
    handled: list[Any] = []

    async def handler(envelope: Any, _record: Any) -> None:
        handled.append(envelope.data["contact_id"])

    sub = await consumer.subscribe([CONTACTS], "idle-check", handler)
    try:
        await asyncio.sleep(0.5)  # idle: the consumer is checking for changes
        checks = list(threads)
        published = await producer.emit(contact("c1"), source="other-process")

        async def delivered() -> bool:
            return len(handled) == 1

        await eventually(delivered, timeout=10)
        assert handled == [published.data["contact_id"]]
    finally:
        await sub.stop()
        await producer.stop()
        await consumer.stop()
    loop_thread = threading.current_thread().name
    assert f"peek:{loop_thread}" in checks  # every check starts on the loop's thread
    assert all(t.startswith("read:bus-reader") for t in checks if t.startswith("read:"))
    if busy:
        assert any(t.startswith("read:") for t in checks)  # and falls back to the reader's thread
    else:
        assert not any(t.startswith("read:") for t in checks)  # which it never needed
