"""The Kafka event bus (aiokafka): the production implementation of :class:`shared.bus.base.EventBus`.

Guarantees and how they are obtained:

* **Durable publish.** One idempotent producer per bus (``enable_idempotence=True``, ``acks='all'``):
  ``publish_raw`` returns only after every in-sync replica has the record, and raises
  :class:`BusUnavailable` within ``publish_timeout`` seconds otherwise (intake answers 503 then).
  A publish that timed out may still land later; that is a duplicate with the same event id, which
  consumers drop (see :mod:`shared.inbox`).
* **Ordering per key.** The key's bytes choose the partition (murmur2, as in the Java client).
* **Topics on demand.** ``<topic>`` and ``<topic>.dlq`` are created with the admin client, with the
  configured partitions and replication factor, the first time they are used (already-existing is fine).
  Run brokers with ``auto.create.topics.enable=false``: otherwise a client's metadata request may
  create a topic first, with the broker's default partition count.
* **Isolation.** ``topic_prefix`` prefixes topic *and* consumer-group names, so environments (or test
  runs) can share a cluster.
* **At-least-once consumption.** One consumer per subscription, ``enable_auto_commit=False``; the
  offset of a record is committed only after its handler returned (or it was dead-lettered), at most
  every ``commit_interval`` seconds (0.5) while records flow, and within it once they stop. Records
  of one partition are handled one after the other; the subscription handles one record at a time.
* **Fetching ahead.** While a batch handler runs, the consume loop takes what the fetcher brings
  (``_fetch_ahead``, up to ``fetch_max_records``): aiokafka fetches a partition again only once what it
  holds of it was taken, so records that arrived meanwhile would wait for one more fetch and one more
  handler each. Taken, they are the start of the next batch; nothing of them is committed before they
  were handled, and a rebalance or a failure drops them to be fetched again.
* **Rebalances.** A listener stops work on revoked partitions, waits for the in-flight handler and
  commits what was handled before the partitions move, so the next owner starts where we stopped.
* **Partition hooks.** ``on_revoked`` runs inside the listener's ``on_partitions_revoked``, after that
  commit: the group's rebalance waits for it, so no other member consumes the partitions before it
  returned. With ``on_revoked`` set, the listener waits for the delivery in hand past ``shutdown_grace``
  too (the rebalance timeout bounds the wait: the group goes on without a member slower than that).
  ``on_assigned`` does *not* run inside ``on_partitions_assigned``: aiokafka stops heartbeating for the
  whole rebalance including that callback (a hook longer than the session timeout would get the member
  evicted), and it already hands records of the new assignment to ``getmany`` before calling it.
  Instead the listener pauses the new partitions and returns; a task awaits the hook and then resumes
  them, so heartbeats go on however long the hook takes and no record of them is delivered before it
  returned. A rebalance that comes meanwhile waits for the hook (``on_revoked`` follows it), within the
  group's rebalance timeout; consumers' requests time out after ``CONSUMER_REQUEST_TIMEOUT_MS`` (40 s)
  at the least, so the other members' JoinGroup requests outlast such a wait. aiokafka rebalances
  eagerly: every rebalance revokes all of a member's partitions and assigns afresh. A member evicted
  without a clean hand-over (killed: its partitions move after the session timeout; paused past it: it
  calls ``on_revoked`` when it rejoins) may still hand the handler records it fetched before it noticed;
  its commits are refused then, and handlers dedupe.
* **Dead letters.** A handler that raises is retried ``max_attempts`` times with backoff, then the
  record goes to ``<topic>.dlq`` with the error headers of :mod:`shared.bus.base`. Bytes that are not a
  valid event go there at once. The DLQ publish must succeed before the offset moves on.
* **Broker restarts.** aiokafka reconnects by itself; the consume loop never dies on a ``KafkaError``:
  it logs, backs off and continues. The bus even starts while the broker is down (``ping()`` is False
  and publishes raise :class:`BusUnavailable` until it is back).
* **Graceful shutdown.** ``Subscription.stop()`` lets the in-flight handler finish (up to
  ``shutdown_grace`` seconds, then it is cancelled and *not* committed), commits, and leaves the group
  so the partitions move at once instead of after the session timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Awaitable, Iterable, Sequence
from typing import Any

import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import (
    ConsumerStoppedError,
    IllegalStateError,
    KafkaError,
    TopicAlreadyExistsError,
    for_code,
)
from aiokafka.partitioner import DefaultPartitioner

from shared.bus.base import (
    MAX_BATCH,
    Backlog,
    BatchHandler,
    BusUnavailable,
    DeliveryInterrupted,
    EventBus,
    Handler,
    PartitionsChanged,
    Record,
    Subscription,
    TopicPartitions,
)
from shared.events import STRUCTURED_HEADERS
from shared.observability import (
    BUS_PUBLISH_SECONDS,
)
from shared.topics import DLQ_SUFFIX, dlq

log = structlog.get_logger(__name__)

# How stale a consumer's view of the cluster may get. aiokafka's default is 5 minutes, and a group that
# formed before a topic's partitions showed in its metadata (a topic just created, a slow or new
# cluster) stays assigned to nothing until the next refresh: its events wait that long. Seen on a busy
# machine; tests/contract/test_kafka_bus.py reproduces it. A metadata request every 10 s per consumer
# is cheap.
CONSUMER_METADATA_MAX_AGE_MS = 10_000
# A JoinGroup request waits on the broker until every member rejoined, and a member's rebalance listener
# may wait for a partition hook that takes seconds (shared.bus.base): do not give up on it sooner.
CONSUMER_REQUEST_TIMEOUT_MS = 40_000

_CONNECT_ERRORS = (KafkaError, OSError, TimeoutError)


class KafkaBus(EventBus):
    """Publish/subscribe over Kafka with the semantics documented in :mod:`shared.bus.base`."""

    def __init__(
        self,
        bootstrap_servers: str,
        *,
        partitions: int = 6,
        replication_factor: int = 1,
        topic_prefix: str = "",
        max_attempts: int = 5,
        retry_backoff: float = 0.05,
        transient_backoff_max: float = 5.0,
        publish_timeout: float = 5.0,
        ping_timeout: float = 2.0,
        session_timeout_ms: int = 10_000,
        heartbeat_interval_ms: int = 1_000,
        max_poll_interval_ms: int = 300_000,
        rebalance_timeout_ms: int | None = None,
        group_instance_id: str | None = None,
        shutdown_grace: float = 10.0,
        commit_interval: float = 0.5,
        fetch_max_records: int = 200,
        client_id: str | None = None,
    ) -> None:
        super().__init__(
            topic_prefix=topic_prefix,
            max_attempts=max_attempts,
            retry_backoff=retry_backoff,
            transient_backoff_max=transient_backoff_max,
        )
        self.bootstrap_servers = bootstrap_servers
        self.partitions = partitions
        self.replication_factor = replication_factor
        self.publish_timeout = publish_timeout
        self.ping_timeout = ping_timeout
        self.session_timeout_ms = session_timeout_ms
        self.heartbeat_interval_ms = heartbeat_interval_ms
        self.max_poll_interval_ms = max_poll_interval_ms
        self.rebalance_timeout_ms = rebalance_timeout_ms or max_poll_interval_ms
        # Static membership: a restarted member with the same id takes its partitions back at once.
        self.group_instance_id = group_instance_id
        self.shutdown_grace = shutdown_grace
        self.commit_interval = commit_interval
        self.fetch_max_records = fetch_max_records
        self.client_id = client_id or f"switchboard-{uuid.uuid4().hex[:8]}"
        self._producer: AIOKafkaProducer | None = None
        self._producer_lock = asyncio.Lock()
        self._admin: AIOKafkaAdminClient | None = None
        self._admin_lock = asyncio.Lock()
        self._known_topics: set[str] = set()
        self._consumers: list[_Consumer] = []
        # The producer's partitioner, passed to it explicitly: partition_of() asks the very same one.
        self._partitioner = DefaultPartitioner()
        self._stopped = False  # after stop(): refuse to publish (a new producer would never be stopped)

    # --------------------------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        """Connect the producer if the broker answers; if not, keep going and connect on first use."""
        self._stopped = False
        try:
            await asyncio.wait_for(self._ensure_producer(), timeout=self.publish_timeout)
        except (*_CONNECT_ERRORS, BusUnavailable) as exc:
            log.warning("kafka.start_unreachable", bootstrap=self.bootstrap_servers, error=repr(exc))

    async def stop(self) -> None:
        self._stopped = True
        for consumer in list(self._consumers):
            await consumer.stop()
        if self._producer is not None:
            producer, self._producer = self._producer, None
            with contextlib.suppress(Exception):
                # Flushes what is still buffered; bounded so a dead broker cannot block shutdown.
                await asyncio.wait_for(producer.stop(), timeout=self.publish_timeout)
        if self._admin is not None:
            admin, self._admin = self._admin, None
            with contextlib.suppress(Exception):
                await asyncio.wait_for(admin.close(), timeout=self.ping_timeout)

    async def backlog(self) -> Backlog:
        """Lag = highwater - first offset not handled yet, for each partition a local consumer holds
        (from the consumer's fetch state and the batch in hand: no broker round trip). DLQ size = end -
        beginning offsets of the DLQ partitions (one ListOffsets request each way), which come from one
        fresh metadata fetch: a consumer's own metadata knows only the topics it reads, and a DLQ topic
        that does not exist yet holds 0 events, not "unknown". The caller bounds the time."""
        out = Backlog()
        cluster = None
        if self._consumers:
            producer = await self._ensure_producer()
            cluster = await producer.client.fetch_all_metadata()
        for c in list(self._consumers):
            consumer = c.consumer
            if consumer is None:
                continue
            for tp in consumer.assignment():
                high = consumer.highwater(tp)
                if high is None:  # nothing fetched yet: unknown, not 0
                    continue
                key = (c.sub.group, self.logical(tp.topic))
                done = c.unhandled.get(tp)
                if done is None and c.ahead.get(tp):
                    done = c.ahead[tp][0].offset  # fetched ahead, not handled yet
                if done is None:
                    done = await consumer.position(tp)
                out.lag[key] = out.lag.get(key, 0) + max(0, high - done)
            dlq_tps: dict[str, list[TopicPartition]] = {}
            for topic in c.sub.topics:
                physical = self.physical(dlq(topic))
                parts = cluster.partitions_for_topic(physical) if cluster is not None else None
                dlq_tps[topic] = [TopicPartition(physical, p) for p in parts or ()]
            every = [tp for tps in dlq_tps.values() for tp in tps]
            begin: dict[TopicPartition, int] = {}
            end: dict[TopicPartition, int] = {}
            if every:
                # Both asked at once, for every DLQ partition: the broker answers a connection's requests
                # in order, behind the fetch it holds (up to a gathering subscription's wait), so asked one
                # after another they would wait that long each.
                begin, end = await asyncio.gather(consumer.beginning_offsets(every), consumer.end_offsets(every))
            for topic, tps in dlq_tps.items():
                out.dlq[topic] = sum(end[tp] - begin[tp] for tp in tps)
        return out

    async def ping(self) -> bool:
        """True when the cluster answers a metadata request within ``ping_timeout``."""
        try:
            async with asyncio.timeout(self.ping_timeout):
                producer = await self._ensure_producer()
                metadata = await producer.client.fetch_all_metadata()
            return bool(metadata.brokers())
        except Exception:
            return False

    async def _ensure_producer(self) -> AIOKafkaProducer:
        if self._producer is not None:
            return self._producer
        async with self._producer_lock:
            if self._producer is None:
                producer = AIOKafkaProducer(
                    bootstrap_servers=self.bootstrap_servers,
                    client_id=self.client_id,
                    acks="all",
                    enable_idempotence=True,
                    linger_ms=0,
                    partitioner=self._partitioner,
                    request_timeout_ms=max(int(self.publish_timeout * 1000), 1000),
                )
                try:
                    await producer.start()
                except BaseException:
                    # A half-started producer holds sockets and tasks: release them, even when cancelled.
                    stopping = asyncio.ensure_future(producer.stop())
                    with contextlib.suppress(BaseException):
                        await asyncio.shield(stopping)
                    raise
                self._producer = producer
            return self._producer

    async def admin(self) -> AIOKafkaAdminClient:
        """The cluster's admin client, started on first use and shared (topics, metadata, provisioning)."""
        if self._admin is not None:
            return self._admin
        async with self._admin_lock:
            if self._admin is None:
                admin = AIOKafkaAdminClient(
                    bootstrap_servers=self.bootstrap_servers,
                    client_id=f"{self.client_id}-admin",
                    request_timeout_ms=max(int(self.publish_timeout * 1000), 1000),
                )
                try:
                    await admin.start()
                except BaseException:
                    with contextlib.suppress(BaseException):
                        await asyncio.shield(asyncio.ensure_future(admin.close()))
                    raise
                self._admin = admin
            return self._admin

    async def ensure_topics(self, physical_topics: Sequence[str]) -> None:
        """Create the topics and their DLQs if missing (partitions/replication from the settings)."""
        wanted: list[str] = []
        for topic in physical_topics:
            for name in (topic,) if topic.endswith(DLQ_SUFFIX) else (topic, dlq(topic)):
                if name not in self._known_topics and name not in wanted:
                    wanted.append(name)
        if not wanted:
            return
        admin = await self.admin()
        response = await admin.create_topics(
            [NewTopic(name, self.partitions, self.replication_factor) for name in wanted],
            timeout_ms=max(int(self.publish_timeout * 1000), 1000),
        )
        for entry in response.topic_errors:
            name, code = entry[0], entry[1]
            if code != 0 and for_code(code) is not TopicAlreadyExistsError:
                message = entry[2] if len(entry) > 2 else None
                raise for_code(code)(f"creating topic {name}: {message}")
        self._known_topics.update(wanted)
        log.info("kafka.topics_ensured", topics=wanted)

    async def read_topic(self, topic: str) -> list[Record]:
        """A group-less consumer reads every partition from the beginning to its current end."""
        physical = self.physical(topic)
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap_servers,
            client_id=f"{self.client_id}-reader",
            enable_auto_commit=False,
            request_timeout_ms=max(int(self.publish_timeout * 1000), 1000),
        )
        try:
            async with asyncio.timeout(self.publish_timeout * 6):
                await consumer.start()
                producer = await self._ensure_producer()
                metadata = await producer.client.fetch_all_metadata()  # fresh, not the cached view
                known = metadata.partitions_for_topic(physical)
                if not known:
                    return []
                tps = [TopicPartition(physical, p) for p in sorted(known)]
                consumer.assign(tps)
                await consumer.seek_to_beginning(*tps)
                end = await consumer.end_offsets(tps)
                out: list[Record] = []
                while [tp for tp in tps if await consumer.position(tp) < end[tp]]:
                    batches = await consumer.getmany(timeout_ms=500)
                    for messages in batches.values():
                        out.extend(
                            Record(
                                topic,
                                m.partition,
                                m.offset,
                                m.key.decode("utf-8", "replace") if m.key is not None else None,
                                m.value if m.value is not None else b"",
                                tuple((k, bytes(v)) for k, v in (m.headers or ())),
                            )
                            for m in messages
                            if m.offset < end[TopicPartition(physical, m.partition)]
                        )
                return sorted(out, key=lambda r: (r.partition, r.offset))
        except TimeoutError as exc:
            raise BusUnavailable(f"kafka at {self.bootstrap_servers}: reading {physical} timed out") from exc
        except (KafkaError, OSError) as exc:
            raise BusUnavailable(f"kafka at {self.bootstrap_servers}: {exc!r}") from exc
        finally:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(consumer.stop(), timeout=self.publish_timeout)

    # ----------------------------------------------------------------------------------- publish

    async def publish_raw(
        self, topic: str, key: str | None, value: bytes, headers: Sequence[tuple[str, bytes]] = STRUCTURED_HEADERS
    ) -> None:
        await self._send([(topic, key, value, headers)])

    async def publish_many(self, records: Sequence[tuple[str, str | None, bytes]]) -> list[BaseException | None]:
        """One wait for the whole list (the outbox relay publishes its batches here); all or nothing: if
        any record is not acknowledged, every record is answered with the error (some may be in the
        topic; publishing them again gives the same event ids, which consumers drop)."""
        if not records:
            return []
        try:
            await self._send([(topic, key, value, STRUCTURED_HEADERS) for topic, key, value in records])
        except BusUnavailable as exc:
            return [exc] * len(records)
        return [None] * len(records)

    async def _send(self, records: Sequence[tuple[str, str | None, bytes, Sequence[tuple[str, bytes]]]]) -> None:
        """Every record handed to the producer in list order, then one wait for all acknowledgements.

        ``send`` puts a record in its partition's batch when it returns, and the idempotent producer keeps
        that order on the wire: order per key holds by construction, and a list costs one round trip
        instead of one per record. Raises :class:`BusUnavailable` unless every record was acknowledged.
        """
        if self._stopped:
            raise BusUnavailable("kafka bus is stopped")
        physical = [self.physical(topic) for topic, _, _, _ in records]
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self.publish_timeout):
                producer = await self._ensure_producer()
                await self.ensure_topics(sorted(set(physical)))
                acks = [
                    await producer.send(
                        name, value=value, key=key.encode() if key is not None else None, headers=list(headers) or None
                    )
                    for name, (_, key, value, headers) in zip(physical, records, strict=True)
                ]
                await asyncio.gather(*acks)
        except TimeoutError as exc:
            raise BusUnavailable(
                f"kafka at {self.bootstrap_servers} did not acknowledge within {self.publish_timeout}s"
            ) from exc
        except (KafkaError, OSError) as exc:
            # The topic may be gone (deleted, or a wiped cluster): check/create it again next time.
            self._known_topics.difference_update(physical)
            raise BusUnavailable(f"kafka at {self.bootstrap_servers}: {exc!r}") from exc
        elapsed = time.perf_counter() - started
        for _ in records:
            BUS_PUBLISH_SECONDS.labels("kafka").observe(elapsed)

    # ---------------------------------------------------------------------------------- partitions

    async def _producer_partitions(self, topic: str) -> tuple[str, AIOKafkaProducer, set[int]]:
        """The partitions of the physical topic as the producer sees them (its own cluster metadata,
        which it fetches on first use of a topic exactly as ``send`` does); the topic is created first."""
        physical = self.physical(topic)
        try:
            async with asyncio.timeout(self.publish_timeout):
                producer = await self._ensure_producer()
                await self.ensure_topics([physical])
                partitions = await producer.partitions_for(physical)
        except TimeoutError as exc:
            raise BusUnavailable(f"kafka at {self.bootstrap_servers}: no metadata for {physical}") from exc
        except (KafkaError, OSError) as exc:
            self._known_topics.discard(physical)
            raise BusUnavailable(f"kafka at {self.bootstrap_servers}: {exc!r}") from exc
        return physical, producer, set(partitions)

    async def partition_count(self, topic: str) -> int:
        _, _, partitions = await self._producer_partitions(topic)
        return len(partitions)

    async def partition_of(self, topic: str, key: str) -> int:
        """aiokafka's ``DefaultPartitioner`` (murmur2 of the key bytes, ``& 0x7fffffff``, modulo the number
        of partitions), called with the arguments ``AIOKafkaProducer._partition`` gives it."""
        physical, producer, _ = await self._producer_partitions(topic)
        metadata = producer.client.cluster
        all_partitions = list(metadata.partitions_for_topic(physical) or ())
        available = list(metadata.available_partitions_for_topic(physical) or ())
        return int(self._partitioner(key.encode(), all_partitions, available))

    # --------------------------------------------------------------------------------- subscribe

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
        sub = Subscription(
            topics=tuple(topics),
            group=group,
            handler=handler,
            max_attempts=max_attempts or self.max_attempts,
            batch_handler=batch_handler,
            on_assigned=on_assigned,
            on_revoked=on_revoked,
            gather=gather,
        )
        consumer = _Consumer(self, sub, from_beginning=from_beginning)
        self._consumers.append(consumer)
        sub._stop = consumer.stop
        sub._assigned = consumer.assigned
        sub._assignment = consumer.assignment
        await consumer.start()
        return sub


