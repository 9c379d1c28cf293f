"""The event-bus interface both implementations (embedded SQLite, Kafka) satisfy.

Semantics every implementation gives, proven by ``tests/contract/test_bus_contract.py``:

* ``publish`` returns only once the event is durably accepted (Kafka ack from all in-sync replicas /
  SQLite commit); it raises :class:`BusUnavailable` otherwise, so a caller never confirms what may be lost.
* Events with the same key land in the same partition and are delivered in publish order.
* Consumer groups: each partition is consumed by one member of a group at a time; the offset is
  committed only after the handler returned (at-least-once). What was not committed when a consumer
  died is delivered again to the next one.
* A handler that fails because a dependency is unavailable (:func:`shared.faults.is_transient`: its
  database is down, locked or full, the bus is unreachable, a timeout) is retried for as long as that
  lasts, with jittered exponential backoff up to ``transient_backoff_max`` seconds; meanwhile the
  subscription is *stalled* (``Subscription.consuming()`` is False, so ``/readyz`` says not ready) and the
  partition does not move on. It resumes by itself when the dependency is back. Such an event never
  goes to the DLQ.
* A handler that raises anything else is retried up to ``max_attempts``; then the event goes to
  ``<topic>.dlq`` with the error, and consumption moves on. Bytes that are not a valid event go to the
  DLQ at once. Nothing is dropped silently.
* Handlers must be idempotent (dedupe by the CloudEvents ``id``; see :mod:`shared.inbox`).

Partition ownership (for services that own state per partition, e.g. routing domains per router):

* ``subscribe(..., on_assigned=, on_revoked=)`` tells the member which partitions it was given or lost,
  as sets of (logical topic, partition). Neither hook is ever called with an empty set.
* ``on_assigned(tps)`` is awaited before any record of ``tps`` reaches the handler (or batch handler).
  It may take seconds (wait for a database lease, rebuild state): the member stays in its group and
  keeps its partitions meanwhile (Kafka heartbeats go on; embedded leases are renewed).
* ``on_revoked(tps)`` is called when ``tps`` are taken from the member (a rebalance, or
  ``Subscription.stop()``): after the handler's last delivery from them returned and their handled
  offsets were committed (where the bus still can: a member that lost its partitions cannot commit),
  and before another member can consume them. It is called for every partition ``on_assigned`` was
  called for, even if that hook raised. A member that finds its partitions gone without a clean
  hand-over (paused past the session timeout: another member may already consume them) calls it as
  soon as it notices.
* A hook that raises is logged (``bus.partition_hook_failed``) and consumption goes on.
* Bounds of a clean hand-over: the delivery in hand gets ``shutdown_grace`` seconds, and on Kafka the
  hooks and that delivery together get the group's rebalance timeout
  (``SWITCHBOARD_KAFKA_REBALANCE_TIMEOUT_MS``, 30 s); the embedded bus renews the lease while a hook
  runs, for as long as it runs. A member slower than that loses the partitions without a clean
  hand-over: another member may consume them before its ``on_revoked`` (which still comes after its
  handler returned). A killed member gets no ``on_revoked``; the others' ``on_assigned`` for its
  partitions comes after its session timeout (Kafka, without static membership) or lease expiry
  (embedded).
* ``Subscription.assignment()``: the partitions held now (from ``on_assigned`` until ``on_revoked``).
* ``partition_of(topic, key)`` / ``partition_count(topic)``: where the bus's producer puts a key.
* Per bus: Kafka (aiokafka's eager rebalance protocol) revokes *all* of a member's partitions at every
  rebalance and assigns afresh, so a partition kept across a rebalance sees ``on_revoked`` then
  ``on_assigned``; the embedded bus hands over partition by partition (only what moves).
"""

from __future__ import annotations

import abc
import asyncio
import time
from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass, field

import structlog
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, wait_exponential, wait_random_exponential

