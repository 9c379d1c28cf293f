"""What the bus contract suite needs besides the bus interface itself.

* :func:`build_bus` builds a bus from a JSON-able description, so a child process (see
  ``crash_member.py``) can join the very same bus and consumer group as the test.
* :class:`BusHarness` hands out buses for one test and reads dead letters back. Reading a DLQ is not
  part of the bus interface (a DLQ holds bytes that may not even be events), so each kind reads its
  own storage here: Kafka through a plain group-less consumer, the embedded bus through its SQLite log.
* :class:`Collector` is a handler that records deliveries and lets a test wait for them with a timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from shared.bus.base import EventBus, Record
from shared.events import Envelope
from shared.topics import dlq

WAIT = 30.0  # seconds any single wait in the suite may take before the test fails (never hangs)


def build_bus(kind: str, config: dict[str, Any]) -> EventBus:
    if kind == "embedded":
        from shared.bus.embedded import EmbeddedBus

        cfg = dict(config)
        return EmbeddedBus(cfg.pop("path"), **cfg)
    if kind == "kafka":
        from shared.bus.kafka import KafkaBus

        cfg = dict(config)
        return KafkaBus(cfg.pop("bootstrap_servers"), **cfg)
    raise ValueError(f"unknown bus kind {kind!r}")


@dataclass
class BusHarness:
    kind: str
    config: dict[str, Any]
    buses: list[EventBus] = field(default_factory=list)

    @property
    def max_attempts(self) -> int:
        return int(self.config["max_attempts"])

    @property
    def session_timeout(self) -> float:
        """Seconds after which a silent member loses its partitions."""
        if self.kind == "embedded":
            return float(self.config["session_timeout"])
        return int(self.config["session_timeout_ms"]) / 1000

    def unique(self, what: str) -> str:
        return f"{what}-{uuid.uuid4().hex[:8]}"

    async def new_bus(self) -> EventBus:
        """A started bus on the test's shared storage/prefix (another "process" of the same system)."""
        bus = build_bus(self.kind, self.config)
        self.buses.append(bus)
        await bus.start()
        return bus

    async def close(self) -> None:
        for bus in self.buses:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(bus.stop(), timeout=WAIT)

    async def dead_letters(self, topic: str) -> list[Record]:
        """Everything in ``<topic>.dlq`` (logical topic), oldest first per partition."""
        return await self.raw_records(dlq(topic))

    async def raw_records(self, topic: str) -> list[Record]:
        """Every record of a logical topic as stored (value and headers as written), oldest first per partition:
        read from the storage itself, not through the bus (Kafka: a plain group-less aiokafka consumer)."""
        physical = self.config["topic_prefix"] + topic
        if self.kind == "embedded":
            return await asyncio.to_thread(self._embedded_records, physical)
        return await self._kafka_records(physical)

    async def committed(self, group: str, topic: str) -> dict[int, int]:
        """The group's committed offsets (next offset to read) per partition of a logical topic, read from
        the storage itself (Kafka: the group coordinator, through an admin client)."""
        physical = self.config["topic_prefix"] + topic
        if self.kind == "embedded":
            return await asyncio.to_thread(self._embedded_committed, group, physical)
        from aiokafka.admin import AIOKafkaAdminClient

        admin = AIOKafkaAdminClient(bootstrap_servers=self.config["bootstrap_servers"])
        await admin.start()
        try:
            async with asyncio.timeout(WAIT):
                offsets = await admin.list_consumer_group_offsets(self.config["topic_prefix"] + group)
        finally:
            await admin.close()
        return {tp.partition: meta.offset for tp, meta in offsets.items() if tp.topic == physical and meta.offset >= 0}

    def _embedded_committed(self, group: str, physical: str) -> dict[int, int]:
        conn = sqlite3.connect(self.config["path"], timeout=10)
        try:
            rows = conn.execute(
                "SELECT partition, next_offset FROM group_offsets WHERE group_id=? AND topic=?", (group, physical)
            ).fetchall()
        finally:
            conn.close()
        return {int(p): int(o) for p, o in rows}

    def _embedded_records(self, physical: str) -> list[Record]:
        conn = sqlite3.connect(self.config["path"], timeout=10)
        try:
            rows = conn.execute(
                "SELECT partition, offset, key, value, headers FROM events WHERE topic=? ORDER BY partition, offset",
                (physical,),
            ).fetchall()
        finally:
            conn.close()
        return [
            Record(
                physical,
                partition,
                offset,
                key,
                bytes(value),
                tuple((k, v.encode("latin-1")) for k, v in json.loads(headers or "[]")),
            )
            for partition, offset, key, value, headers in rows
        ]

    async def _kafka_records(self, physical: str) -> list[Record]:
        from aiokafka import AIOKafkaConsumer, TopicPartition

        consumer = AIOKafkaConsumer(bootstrap_servers=self.config["bootstrap_servers"], enable_auto_commit=False)
        await consumer.start()
        try:
            async with asyncio.timeout(WAIT):
                # The bus created the topic (and its DLQ) with the configured partition count.
                tps = [TopicPartition(physical, p) for p in range(int(self.config["partitions"]))]
                consumer.assign(tps)
                await consumer.seek_to_beginning(*tps)
                end = await consumer.end_offsets(tps)
                out: list[Record] = []
                while [tp for tp in tps if await consumer.position(tp) < end[tp]]:
                    batches = await consumer.getmany(timeout_ms=500)
                    for messages in batches.values():
                        out.extend(
                            Record(
                                physical,
                                m.partition,
                                m.offset,
                                m.key.decode() if m.key is not None else None,
                                m.value,
                                tuple((k, bytes(v)) for k, v in (m.headers or ())),
                            )
                            for m in messages
                        )
                return sorted(out, key=lambda r: (r.partition, r.offset))
        finally:
            await consumer.stop()


def header(record: Record, name: str) -> str | None:
    for k, v in record.headers:
        if k == name:
            return v.decode()
    return None


class Collector:
    """A handler that records (envelope, record) and lets a test wait for deliveries."""

    def __init__(self, on_event: Callable[[Envelope, Record], Awaitable[None]] | None = None) -> None:
        self.deliveries: list[tuple[Envelope, Record]] = []
        self._on_event = on_event
        self._changed = asyncio.Condition()

    async def __call__(self, envelope: Envelope, record: Record) -> None:
        if self._on_event is not None:
            await self._on_event(envelope, record)
        async with self._changed:
            self.deliveries.append((envelope, record))
            self._changed.notify_all()

    @property
    def ids(self) -> list[str]:
        return [env.id for env, _ in self.deliveries]

    async def wait_for(self, predicate: Callable[[list[str]], bool], timeout: float = WAIT) -> None:
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(lambda: predicate(self.ids))

    async def wait_count(self, n: int, timeout: float = WAIT) -> None:
        await self.wait_for(lambda ids: len(ids) >= n, timeout)