GATHER_MIN_BYTES = 256 * 1024  # what a fetch of a gathering subscription waits for (about 300 events)
FETCH_AHEAD_SECONDS = 1.0  # how long into a batch handler's run its consumer still takes records ahead


class _Consumer(ConsumerRebalanceListener):  # type: ignore[misc]  # aiokafka ships no types: its base is Any
    """One subscription: an aiokafka group member, its consume loop and its rebalance listener."""

    def __init__(self, bus: KafkaBus, sub: Subscription, *, from_beginning: bool) -> None:
        self.bus = bus
        self.sub = sub
        self.from_beginning = from_beginning
        self.physical_topics = [bus.physical(t) for t in sub.topics]
        self.consumer: AIOKafkaConsumer | None = None
        self.task: asyncio.Task[None] | None = None
        self.stopping = False
        # Partitions we may work on now; revoked ones leave this set before the rebalance goes on.
        self.owned: set[TopicPartition] = set()
        # Bumped on every revoke: a batch fetched under an older generation is dropped, not handled.
        self.generation = 0
        # False after an assignment until every assigned partition has a fetch position.
        self.positioned = True
        # Next offset to commit per partition (everything before it was handled).
        self.pending: dict[TopicPartition, int] = {}
        # First offset not yet handled per partition of the batch in hand: the fetcher's position is
        # already past it, so consumer lag counts from here while a batch is being worked on.
        self.unhandled: dict[TopicPartition, int] = {}
        # Records fetched while a batch handler ran (``_fetch_ahead``), under ``ahead_generation``: the
        # next batch starts with them.
        self.ahead: dict[TopicPartition, list[ConsumerRecord[Any, Any]]] = {}
        self.ahead_generation = 0
        self.last_commit = time.monotonic()
        self.idle = asyncio.Event()
        self.idle.set()
        self.started = asyncio.Event()
        self.stopped = False
        # Partitions the subscriber was told of (on_assigned called) and not yet told it lost.
        self.held: set[TopicPartition] = set()
        self.revoking: set[TopicPartition] = set()  # inside on_revoked
        # The task awaiting on_assigned for the current assignment (its partitions are paused till then).
        self.assigning: asyncio.Task[None] | None = None

    # --------------------------------------------------------------------------- lifecycle

    def assigned(self) -> bool:
        """In the group with a settled, positioned assignment (on_assigned returned), and the consume
        loop alive."""
        return (
            self.consumer is not None
            and self.positioned
            and not self._assigning()
            and not self.stopping
            and self.task is not None
            and not self.task.done()
        )

    def assignment(self) -> TopicPartitions:
        return frozenset((self.bus.logical(tp.topic), tp.partition) for tp in self.held | self.revoking)

    def _assigning(self) -> bool:
        return self.assigning is not None and not self.assigning.done()

    def _logical(self, tps: Iterable[TopicPartition]) -> TopicPartitions:
        return frozenset((self.bus.logical(tp.topic), tp.partition) for tp in tps)

    async def start(self) -> None:
        self.task = asyncio.create_task(self._run(), name=f"kafka-consumer:{self.sub.group}")
        # Return once the consumer runs (or the broker was unreachable for a while: it keeps trying).
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(self.started.wait()), timeout=self.bus.publish_timeout)

    async def stop(self) -> None:
        """Finish the in-flight handler (bounded), commit what was handled, leave the group."""
        if self.stopped:
            return
        self.stopped = True
        self.stopping = True
        if self.task is not None:
            done, _ = await asyncio.wait({self.task}, timeout=self.bus.shutdown_grace)
            if not done:
                log.warning("kafka.shutdown_grace_exceeded", group=self.sub.group)
                self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self.task
        if self.assigning is not None and not self.assigning.done():
            # on_assigned still running (e.g. waiting for a lease): it gets the grace, then is cancelled.
            done, _ = await asyncio.wait({self.assigning}, timeout=self.bus.shutdown_grace)
            if not done:
                log.warning("kafka.on_assigned_cancelled_by_stop", group=self.sub.group)
                self.assigning.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await self.assigning
        consumer, self.consumer = self.consumer, None
        if consumer is not None:
            await self._commit(consumer, timeout=self.bus.publish_timeout)
            # Still a member (the group cannot hand the partitions on yet): tell the subscriber first.
            await self._revoke(self.held)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(consumer.stop(), timeout=self.bus.publish_timeout)  # leaves the group
        if self in self.bus._consumers:
            self.bus._consumers.remove(self)
        log.info("kafka.subscription_stopped", group=self.sub.group, topics=self.physical_topics)

    def _new_consumer(self) -> AIOKafkaConsumer:
        return AIOKafkaConsumer(
            bootstrap_servers=self.bus.bootstrap_servers,
            client_id=f"{self.bus.client_id}-{self.sub.group}",
            group_id=self.bus.physical(self.sub.group),
            enable_auto_commit=False,
            auto_offset_reset="earliest" if self.from_beginning else "latest",
            session_timeout_ms=self.bus.session_timeout_ms,
            heartbeat_interval_ms=self.bus.heartbeat_interval_ms,
            max_poll_interval_ms=self.bus.max_poll_interval_ms,
            rebalance_timeout_ms=self.bus.rebalance_timeout_ms,
            **self._static_membership(),
            # ``gather``: the broker holds each fetch until a batch's worth of bytes is there or the
            # gather time ran out; a backlog fills GATHER_MIN_BYTES at once and is fetched without a wait.
            fetch_max_wait_ms=round(self.sub.gather * 1000) if self.sub.gather else 100,
            fetch_min_bytes=GATHER_MIN_BYTES if self.sub.gather else 1,
            request_timeout_ms=max(self.bus.session_timeout_ms + 5_000, CONSUMER_REQUEST_TIMEOUT_MS),
            retry_backoff_ms=200,
            metadata_max_age_ms=CONSUMER_METADATA_MAX_AGE_MS,
        )

    def _static_membership(self) -> dict[str, str]:
        """``group_instance_id`` per subscription (one process may consume several groups)."""
        if not self.bus.group_instance_id:
            return {}
        return {"group_instance_id": f"{self.bus.group_instance_id}-{self.sub.group}"}

    async def _connect(self) -> AIOKafkaConsumer:
        """Create topics, start the consumer and join the group; retry with backoff until it works."""
        backoff = 0.2
        while True:
            consumer = None
            try:
                async with asyncio.timeout(self.bus.publish_timeout):
                    await self.bus.ensure_topics(self.physical_topics)
                consumer = self._new_consumer()
                await consumer.start()
                consumer.subscribe(self.physical_topics, listener=self)
                return consumer
            except asyncio.CancelledError:
                if consumer is not None:
                    with contextlib.suppress(BaseException):
                        await asyncio.shield(asyncio.ensure_future(consumer.stop()))
                raise
            except Exception as exc:
                log.warning("kafka.consumer_connect_failed", group=self.sub.group, error=repr(exc))
                if consumer is not None:
                    with contextlib.suppress(Exception):
                        await consumer.stop()
                if self.stopping:
                    raise ConsumerStoppedError() from exc
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)

    # ------------------------------------------------------------------------------ loop

    async def _run(self) -> None:
        try:
            self.consumer = await self._connect()
        except ConsumerStoppedError:
            return
        finally:
            self.started.set()
        consumer = self.consumer
        backoff = 0.2
        while not self.stopping:
            try:
                if not self.positioned:
                    await self._position(consumer)
                batches = await self._next_batch(consumer)
                # aiokafka drops records fetched under an older assignment; a rebalance from here on
                # (during a handler) makes us drop the rest of the batch: the new assignment starts
                # from the offsets committed on revoke, so nothing is skipped.
                generation = self.generation
                # First offset not yet handled, per partition of this batch.
                unhandled = {tp: messages[0].offset for tp, messages in batches.items() if messages}
                self.unhandled = unhandled
                try:
                    step = MAX_BATCH if self.sub.batch_handler is not None else 1
                    for tp, messages in batches.items():
                        for start in range(0, len(messages), step):
                            if self.stopping or generation != self.generation:
                                break
                            if tp not in self.owned:
                                # Assigned but held back (on_assigned has not returned): give the records
                                # back to the fetcher instead of skipping them.
                                with contextlib.suppress(IllegalStateError):
                                    consumer.seek(tp, messages[start].offset)
                                self.ahead.pop(tp, None)  # fetched again from there
                                break
                            if not self.positioned:
                                # Records of the new assignment arrived: say ready now, not after the
                                # whole first batch (a restart's backlog took tens of seconds under load).
                                await self._position(consumer)
                            try:
                                delivery = self._handle(tp, messages[start : start + step], generation, unhandled)
                                if step > 1:
                                    await self._fetch_ahead(consumer, delivery, generation)
                                else:
                                    await delivery
                            except DeliveryInterrupted:
                                break  # revoked or stopping while waiting out an outage: not committed
                            if time.monotonic() - self.last_commit >= self.bus.commit_interval:
                                await self._commit(consumer)
                except Exception:
                    # A bus-internal failure (the handler's own errors never get here): the fetcher is
                    # already past this batch, so rewind, or later commits would skip what is left.
                    if generation == self.generation:
                        rewind = {tp: records[0].offset for tp, records in self.ahead.items() if records}
                        rewind.update(unhandled)  # a partition of this batch rewinds to its first unhandled
                        for tp, offset in rewind.items():
                            with contextlib.suppress(IllegalStateError):
                                consumer.seek(tp, offset)
                    self.ahead = {}
                    raise
                self.unhandled = {}
                # Offsets are committed every ``commit_interval``, not after each batch: a commit is a
                # round trip to the group coordinator (about 10 ms at 100 events/s on this machine, a
                # third of each fetch-handle-commit cycle), and records wait for it before they are
                # fetched. An idle loop comes back here every 200 ms, so what was handled is committed
                # within the interval; a crash replays at most that much, which handlers dedupe.
                if self.pending and time.monotonic() - self.last_commit >= self.bus.commit_interval:
                    await self._commit(consumer)
                self.sub.recover()  # the broker answers again (a handler's stall ends inside _deliver)
                backoff = 0.2
            except asyncio.CancelledError:
                raise
            except ConsumerStoppedError:
                return
            except Exception as exc:  # KafkaError while the broker restarts, and anything unexpected
                log.warning("kafka.consume_error", group=self.sub.group, error=repr(exc))
                self.sub.stall(exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)

    async def _next_batch(self, consumer: AIOKafkaConsumer) -> dict[TopicPartition, list[ConsumerRecord[Any, Any]]]:
        """The next batch: what was fetched ahead while the last handler ran, with whatever the fetcher
        holds now; or, with nothing ahead, the next fetch (waiting up to 200 ms for one)."""
        ahead, self.ahead = self.ahead, {}
        if ahead and self.ahead_generation != self.generation:
            # Fetched under an assignment since revoked: the new one starts from the offsets committed
            # on revoke, so these come again.
            ahead = {}
        timeout = 0 if ahead else 200
        batches: dict[TopicPartition, list[ConsumerRecord[Any, Any]]] = await consumer.getmany(
            timeout_ms=timeout, max_records=self.bus.fetch_max_records
        )
        for tp, records in batches.items():
            earlier = ahead.get(tp)
            if earlier:
                last = earlier[-1].offset
                ahead[tp] = earlier + [r for r in records if r.offset > last]
            else:
                ahead[tp] = records
        return ahead

    async def _fetch_ahead(self, consumer: AIOKafkaConsumer, delivery: Awaitable[None], generation: int) -> None:
        """Run ``delivery`` while draining what the fetcher brings meanwhile into ``self.ahead``.

        aiokafka fetches a partition again only once what it holds of it was taken: records that reach
        the broker while a handler runs would otherwise wait there for the handler to end, then for one
        more fetch and one more handler, each a group commit in the router (at 100 contacts/s on Kafka
        + PostgreSQL that put 16 ms at the median and 78 ms at the 99th percentile between intake's
        publish and the router's consumer). Taking them as they arrive keeps a fetch in flight, and the
        next batch holds all that came during this one. At most ``fetch_max_records`` are taken ahead,
        and only in the handler's first ``FETCH_AHEAD_SECONDS``: beyond that the consumer polls no more
        until the handler returns, as before, so a handler stuck for ``max_poll_interval_ms`` still costs
        this member its partitions (a pending ``getmany`` counts as polling)."""
        loop = asyncio.get_running_loop()
        until = loop.time() + FETCH_AHEAD_SECONDS
        handling = asyncio.ensure_future(delivery)
        fetching: asyncio.Future[Any] | None = None
        failure: BaseException | None = None
        try:
            while not handling.done():
                left = until - loop.time()
                if left <= 0 or sum(len(r) for r in self.ahead.values()) >= self.bus.fetch_max_records:
                    await asyncio.wait({handling})
                    break
                fetching = asyncio.ensure_future(
                    consumer.getmany(timeout_ms=round(left * 1000), max_records=self.bus.fetch_max_records)
                )
                await asyncio.wait({handling, fetching}, return_when=asyncio.FIRST_COMPLETED)
                if not fetching.done():
                    # Cancelled while waiting for records: the fetcher keeps what it has, nothing is taken.
                    fetching.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await fetching
                    fetching = None
                    break
                got, fetching = fetching, None
                if got.exception() is not None:
                    failure = got.exception()  # raised once the handler returned
                    await asyncio.wait({handling})
                    break
                if generation != self.generation:
                    continue  # revoked meanwhile: these are not ours to hand on
                self.ahead_generation = generation
                for tp, records in got.result().items():
                    self.ahead.setdefault(tp, []).extend(records)
        finally:
            if fetching is not None and not fetching.done():
                fetching.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await fetching
            if not handling.done():
                handling.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await handling
        await handling  # the handler's own outcome first
        if failure is not None:
            raise failure

    async def _position(self, consumer: AIOKafkaConsumer) -> None:
        """Resolve the start offset of every assigned partition, then tell waiters we are ready (not
        before on_assigned returned: until then the partitions are paused)."""
        generation = self.generation
        for tp in list(consumer.assignment()):
            with contextlib.suppress(IllegalStateError):  # revoked meanwhile
                await consumer.position(tp)
        if generation == self.generation and not self._assigning():
            self.positioned = True
            self.sub.ready.set()

    async def _handle(
        self,
        tp: TopicPartition,
        messages: list[ConsumerRecord[Any, Any]],
        generation: int,
        unhandled: dict[TopicPartition, int],
    ) -> None:
        """Deliver consecutive records of one partition (one, or a batch when the subscription takes
        batches); each one's offset becomes committable as soon as it was handled."""
        records = [
            Record(
                topic=self.bus.logical(message.topic),
                partition=message.partition,
                offset=message.offset,
                key=message.key.decode("utf-8", "replace") if message.key is not None else None,
                value=message.value if message.value is not None else b"",
                headers=tuple((k, bytes(v)) for k, v in (message.headers or ())),
            )
            for message in messages
        ]

        def handled(record: Record) -> None:
            self.pending[tp] = unhandled[tp] = record.offset + 1

        self.idle.clear()
        try:
            await self.bus._deliver_many(
                self.sub,
                records,
                lambda: not self.stopping and generation == self.generation and tp in self.owned,
                handled,
            )
        finally:
            self.idle.set()

    async def _commit(
        self, consumer: AIOKafkaConsumer, only: set[TopicPartition] | None = None, *, timeout: float = 5.0
    ) -> None:
        offsets = {tp: o for tp, o in self.pending.items() if only is None or tp in only}
        if not offsets:
            return
        try:
            await asyncio.wait_for(consumer.commit(offsets), timeout=timeout)
        except asyncio.CancelledError:
            raise
        except (KafkaError, TimeoutError) as exc:
            # Not committed: at-least-once means these may be delivered again; that is safe.
            log.warning("kafka.commit_failed", group=self.sub.group, offsets=_fmt(offsets), error=repr(exc))
            if isinstance(exc, TimeoutError):
                return  # keep them pending; the broker may be back for the next commit
            for tp in offsets:  # lost the partition (rebalance): the new owner replays from its commit
                if tp not in consumer.assignment():
                    self.pending.pop(tp, None)
            return
        for tp, offset in offsets.items():
            if self.pending.get(tp) == offset:
                del self.pending[tp]
        self.last_commit = time.monotonic()

    # ------------------------------------------------------------------ rebalance listener

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        """Before partitions move: stop working on them, wait for the in-flight handler, commit, then
        tell the subscriber (on_revoked). The group waits for all of it before assigning them again."""
        revoked = set(revoked)
        self.generation += 1
        self.owned -= revoked
        self.positioned = False
        if self.assigning is not None and not self.assigning.done():
            # on_revoked follows the on_assigned it undoes: let that finish first (no record was handed
            # out meanwhile, the partitions are paused). Heartbeats go on during this callback.
            log.info("kafka.revoke_waits_for_on_assigned", group=self.sub.group)
            await asyncio.wait({self.assigning})
        try:
            await asyncio.wait_for(self.idle.wait(), timeout=self.bus.shutdown_grace)
        except TimeoutError:
            log.warning("kafka.revoke_while_handler_busy", group=self.sub.group)
            if self.sub.on_revoked is not None:
                # on_revoked comes after the handler's last delivery returned and was committed, however
                # long that takes (past the rebalance timeout the group goes on without this member).
                await self.idle.wait()
        consumer = self.consumer
        if consumer is not None and revoked:
            await self._commit(consumer, revoked)
        for tp in revoked:
            self.pending.pop(tp, None)
        log.info("kafka.partitions_revoked", group=self.sub.group, partitions=_fmt_tps(revoked))
        await self._revoke(revoked)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        assigned = set(assigned)
        self.positioned = False
        log.info("kafka.partitions_assigned", group=self.sub.group, partitions=_fmt_tps(assigned))
        consumer = self.consumer
        if self.stopping or consumer is None:
            # Leaving: the subscriber is not told of partitions it will never consume.
            self.owned = set()
            self._pause(consumer, assigned)
            return
        if self.sub.on_assigned is None or not assigned:
            self.owned = assigned
            self.held |= assigned
            return
        # aiokafka already returns records of the new assignment from getmany and sends no heartbeat
        # while this callback runs: hold the partitions back and await the hook in a task of its own.
        self.owned = set()
        self._pause(consumer, assigned)
        self.assigning = asyncio.create_task(
            self._assign(consumer, assigned, self.generation), name=f"kafka-on-assigned:{self.sub.group}"
        )

    async def _assign(self, consumer: AIOKafkaConsumer, assigned: set[TopicPartition], generation: int) -> None:
        """Tell the subscriber (on_assigned), then let the records of those partitions flow."""
        self.held |= assigned
        await self.sub.partitions_assigned(self._logical(assigned))
        if generation != self.generation or self.stopping:
            return  # revoked meanwhile: the revoke listener, or stop(), takes it from here
        self.owned = set(assigned)
        for tp in assigned:
            with contextlib.suppress(IllegalStateError):  # no longer assigned
                consumer.resume(tp)
        self.positioned = False  # the loop says ready once positioned

    async def _revoke(self, tps: set[TopicPartition]) -> None:
        """on_revoked for those of ``tps`` the subscriber holds; each partition is revoked once."""
        gone = self.held & tps
        if not gone:
            return
        self.held -= gone
        self.revoking |= gone
        try:
            await self.sub.partitions_revoked(self._logical(gone))
        finally:
            self.revoking -= gone

    def _pause(self, consumer: AIOKafkaConsumer | None, tps: set[TopicPartition]) -> None:
        if consumer is None:
            return
        for tp in tps:
            with contextlib.suppress(IllegalStateError):
                consumer.pause(tp)


def _fmt(offsets: dict[TopicPartition, int]) -> dict[str, int]:
    return {f"{tp.topic}/{tp.partition}": o for tp, o in offsets.items()}


def _fmt_tps(tps: set[TopicPartition]) -> list[str]:
    return sorted(f"{tp.topic}/{tp.partition}" for tp in tps)