from shared.events import STRUCTURED_HEADERS, Envelope, EventData, MalformedEvent, decode_record, make_event
from shared.faults import is_transient
from shared.observability import (
    BUS_EVENTS_DEAD_LETTERED,
    BUS_EVENTS_HANDLED,
    BUS_HANDLER_FAILURES,
)
from shared.topics import dlq, route

log = structlog.get_logger(__name__)


class BusUnavailable(RuntimeError):
    """The bus could not durably accept an event (broker down, database locked beyond timeout...)."""


class DeliveryInterrupted(Exception):
    """A delivery waiting out a transient failure was given up because the partition is no longer ours
    (rebalance) or the subscription stops: the event is not committed, so it is delivered again."""


def _always() -> bool:
    return True


def _nothing() -> frozenset[tuple[str, int]]:
    return frozenset()


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
# Optional: consecutive records of one partition in one call (the consumer's group commit). It must handle
# all of them or none (one transaction): on a failure that is not transient the records are handed to the
# one-at-a-time ``Handler`` instead, so a poison event is dead-lettered alone and the others still land.
BatchHandler = Callable[[Sequence[tuple[Envelope, Record]]], Awaitable[None]]
MAX_BATCH = 100  # records per batch call: bounds one transaction's size and the latency of its first record

TopicPartitions = frozenset[tuple[str, int]]  # (logical topic, partition)
# Told which partitions a member was given (``on_assigned``) or lost (``on_revoked``); see the module doc.
PartitionsChanged = Callable[[TopicPartitions], Awaitable[None]]

# Headers written on dead-lettered records.
DLQ_ERROR = "x-error"
DLQ_ORIGINAL_TOPIC = "x-original-topic"
DLQ_ORIGINAL_PARTITION = "x-original-partition"
DLQ_ORIGINAL_OFFSET = "x-original-offset"
DLQ_ATTEMPTS = "x-attempts"
DLQ_CONSUMER_GROUP = "x-consumer-group"
DLQ_HEADERS = (
    DLQ_ERROR,
    DLQ_ORIGINAL_TOPIC,
    DLQ_ORIGINAL_PARTITION,
    DLQ_ORIGINAL_OFFSET,
    DLQ_ATTEMPTS,
    DLQ_CONSUMER_GROUP,
)
# Written by ``switchboard dlq replay`` (services/dlq.py) on a record it puts back: <topic>.dlq/<partition>:<offset>.
REPLAYED_FROM = "x-replayed-from"


