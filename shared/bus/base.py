"""The event-bus interface both implementations (embedded SQLite, Kafka) satisfy.

Semantics every implementation gives, proven by ``tests/contract/test_bus_contract.py``:

* ``publish`` returns only once the event is durably accepted (Kafka ack from all in-sync replicas /
  SQLite commit); it raises :class:`BusUnavailable` otherwise, so a caller never confirms what may be lost.
* Events with the same key land in the same partition and are delivered in publish order.
* Consumer groups: each partition is consumed by one member of a group at a time; the offset is
  committed only after the handler returned (at-least-once). What was not committed when a consumer
  died is delivered again to the next one.
* A handler that raises is retried up to ``max_attempts``; then the event goes to ``<topic>.dlq`` with
  the error, and consumption moves on. Bytes that are not a valid event go to the DLQ at once.
  Nothing is dropped silently.
* Handlers must be idempotent (dedupe by the CloudEvents ``id``; see :mod:`shared.inbox`).
"""

from __future__ import annotations

import abc
import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from shared.events import Envelope, EventData, make_event
from shared.topics import route


class BusUnavailable(RuntimeError):
    """The bus could not durably accept an event (broker down, database locked beyond timeout...)."""


@dataclass(frozen=True, slots=True)
class Record:
    """Where an event came from: enough to find it again, and to explain a DLQ entry."""

    topic: str
    partition: int
    offset: int
    key: str | None
    value: bytes
    headers: tuple[tuple[str, bytes], ...] = ()


Handler = Callable[[Envelope, Record], Awaitable[None]]

# Headers written on dead-lettered records.
DLQ_ERROR = "x-error"
DLQ_ORIGINAL_TOPIC = "x-original-topic"
DLQ_ORIGINAL_PARTITION = "x-original-partition"
DLQ_ORIGINAL_OFFSET = "x-original-offset"
DLQ_ATTEMPTS = "x-attempts"
DLQ_CONSUMER_GROUP = "x-consumer-group"


@dataclass
class Subscription:
    """A running consumer. ``stop()`` finishes the in-flight event, commits, and leaves the group."""

    topics: tuple[str, ...]
    group: str
    handler: Handler
    max_attempts: int
    _stop: Callable[[], Awaitable[None]] | None = field(default=None, repr=False)
    # Set once the consumer owns its partitions and is positioned; tests wait on it.
    ready: asyncio.Event = field(default_factory=asyncio.Event, repr=False)

    async def stop(self) -> None:
        if self._stop is not None:
            await self._stop()


class EventBus(abc.ABC):
    """Publish/subscribe with per-key ordering, consumer groups, at-least-once delivery and a DLQ."""

    def __init__(self, *, topic_prefix: str = "", max_attempts: int = 5, retry_backoff: float = 0.05):
        self.topic_prefix = topic_prefix
        self.max_attempts = max_attempts
        self.retry_backoff = retry_backoff

    def physical(self, topic: str) -> str:
        """Logical topic name -> name on the broker (a prefix isolates test runs or environments)."""
        return self.topic_prefix + topic

    def logical(self, topic: str) -> str:
        return topic.removeprefix(self.topic_prefix)

    @abc.abstractmethod
    async def start(self) -> None: ...

    @abc.abstractmethod
    async def stop(self) -> None:
        """Stop every subscription (committing what was handled) and release connections."""

    @abc.abstractmethod
    async def publish_raw(
        self, topic: str, key: str | None, value: bytes, headers: Sequence[tuple[str, bytes]] = ()
    ) -> None:
        """Durably append bytes to a (logical) topic. Raise :class:`BusUnavailable` on failure."""

    async def publish(self, topic: str, event: Envelope, key: str) -> None:
        await self.publish_raw(topic, key, event.to_bytes())

    async def emit(self, data: EventData, *, source: str, event_id: str | None = None) -> Envelope:
        """Wrap ``data`` in an envelope and publish it to its topic under its partition key."""
        envelope = make_event(data, source=source, event_id=event_id)
        topic, key = route(data)
        await self.publish(topic, envelope, key)
        return envelope

    @abc.abstractmethod
    async def subscribe(
        self,
        topics: Sequence[str],
        group: str,
        handler: Handler,
        *,
        max_attempts: int | None = None,
        from_beginning: bool = True,
    ) -> Subscription:
        """Start consuming ``topics`` as a member of ``group``; returns once the consumer runs."""

    @abc.abstractmethod
    async def ping(self) -> bool:
        """True when the bus can accept events now (for ``/readyz``)."""
