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

import structlog

from shared.events import Envelope, EventData, MalformedEvent, decode_event, make_event
from shared.observability import (
    BUS_EVENTS_DEAD_LETTERED,
    BUS_EVENTS_HANDLED,
    BUS_HANDLER_FAILURES,
)
from shared.topics import dlq, route

log = structlog.get_logger(__name__)


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

    async def publish_many(self, records: Sequence[tuple[str, str | None, bytes]]) -> list[BaseException | None]:
        """Publish (logical topic, key, value) records concurrently; each is durable or fails on its own.

        Returns, per record, ``None`` once it is durably accepted or the exception that says it is not
        (normally :class:`BusUnavailable`): one caller can then answer many requests from one wait.
        """
        results = await asyncio.gather(*(self.publish_raw(t, k, v) for t, k, v in records), return_exceptions=True)
        return [r if isinstance(r, BaseException) else None for r in results]

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

    async def writable(self) -> bool:
        """True when a publish would be taken now: the path a publish takes, not just a read.

        For a producer's ``/readyz`` (intake). Callers bound the time; the default is :meth:`ping`.
        """
        return await self.ping()

    # ------------------------------------------------------------------- delivery (both buses)

    async def _deliver(self, sub: Subscription, record: Record) -> None:
        """Decode and hand to the handler, retrying; what cannot be handled goes to the DLQ."""
        try:
            envelope = decode_event(record.value)
        except MalformedEvent as exc:
            log.error(
                "bus.malformed_event",
                group=sub.group,
                topic=record.topic,
                partition=record.partition,
                offset=record.offset,
                error=str(exc),
            )
            await self._dead_letter(sub.group, record, str(exc), attempts=0)
            return
        attempt = 0
        while True:
            attempt += 1
            try:
                await sub.handler(envelope, record)
                BUS_EVENTS_HANDLED.labels(sub.group, record.topic, envelope.type).inc()
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                BUS_HANDLER_FAILURES.labels(sub.group, record.topic).inc()
                if attempt >= sub.max_attempts:
                    log.error(
                        "bus.handler_gave_up",
                        group=sub.group,
                        topic=record.topic,
                        partition=record.partition,
                        offset=record.offset,
                        event_id=envelope.id,
                        attempts=attempt,
                        error=repr(exc),
                    )
                    await self._dead_letter(sub.group, record, repr(exc), attempts=attempt)
                    return
                log.warning(
                    "bus.handler_failed",
                    group=sub.group,
                    topic=record.topic,
                    offset=record.offset,
                    event_id=envelope.id,
                    attempt=attempt,
                    error=repr(exc),
                )
                await asyncio.sleep(min(self.retry_backoff * 2 ** (attempt - 1), 2.0))

    async def _dead_letter(self, group: str, record: Record, error: str, *, attempts: int) -> None:
        headers = [
            *record.headers,
            (DLQ_ERROR, error.encode()[:4000]),
            (DLQ_ORIGINAL_TOPIC, record.topic.encode()),
            (DLQ_ORIGINAL_PARTITION, str(record.partition).encode()),
            (DLQ_ORIGINAL_OFFSET, str(record.offset).encode()),
            (DLQ_ATTEMPTS, str(attempts).encode()),
            (DLQ_CONSUMER_GROUP, group.encode()),
        ]
        # Retry until the DLQ has it: moving on without it would drop the event silently. A stop
        # during this wait cancels us before the offset is committed, so the record comes back.
        backoff = 0.2
        while True:
            try:
                await self.publish_raw(dlq(record.topic), record.key, record.value, headers)
                break
            except BusUnavailable as exc:
                log.warning("bus.dead_letter_retry", group=group, topic=record.topic, error=str(exc))
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
        BUS_EVENTS_DEAD_LETTERED.labels(group, record.topic).inc()