@dataclass
class Subscription:
    """A running consumer. ``stop()`` finishes the in-flight event, commits, and leaves the group."""

    topics: tuple[str, ...]
    group: str
    handler: Handler
    max_attempts: int
    batch_handler: BatchHandler | None = None
    gather: float = 0.0  # seconds new records may wait for more before a delivery (see ``subscribe``)
    _stop: Callable[[], Awaitable[None]] | None = field(default=None, repr=False)
    # Set once the consumer owns its partitions and is positioned; tests wait on it.
    ready: asyncio.Event = field(default_factory=asyncio.Event, repr=False)
    # Monotonic time since which a transient failure holds the consumer back (None: not stalled).
    stalled_since: float | None = None
    last_error: str | None = None
    # Set by the bus: whether the member currently holds its share of the partitions.
    _assigned: Callable[[], bool] = field(default=_always, repr=False)
    stopped: bool = False
    on_assigned: PartitionsChanged | None = field(default=None, repr=False)
    on_revoked: PartitionsChanged | None = field(default=None, repr=False)
    # Set by the bus: the partitions held now (logical topics).
    _assignment: Callable[[], TopicPartitions] = field(default=_nothing, repr=False)

    async def stop(self) -> None:
        self.stopped = True
        if self._stop is not None:
            await self._stop()

    def assignment(self) -> TopicPartitions:
        """The partitions this member holds now, as (logical topic, partition): from the moment
        ``on_assigned`` is called for them until ``on_revoked`` returned (for status pages)."""
        return self._assignment()

    async def partitions_assigned(self, tps: Collection[tuple[str, int]]) -> None:
        """Run ``on_assigned`` (if any, and ``tps`` not empty); a failure is logged, never raised."""
        await self._run_hook("on_assigned", self.on_assigned, tps)

    async def partitions_revoked(self, tps: Collection[tuple[str, int]]) -> None:
        """Run ``on_revoked`` (if any, and ``tps`` not empty); a failure is logged, never raised."""
        await self._run_hook("on_revoked", self.on_revoked, tps)

    async def _run_hook(self, name: str, hook: PartitionsChanged | None, tps: Collection[tuple[str, int]]) -> None:
        if hook is None or not tps:
            return
        partitions = frozenset(tps)
        started = time.monotonic()
        try:
            await hook(partitions)
        except Exception as exc:  # the consumer goes on: a hook must not stop consumption
            log.exception(
                "bus.partition_hook_failed",
                group=self.group,
                hook=name,
                partitions=_fmt_partitions(partitions),
                error=repr(exc),
            )
            return
        log.info(
            "bus.partitions_changed",
            group=self.group,
            hook=name,
            partitions=_fmt_partitions(partitions),
            seconds=round(time.monotonic() - started, 3),
        )

    def consuming(self) -> bool:
        """Truthful readiness: joined and positioned, holding its partitions, not stalled, not stopped."""
        return self.ready.is_set() and not self.stopped and self.stalled_since is None and self._assigned()

    def stall(self, error: BaseException | str) -> None:
        """A dependency is unavailable: the consumer waits (readiness goes false until it recovers)."""
        self.last_error = repr(error) if isinstance(error, BaseException) else error
        if self.stalled_since is None:
            self.stalled_since = time.monotonic()
            log.warning("bus.consumer_stalled", group=self.group, error=self.last_error)

    def recover(self) -> None:
        if self.stalled_since is not None:
            stalled = round(time.monotonic() - self.stalled_since, 3)
            log.info("bus.consumer_resumed", group=self.group, stalled_seconds=stalled)
            self.stalled_since = None


def _fmt_partitions(tps: TopicPartitions) -> list[str]:
    return sorted(f"{topic}/{partition}" for topic, partition in tps)


@dataclass(frozen=True, slots=True)
class Backlog:
    """What this process's consumers have not handled yet, and what their topics dead-lettered.

    ``lag``: (group, logical topic) -> events behind the end of the log. ``dlq``: logical source topic ->
    events held in its ``<topic>.dlq``.
    """

    lag: dict[tuple[str, str], int] = field(default_factory=dict)
    dlq: dict[str, int] = field(default_factory=dict)


class EventBus(abc.ABC):
    """Publish/subscribe with per-key ordering, consumer groups, at-least-once delivery and a DLQ."""

    def __init__(
        self,
        *,
        topic_prefix: str = "",
        max_attempts: int = 5,
        retry_backoff: float = 0.05,
        transient_backoff_max: float = 5.0,
    ):
        self.topic_prefix = topic_prefix
        self.max_attempts = max_attempts
        self.retry_backoff = retry_backoff
        self.transient_backoff_max = transient_backoff_max

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
        self, topic: str, key: str | None, value: bytes, headers: Sequence[tuple[str, bytes]] = STRUCTURED_HEADERS
    ) -> None:
        """Durably append bytes to a (logical) topic. Raise :class:`BusUnavailable` on failure.

        ``headers`` default to the CloudEvents structured-mode ``content-type`` (the value is an event, as
        ``publish``, ``emit``, the outbox and intake publish it). Whoever passes headers says what the value
        is: the DLQ copies the original record's, so bytes that were no event are not labelled as one.
        """

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
        batch_handler: BatchHandler | None = None,
        on_assigned: PartitionsChanged | None = None,
        on_revoked: PartitionsChanged | None = None,
        gather: float = 0.0,
    ) -> Subscription:
        """Start consuming ``topics`` as a member of ``group``; returns once the consumer runs.

        ``batch_handler``: take consecutive records of a partition together (see :data:`BatchHandler`).
        ``gather``: seconds that records may wait for more before they are delivered, for a consumer to
        which a little delay costs nothing: under a steady flow it gets fewer, larger batches (fewer
        transactions), each record delivered at most about ``gather`` later. A backlog is delivered
        without waiting. 0: as soon as they are there.
        ``on_assigned`` / ``on_revoked``: told which partitions this member was given or lost (see the
        module docstring for when exactly).
        """

    @abc.abstractmethod
    async def partition_count(self, topic: str) -> int:
        """How many partitions the (logical) topic has; the topic is created if it does not exist yet,
        as a publish would."""

    @abc.abstractmethod
    async def partition_of(self, topic: str, key: str) -> int:
        """The partition a record published with ``key`` to the (logical) topic lands in, computed the
        way the bus's producer computes it."""

    async def backlog(self) -> Backlog:
        """Consumer lag and DLQ sizes for this process's subscriptions, for the /metrics gauges.
        A bus that cannot tell answers an empty :class:`Backlog` (no sample, not a false 0)."""
        return Backlog()

    @abc.abstractmethod
    async def ping(self) -> bool:
        """True when the bus can accept events now (for ``/readyz``)."""

    async def writable(self) -> bool:
        """True when a publish would be taken now: the path a publish takes, not just a read.

        For a producer's ``/readyz`` (intake). Callers bound the time; the default is :meth:`ping`.
        """
        return await self.ping()

    @abc.abstractmethod
    async def read_topic(self, topic: str) -> list[Record]:
        """Every retained record of a (logical) topic, ordered by partition and offset, outside any group.

        For operators' tools (``switchboard dlq``), not for consumers: it reads the whole topic.
        """

    # ------------------------------------------------------------------- delivery (both buses)

    async def _deliver(self, sub: Subscription, record: Record, still_owned: Callable[[], bool] = _always) -> None:
        """Decode and hand to the handler, retrying; what cannot be handled goes to the DLQ.

        A transient failure is retried until it succeeds; ``still_owned`` is asked between attempts, and
        :class:`DeliveryInterrupted` is raised once the partition moved away or the subscription stops.
        """
        try:
            envelope = decode_record(record.value, record.headers)
        except MalformedEvent as exc:
            log.error(
                "bus.malformed_event",
                group=sub.group,
                topic=record.topic,
                partition=record.partition,
                offset=record.offset,
                error=str(exc),
            )
            await self._dead_letter(sub.group, record, str(exc), attempts=0, sub=sub)
            sub.recover()
            return
        policy = _RetryPolicy(self, sub, record, envelope.id, still_owned)
        try:
            async for attempt in policy.retrying():
                with attempt:
                    await sub.handler(envelope, record)
        except (asyncio.CancelledError, DeliveryInterrupted):
            raise
        except Exception as exc:  # not transient, and failed max_attempts times: the DLQ
            log.error(
                "bus.handler_gave_up",
                group=sub.group,
                topic=record.topic,
                partition=record.partition,
                offset=record.offset,
                event_id=envelope.id,
                attempts=policy.failures,
                error=repr(exc),
            )
            await self._dead_letter(sub.group, record, repr(exc), attempts=policy.failures, sub=sub)
            sub.recover()
            return
        sub.recover()
        BUS_EVENTS_HANDLED.labels(sub.group, record.topic, envelope.type).inc()

    async def _deliver_many(
        self,
        sub: Subscription,
        records: Sequence[Record],
        still_owned: Callable[[], bool],
        handled: Callable[[Record], None],
    ) -> None:
        """Deliver consecutive records of one partition, in one batch call when the subscription takes
        batches; ``handled`` is told of each record once it was handled (or dead-lettered), in order.

        The batch is retried while its failure is transient (an outage: the same wait as one record). Any
        other failure, or a record that does not decode, hands the records to :meth:`_deliver` one by one,
        so only the poison one is retried towards the DLQ. Handlers dedupe, so running again is safe.
        """
        if sub.batch_handler is not None and len(records) > 1:
            try:
                envelopes = [decode_record(record.value, record.headers) for record in records]
            except MalformedEvent:
                envelopes = []
            if envelopes and await self._try_batch(sub, records, envelopes, still_owned):
                for envelope, record in zip(envelopes, records, strict=True):
                    BUS_EVENTS_HANDLED.labels(sub.group, record.topic, envelope.type).inc()
                    handled(record)
                return
        for record in records:
            await self._deliver(sub, record, still_owned)
            handled(record)

    async def _try_batch(
        self,
        sub: Subscription,
        records: Sequence[Record],
        envelopes: Sequence[Envelope],
        still_owned: Callable[[], bool],
    ) -> bool:
        assert sub.batch_handler is not None
        policy = _RetryPolicy(self, sub, records[0], envelopes[0].id, still_owned, max_attempts=1)
        try:
            async for attempt in policy.retrying():
                with attempt:
                    await sub.batch_handler(list(zip(envelopes, records, strict=True)))
        except (asyncio.CancelledError, DeliveryInterrupted):
            raise
        except Exception as exc:
            log.warning(
                "bus.batch_failed_one_by_one",
                group=sub.group,
                topic=records[0].topic,
                partition=records[0].partition,
                offsets=f"{records[0].offset}-{records[-1].offset}",
                error=repr(exc),
            )
            return False
        sub.recover()
        return True

    async def _dead_letter(
        self, group: str, record: Record, error: str, *, attempts: int, sub: Subscription | None = None
    ) -> None:
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
                if sub is not None:
                    sub.stall(exc)  # the bus is down: not ready until the DLQ has it
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
        BUS_EVENTS_DEAD_LETTERED.labels(group, record.topic).inc()


class _RetryPolicy:
    """One delivery's retries (tenacity): transient failures without limit, others ``max_attempts`` times."""

    def __init__(
        self,
        bus: EventBus,
        sub: Subscription,
        record: Record,
        event_id: str,
        still_owned: Callable[[], bool],
        *,
        max_attempts: int | None = None,
    ) -> None:
        self.max_attempts = max_attempts or sub.max_attempts
        self.bus = bus
        self.sub = sub
        self.record = record
        self.event_id = event_id
        self.still_owned = still_owned
        self.failures = 0  # failures that were not transient: these count towards the DLQ
        self._transient = False
        self._transient_wait = wait_random_exponential(
            multiplier=max(bus.retry_backoff, 0.01) * 4, max=bus.transient_backoff_max
        )
        self._permanent_wait = wait_exponential(multiplier=bus.retry_backoff, max=2.0)

    def retrying(self) -> AsyncRetrying:
        return AsyncRetrying(
            retry=retry_if_exception(self._should_retry),
            wait=self._wait,
            sleep=self._sleep,
            before_sleep=self._log,
            reraise=True,
        )

    def _should_retry(self, exc: BaseException) -> bool:
        if not isinstance(exc, Exception):  # CancelledError (a stop past its grace): never retried
            return False
        BUS_HANDLER_FAILURES.labels(self.sub.group, self.record.topic).inc()
        self._transient = is_transient(exc)
        if self._transient:
            self.sub.stall(exc)
            return True
        self.failures += 1
        return self.failures < self.max_attempts

    def _wait(self, state: RetryCallState) -> float:
        # Full jitter for outages (many consumers must not hammer a recovering database in step).
        return self._transient_wait(state) if self._transient else self._permanent_wait(state)

    def _log(self, state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome is not None else None
        log.warning(
            "bus.handler_failed",
            group=self.sub.group,
            topic=self.record.topic,
            offset=self.record.offset,
            event_id=self.event_id,
            attempt=state.attempt_number,
            transient=self._transient,
            error=repr(exc),
        )

    async def _sleep(self, seconds: float) -> None:
        """Sleep in short slices so a rebalance or a stop does not wait for a long backoff."""
        deadline = time.monotonic() + seconds
        while True:
            if self.sub.stopped or not self.still_owned():
                raise DeliveryInterrupted(f"{self.record.topic}/{self.record.partition}@{self.record.offset}")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            await asyncio.sleep(min(remaining, 0.1))
