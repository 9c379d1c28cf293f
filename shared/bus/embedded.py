"""The embedded event bus: a durable log in one SQLite file (WAL), shared by processes on one machine.

Why SQLite: it needs no server, survives ``kill -9`` (a publish returns only after the transaction
committed with ``synchronous=FULL``), and several processes can read while one writes. The design mirrors
Kafka so the same contract tests hold:

* ``events(topic, partition, offset, ...)`` is an append-only log; ``partitions.next_offset`` hands out
  offsets (never reused, even after retention pruning).
* A key hashes to a partition, so one key's events stay in order.
* Consumer groups: members heartbeat in ``group_members``; partitions of a topic are spread over the live
  members (``partition % members``) and taken with a lease in ``partition_leases``. A member that dies
  stops renewing; after ``session_timeout`` its partitions move to the others. Offsets in
  ``group_offsets`` are committed only after the handler returned, and only by the lease holder (fencing),
  so what a dead member had not committed is delivered again. While records flow they are committed every
  ``commit_interval`` (0.5 s), not after each batch; once they stop, within it.
* Hand-over, partition by partition (only what moves): the heartbeat task decides and renews leases; the
  consume loop, between deliveries, commits a partition that is no longer its share, awaits
  ``on_revoked``, then releases its lease; for a lease newly taken it awaits ``on_assigned`` before
  reading the partition. The heartbeat keeps renewing every lease the member holds while a hook runs, so
  a hook may take longer than the session timeout. A partition no longer ours whose hand-over waits for
  a busy handler is renewed ``shutdown_grace`` seconds at most (then it lapses, and the member calls
  ``on_revoked`` when it notices, as one that was paused past its session timeout does); the consume
  loop delivers nothing while its leases may have lapsed (no heartbeat for a session timeout) and
  checks them first.
* Publishes that arrive together are written in one transaction (group commit): durability costs one
  fsync per batch, not per event.
* Delivery is prompt: a publish in the same process wakes local consumers at once; other processes
  notice through ``PRAGMA data_version`` polled every 1-10 ms (backing off when idle).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import time
import uuid
import zlib
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar, TypeVarTuple

import structlog

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
from shared.files import private_file
from shared.observability import (
    BUS_PUBLISH_SECONDS,
)
from shared.sqlite_wal import enable_wal
from shared.topics import dlq

_T = TypeVar("_T")
_Ts = TypeVarTuple("_Ts")

log = structlog.get_logger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS topics (name TEXT PRIMARY KEY, partitions INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS partitions (
  topic TEXT NOT NULL, partition INTEGER NOT NULL, next_offset INTEGER NOT NULL,
  PRIMARY KEY (topic, partition));
CREATE TABLE IF NOT EXISTS events (
  topic TEXT NOT NULL, partition INTEGER NOT NULL, offset INTEGER NOT NULL,
  key TEXT, value BLOB NOT NULL, headers TEXT, ts REAL NOT NULL,
  PRIMARY KEY (topic, partition, offset)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS events_ts ON events (ts);
CREATE TABLE IF NOT EXISTS group_offsets (
  group_id TEXT NOT NULL, topic TEXT NOT NULL, partition INTEGER NOT NULL, next_offset INTEGER NOT NULL,
  PRIMARY KEY (group_id, topic, partition));
CREATE TABLE IF NOT EXISTS group_members (
  group_id TEXT NOT NULL, member_id TEXT NOT NULL, topics TEXT NOT NULL, heartbeat REAL NOT NULL,
  PRIMARY KEY (group_id, member_id));
CREATE TABLE IF NOT EXISTS partition_leases (
  group_id TEXT NOT NULL, topic TEXT NOT NULL, partition INTEGER NOT NULL,
  owner TEXT NOT NULL, expires REAL NOT NULL,
  PRIMARY KEY (group_id, topic, partition));
"""

TopicPartition = tuple[str, int]
_ROWS_PER_STATEMENT = 500  # x 7 columns: far below SQLite's 32766 bound variables
_PUBLISH_SECONDS = BUS_PUBLISH_SECONDS.labels("embedded")  # bound once: labels() locks and builds a key


_FOREVER = float("inf")


def partition_for(key: str | None, partitions: int) -> int:
    """Stable across processes and restarts (unlike ``hash()``)."""
    if key is None:
        return int(time.monotonic_ns()) % partitions
    return zlib.crc32(key.encode()) % partitions


def _encode_headers(headers: Sequence[tuple[str, bytes]]) -> str | None:
    if not headers:
        return None
    if headers is STRUCTURED_HEADERS:  # nearly every record: encoded once
        return _STRUCTURED_HEADERS_JSON
    return json.dumps([[k, v.decode("latin-1")] for k, v in headers])


_STRUCTURED_HEADERS_JSON = json.dumps([[k, v.decode("latin-1")] for k, v in STRUCTURED_HEADERS])


def _decode_headers(raw: str | None) -> tuple[tuple[str, bytes], ...]:
    if not raw:
        return ()
    return tuple((k, v.encode("latin-1")) for k, v in json.loads(raw))


@dataclass
class _Pending:
    topic: str
    key: str | None
    value: bytes
    headers: Sequence[tuple[str, bytes]]
    future: asyncio.Future[None]


@dataclass
class _Member:
    """One subscription's consumer-group membership and what it currently owns.

    A leased partition is in exactly one of ``assigning`` (leased, ``on_assigned`` not returned yet),
    ``position`` (being consumed) and ``revoking`` (committed, ``on_revoked`` and the release under way);
    the heartbeat renews all of them. Only the heartbeat (on a lost lease) and a release take a
    partition out of them, both under ``lock``, so a heartbeat never mistakes one for newly taken.
    """

    group: str
    topics: tuple[str, ...]
    member_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    # partition -> next offset to read
    position: dict[TopicPartition, int] = field(default_factory=dict)
    # partition -> next offset to commit (everything before it was handled)
    handled: dict[TopicPartition, int] = field(default_factory=dict)
    committed: dict[TopicPartition, int] = field(default_factory=dict)
    last_commit: float = 0.0  # monotonic: offsets are committed every commit_interval while records flow
    # partition -> offset to start from, once on_assigned returned
    assigning: dict[TopicPartition, int] = field(default_factory=dict)
    revoking: set[TopicPartition] = field(default_factory=set)
    # No longer our share: the consume loop hands them over (monotonic time until which they are renewed).
    to_release: dict[TopicPartition, float] = field(default_factory=dict)
    # Leases that lapsed or were taken without a hand-over: on_revoked is still owed for them.
    lost: set[TopicPartition] = field(default_factory=set)
    # The subscriber was told of these (on_assigned called) and not yet told it lost them.
    held: set[TopicPartition] = field(default_factory=set)
    # Partitions that are this member's fair share but still leased by another (e.g. a killed member).
    waiting_for: set[TopicPartition] = field(default_factory=set)
    last_sync: float = 0.0  # monotonic time of the last successful heartbeat
    # Monotonic time until which every lease renewed by the last heartbeat surely holds.
    lease_until: float = 0.0
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    # Wakes the consume loop: a local publish, or a rebalance that brought new partitions.
    wakeup: asyncio.Event = field(default_factory=asyncio.Event)

    def leased(self) -> set[TopicPartition]:
        return set(self.position) | set(self.assigning) | self.revoking

    def adopt(self, offsets: dict[TopicPartition, int]) -> None:
        """on_assigned returned: consume those still leased, from where the group left them."""
        for tp, offset in offsets.items():
            if self.assigning.get(tp) == offset:
                del self.assigning[tp]
                self.position[tp] = self.handled[tp] = self.committed[tp] = offset


class EmbeddedBus(EventBus):
    def __init__(
        self,
        path: str | Path,
        *,
        partitions: int = 4,
        topic_prefix: str = "",
        max_attempts: int = 5,
        retry_backoff: float = 0.05,
        transient_backoff_max: float = 5.0,
        session_timeout: float = 6.0,
        heartbeat_interval: float = 0.5,
        poll_min: float = 0.001,
        poll_max: float = 0.010,
        fetch_batch: int = 200,
        retention_seconds: float = 7 * 24 * 3600,
        shutdown_grace: float = 10.0,
        commit_interval: float = 0.5,
    ) -> None:
        super().__init__(
            topic_prefix=topic_prefix,
            max_attempts=max_attempts,
            retry_backoff=retry_backoff,
            transient_backoff_max=transient_backoff_max,
        )
        self.path = Path(path)
        self.partitions = partitions
        self.session_timeout = session_timeout
        self.heartbeat_interval = heartbeat_interval
        self.poll_min = poll_min
        self.poll_max = poll_max
        self.fetch_batch = fetch_batch
        self.retention_seconds = retention_seconds
        self.shutdown_grace = shutdown_grace
        self.commit_interval = commit_interval
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="bus-writer")
        self._reader = ThreadPoolExecutor(1, thread_name_prefix="bus-reader")
        self._wconn: sqlite3.Connection | None = None
        self._rconn: sqlite3.Connection | None = None
        self._pconn: sqlite3.Connection | None = None  # the consumers' change check, on the loop's thread
        self._topic_partitions: dict[str, int] = {}
        self._pending: list[_Pending] = []
        self._flusher: asyncio.Task[None] | None = None
        self._wakeups: set[asyncio.Event] = set()  # one per local subscription
        self._subscriptions: list[Subscription] = []
        self._members: list[_Member] = []  # theirs, one each: what they handled and not yet committed
        self._started = False
        self._last_prune = 0.0

    # ----------------------------------------------------------------------------------------- setup

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=10, isolation_level=None, check_same_thread=False)
        enable_wal(conn)
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA busy_timeout=10000")
        return conn

    def _init_writer(self) -> None:
        private_file(self.path)  # the log holds every event, phone numbers included: owner only
        self._wconn = self._connect()
        self._wconn.executescript(_SCHEMA)

    def _init_reader(self) -> None:
        self._rconn = self._connect()

    async def start(self) -> None:
        if self._started:
            return
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(self._writer, self._init_writer)
            await loop.run_in_executor(self._reader, self._init_reader)
        except sqlite3.Error as exc:
            raise BusUnavailable(f"embedded bus at {self.path}: {exc}") from exc
        self._started = True

    async def stop(self) -> None:
        for sub in list(self._subscriptions):
            await sub.stop()
        if self._flusher is not None:
            with contextlib.suppress(Exception):
                await self._flusher
        loop = asyncio.get_running_loop()
        if self._wconn is not None:
            await loop.run_in_executor(self._writer, self._wconn.close)
            self._wconn = None
        if self._rconn is not None:
            await loop.run_in_executor(self._reader, self._rconn.close)
            self._rconn = None
        if self._pconn is not None:
            self._pconn.close()
            self._pconn = None
        self._started = False

    async def ping(self) -> bool:
        if self._rconn is None:
            return False
        conn = self._rconn
        try:
            await asyncio.get_running_loop().run_in_executor(
                self._reader, lambda: conn.execute("SELECT count(*) FROM topics").fetchone()
            )
            return True
        except sqlite3.Error:
            return False

    async def writable(self) -> bool:
        """The writer thread answers and can take the log's write lock now (``BEGIN IMMEDIATE``).

        Through the writer's own queue: a stuck writer (a hung disk, a held lock) makes this wait, and
        the caller's time bound turns that into "not ready". The lock is tried with a short busy timeout
        so the probe never holds the writer up for long; nothing is written.
        """
        if self._wconn is None:
            return False
        conn = self._wconn

        def probe() -> None:
            conn.execute("PRAGMA busy_timeout=250")
            try:
                conn.execute("BEGIN IMMEDIATE")
                conn.execute("ROLLBACK")
            finally:
                conn.execute("PRAGMA busy_timeout=10000")

        try:
            await asyncio.get_running_loop().run_in_executor(self._writer, probe)
            return True
        except sqlite3.Error:
            return False

    async def backlog(self) -> Backlog:
        """Lag = log end (``partitions.next_offset``) - the group's committed offset, per partition, or
        what a local member handled past it (committed every ``commit_interval``); a partition the group
        never committed counts from its oldest retained event. A handful of indexed lookups per
        subscribed topic, on the reader thread: cheap enough for every scrape."""
        if self._rconn is None:
            return Backlog()
        pairs = sorted({(sub.group, t) for sub in self._subscriptions for t in sub.topics})
        handled = {  # partitions a local member consumes now (one it lost is counted from the commit)
            (m.group, *tp): offset for m in self._members for tp, offset in m.handled.items() if tp in m.position
        }
        conn = self._rconn

        def read() -> Backlog:
            out = Backlog()
            for group, topic in pairs:
                physical = self.physical(topic)
                rows = conn.execute(
                    "SELECT p.partition, p.next_offset, o.next_offset, "
                    "(SELECT MIN(e.offset) FROM events e WHERE e.topic=p.topic AND e.partition=p.partition) "
                    "FROM partitions p LEFT JOIN group_offsets o "
                    "ON o.group_id=? AND o.topic=p.topic AND o.partition=p.partition WHERE p.topic=?",
                    (group, physical),
                ).fetchall()
                lag = 0
                for partition, end, committed, oldest in rows:
                    done = committed if committed is not None else (oldest if oldest is not None else end)
                    lag += max(0, end - max(done, handled.get((group, physical, partition), done)))
                out.lag[(group, topic)] = lag
            for topic in sorted({t for _, t in pairs}):
                sql = "SELECT COUNT(*) FROM events WHERE topic=?"
                (n,) = conn.execute(sql, (self.physical(dlq(topic)),)).fetchone()
                out.dlq[topic] = int(n)
            return out

        try:
            return await self._run_read(read)
        except sqlite3.Error as exc:
            raise BusUnavailable(f"embedded bus at {self.path}: {exc}") from exc

    async def read_topic(self, topic: str) -> list[Record]:
        if not self._started:
            await self.start()
        physical = self.physical(topic)

        def read() -> list[tuple[Any, ...]]:
            assert self._rconn is not None
            return self._rconn.execute(
                "SELECT partition, offset, key, value, headers FROM events WHERE topic=? ORDER BY partition, offset",
                (physical,),
            ).fetchall()

        rows = await self._run_read(read)
        return [
            Record(topic, partition, offset, key, bytes(value), _decode_headers(headers))
            for partition, offset, key, value, headers in rows
        ]

    # --------------------------------------------------------------------------------------- publish

    async def publish_raw(
        self, topic: str, key: str | None, value: bytes, headers: Sequence[tuple[str, bytes]] = STRUCTURED_HEADERS
    ) -> None:
        if not self._started:
            raise BusUnavailable("embedded bus is not started")
        started = time.perf_counter()
        await self._enqueue([(topic, key, value, headers)])
        _PUBLISH_SECONDS.observe(time.perf_counter() - started)

    async def publish_many(self, records: Sequence[tuple[str, str | None, bytes]]) -> list[BaseException | None]:
        """One wait for the whole list: the records join the same group commit, so they share its fate."""
        if not self._started:
            error = BusUnavailable("embedded bus is not started")
            return [error for _ in records]
        if not records:
            return []  # no record would ever settle the shared future
        started = time.perf_counter()
        try:
            await self._enqueue([(topic, key, value, STRUCTURED_HEADERS) for topic, key, value in records])
        except BusUnavailable as exc:
            return [exc for _ in records]
        elapsed = time.perf_counter() - started
        for _ in records:
            _PUBLISH_SECONDS.observe(elapsed)
        return [None] * len(records)

    def _enqueue(
        self, records: Sequence[tuple[str, str | None, bytes, Sequence[tuple[str, bytes]]]]
    ) -> asyncio.Future[None]:
        """Queue records for the next group commit (starting the flusher if idle).

        They share one future: they are queued together, so they are written in one transaction and
        committed or refused together (a future per record only cost CPU under load).
        """
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        pending = self._pending
        for topic, key, value, headers in records:
            pending.append(_Pending(self.physical(topic), key, value, headers, fut))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush())
        return fut

    async def _flush(self) -> None:
        loop = asyncio.get_running_loop()
        while self._pending:
            batch, self._pending = self._pending, []
            try:
                await loop.run_in_executor(self._writer, self._write_batch, batch)
            except Exception as exc:  # sqlite3.Error, OSError: the log did not take it
                for item in batch:
                    if not item.future.done():
                        item.future.set_exception(BusUnavailable(f"embedded bus write failed: {exc}"))
                continue
            for item in batch:
                if not item.future.done():
                    item.future.set_result(None)
            self._wake_local()

    def _wake_local(self) -> None:
        for wakeup in self._wakeups:
            wakeup.set()

    def _partitions_of(self, conn: sqlite3.Connection, topic: str) -> int:
        n = self._topic_partitions.get(topic)
        if n is None:
            conn.execute("INSERT OR IGNORE INTO topics(name, partitions) VALUES (?, ?)", (topic, self.partitions))
            n = conn.execute("SELECT partitions FROM topics WHERE name=?", (topic,)).fetchone()[0]
            self._topic_partitions[topic] = n
        return n

    def _write_batch(self, batch: list[_Pending]) -> None:
        conn = self._wconn
        if conn is None:
            raise BusUnavailable("embedded bus is closed")
        now = time.time()
        conn.execute("BEGIN IMMEDIATE")
        try:
            next_offsets: dict[TopicPartition, int] = {}
            rows: list[tuple[Any, ...]] = []
            for item in batch:
                tp = (item.topic, partition_for(item.key, self._partitions_of(conn, item.topic)))
                offset = next_offsets.get(tp)
                if offset is None:
                    row = conn.execute(
                        "SELECT next_offset FROM partitions WHERE topic=? AND partition=?", tp
                    ).fetchone()
                    offset = row[0] if row else 0
                next_offsets[tp] = offset + 1
                rows.append((*tp, offset, item.key, item.value, _encode_headers(item.headers), now))
            # Whole batches as multi-row statements: the writer binds them in C and keeps the GIL only
            # briefly (executemany takes it back for every row, against a busy event loop).
            for i in range(0, len(rows), _ROWS_PER_STATEMENT):
                chunk = rows[i : i + _ROWS_PER_STATEMENT]
                conn.execute(
                    "INSERT INTO events(topic, partition, offset, key, value, headers, ts) VALUES "
                    + ",".join(["(?,?,?,?,?,?,?)"] * len(chunk)),
                    [v for r in chunk for v in r],
                )
            heads = [v for (t, p), o in next_offsets.items() for v in (t, p, o)]
            conn.execute(
                "INSERT INTO partitions(topic, partition, next_offset) VALUES "
                + ",".join(["(?,?,?)"] * len(next_offsets))
                + " ON CONFLICT(topic, partition) DO UPDATE SET next_offset=excluded.next_offset",
                heads,
            )
            if now - self._last_prune > 60:
                self._last_prune = now
                conn.execute("DELETE FROM events WHERE ts < ?", (now - self.retention_seconds,))
            conn.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            raise

    # ------------------------------------------------------------------------------------ partitions

    async def partition_count(self, topic: str) -> int:
        """From ``topics`` (created on first use with the configured count, as a publish does)."""
        if not self._started:
            await self.start()
        physical = self.physical(topic)
        n = self._topic_partitions.get(physical)
        if n is not None:
            return n

        def count() -> int:
            conn = self._wconn
            if conn is None:
                raise BusUnavailable("embedded bus is closed")
            return self._partitions_of(conn, physical)

        try:
            return await self._run_write(count)
        except sqlite3.Error as exc:
            raise BusUnavailable(f"embedded bus at {self.path}: {exc}") from exc

    async def partition_of(self, topic: str, key: str) -> int:
        return partition_for(key, await self.partition_count(topic))

    # ------------------------------------------------------------------------------------- subscribe

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
        if not self._started:
            await self.start()
        member = _Member(group=group, topics=tuple(sorted(self.physical(t) for t in topics)))
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
        stopping = asyncio.Event()
        wakeup = member.wakeup
        self._wakeups.add(wakeup)

        async def _stop() -> None:
            stopping.set()
            wakeup.set()
            self._wakeups.discard(wakeup)
            # Let the in-flight handler finish (the loop checks ``stopping`` between events), within a grace.
            # The heartbeat goes on (taking nothing new): the leases hold until they are handed over.
            done, _ = await asyncio.wait({loop_task}, timeout=self.shutdown_grace)
            if not done:
                log.warning("bus.stop_grace_exceeded", group=group, grace=self.shutdown_grace)
                loop_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await loop_task
            # Commit what was handled, tell the subscriber, then let the others take the partitions at once.
            with contextlib.suppress(Exception):
                await self._run_write(self._commit, member)
            lost, member.lost = member.lost, set()
            await sub.partitions_revoked(frozenset((self.logical(t), p) for t, p in lost))
            await self._tell_revoked(sub, member, set(member.held))
            hb_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await hb_task
            with contextlib.suppress(Exception):
                await self._run_write(self._leave, member, member.leased())
            member.position.clear()
            member.assigning.clear()
            if sub in self._subscriptions:
                self._subscriptions.remove(sub)
            if member in self._members:
                self._members.remove(member)

        def _assigned() -> bool:
            # Holds every partition of its fair share (on_assigned returned), and its leases are not
            # about to lapse.
            fresh = time.monotonic() - member.last_sync < self.session_timeout / 2
            return fresh and not member.waiting_for and not member.assigning

        def _assignment() -> TopicPartitions:
            return frozenset((self.logical(t), p) for t, p in member.held)

        sub._stop = _stop
        sub._assigned = _assigned
        sub._assignment = _assignment
        self._subscriptions.append(sub)
        self._members.append(member)
        try:
            await self._rebalance(member, from_beginning)
        except BaseException:
            self._wakeups.discard(wakeup)
            self._subscriptions.remove(sub)
            self._members.remove(member)
            raise
        if on_assigned is None:  # nothing to wait for: consume at once
            member.held |= set(member.assigning)
            member.adopt(dict(member.assigning))
        if not member.assigning:
            sub.ready.set()  # else once on_assigned returned (the consume loop)
        loop_task = asyncio.create_task(self._consume(sub, member, stopping, from_beginning))
        hb_task = asyncio.create_task(self._heartbeat(sub, member, stopping, from_beginning))
        return sub

    async def _run_write(self, fn: Callable[[*_Ts], _T], *args: *_Ts) -> _T:
        return await asyncio.get_running_loop().run_in_executor(self._writer, fn, *args)

    async def _run_read(self, fn: Callable[[*_Ts], _T], *args: *_Ts) -> _T:
        return await asyncio.get_running_loop().run_in_executor(self._reader, fn, *args)

    async def _heartbeat(
        self, sub: Subscription, member: _Member, stopping: asyncio.Event, from_beginning: bool
    ) -> None:
        # Runs until the partitions were handed over (also while stopping: then it takes nothing new).
        while True:
            await asyncio.sleep(self.heartbeat_interval)
            try:
                await self._rebalance(member, from_beginning, taking=not stopping.is_set())
            except Exception:
                log.exception("bus.heartbeat_failed", group=member.group)

    async def _rebalance(self, member: _Member, from_beginning: bool, *, taking: bool = True) -> None:
        """Heartbeat: renew the leases held, take the free ones of our share, and tell the consume loop
        what it has to hand over (``to_release``), to take (``assigning``) or lost (``lost``)."""
        async with member.lock:
            started = time.monotonic()
            leased = member.leased()
            # A partition to hand over is renewed while the loop finishes the delivery in hand, within a
            # grace: a stuck handler must not hold the hand-over up forever.
            renew = {
                tp
                for tp in leased
                if not taking or tp in member.revoking or member.to_release.get(tp, _FOREVER) > started
            }
            owned, positions, desired = await self._run_write(
                self._sync_membership, member, leased, renew, from_beginning, taking
            )
            member.lease_until = started + self.session_timeout
            member.waiting_for = desired - owned
            member.last_sync = time.monotonic()
            current = member.leased()
            for tp in current - owned - member.revoking:  # lost (lapsed lease): never commit for it again
                member.position.pop(tp, None)
                member.handled.pop(tp, None)
                member.committed.pop(tp, None)
                member.assigning.pop(tp, None)
                member.to_release.pop(tp, None)
                if tp in member.held:
                    member.held.discard(tp)
                    member.lost.add(tp)
            new = {tp: positions[tp] for tp in owned - current if tp in positions}
            member.assigning.update(new)
            for tp in set(member.position) | set(member.assigning):
                if tp in desired:
                    member.to_release.pop(tp, None)
                elif tp not in member.to_release:
                    member.to_release[tp] = member.last_sync + self.shutdown_grace
            if new or member.lost or member.to_release:
                member.wakeup.set()

    def _sync_membership(
        self,
        member: _Member,
        leased: set[TopicPartition],
        renew: set[TopicPartition],
        from_beginning: bool,
        taking: bool,
    ) -> tuple[set[TopicPartition], dict[TopicPartition, int], set[TopicPartition]]:
        """Heartbeat, decide this member's fair share, take free leases of it, renew ``renew``.

        ``leased``: what the member believes it holds (the loop's view, read on the event loop). A lease
        outside our share is only ever renewed, never taken again: one just released stays released.
        """
        conn = self._wconn
        assert conn is not None
        now = time.time()
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute(
                "INSERT INTO group_members(group_id, member_id, topics, heartbeat) VALUES (?, ?, ?, ?) "
                "ON CONFLICT(group_id, member_id) DO UPDATE SET heartbeat=excluded.heartbeat",
                (member.group, member.member_id, json.dumps(member.topics), now),
            )
            conn.execute(
                "DELETE FROM group_members WHERE group_id=? AND heartbeat < ?",
                (member.group, now - self.session_timeout),
            )
            live = conn.execute(
                "SELECT member_id, topics FROM group_members WHERE group_id=? ORDER BY member_id",
                (member.group,),
            ).fetchall()
            desired: set[TopicPartition] = set()
            for topic in member.topics if taking else ():
                members = [m for m, t in live if topic in json.loads(t)]
                idx = members.index(member.member_id)
                for p in range(self._partitions_of(conn, topic)):
                    if p % len(members) == idx:
                        desired.add((topic, p))
            expires = now + self.session_timeout
            for topic, p in desired:
                conn.execute(
                    "INSERT INTO partition_leases(group_id, topic, partition, owner, expires) "
                    "VALUES (?, ?, ?, ?, ?) ON CONFLICT(group_id, topic, partition) DO UPDATE SET "
                    "owner=excluded.owner, expires=excluded.expires "
                    "WHERE partition_leases.owner=excluded.owner OR partition_leases.expires < ?",
                    (member.group, topic, p, member.member_id, expires, now),
                )
            for topic, p in renew - desired:
                conn.execute(
                    "UPDATE partition_leases SET expires=? WHERE group_id=? AND topic=? AND partition=? "
                    "AND owner=? AND expires>?",
                    (expires, member.group, topic, p, member.member_id, now),
                )
            owned = {
                (t, p)
                for t, p in conn.execute(
                    "SELECT topic, partition FROM partition_leases WHERE group_id=? AND owner=? AND expires>?",
                    (member.group, member.member_id, now),
                )
                if t in member.topics
            }
            positions: dict[TopicPartition, int] = {}
            for tp in owned - leased:
                row = conn.execute(
                    "SELECT next_offset FROM group_offsets WHERE group_id=? AND topic=? AND partition=?",
                    (member.group, *tp),
                ).fetchone()
                if row is not None:
                    positions[tp] = row[0]
                elif from_beginning:
                    positions[tp] = 0
                else:
                    head = conn.execute(
                        "SELECT next_offset FROM partitions WHERE topic=? AND partition=?", tp
                    ).fetchone()
                    positions[tp] = head[0] if head else 0
            conn.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            raise
        return owned, positions, desired

    def _commit(self, member: _Member, release: set[TopicPartition] | None = None) -> None:
        """Commit handled offsets, fenced: only partitions this member still holds a lease on; then
        give up the leases of ``release``."""
        conn = self._wconn
        if conn is None:
            return
        now = time.time()
        todo = {tp: o for tp, o in dict(member.handled).items() if member.committed.get(tp) != o}
        if not todo and not release:
            return
        conn.execute("BEGIN IMMEDIATE")
        try:
            for (topic, p), offset in todo.items():
                held = conn.execute(
                    "SELECT 1 FROM partition_leases WHERE group_id=? AND topic=? AND partition=? "
                    "AND owner=? AND expires>?",
                    (member.group, topic, p, member.member_id, now),
                ).fetchone()
                if held:
                    conn.execute(
                        "INSERT INTO group_offsets(group_id, topic, partition, next_offset) VALUES (?,?,?,?) "
                        "ON CONFLICT(group_id, topic, partition) DO UPDATE SET next_offset=excluded.next_offset",
                        (member.group, topic, p, offset),
                    )
            for topic, p in release or ():
                conn.execute(
                    "UPDATE partition_leases SET expires=0 WHERE group_id=? AND topic=? AND partition=? AND owner=?",
                    (member.group, topic, p, member.member_id),
                )
            conn.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            raise
        member.committed.update(todo)
        member.last_commit = time.monotonic()

    def _leave(self, member: _Member, leased: set[TopicPartition]) -> None:
        self._commit(member, release=leased)
        conn = self._wconn
        if conn is not None:
            conn.execute("DELETE FROM group_members WHERE group_id=? AND member_id=?", (member.group, member.member_id))

    # ----------------------------------------------------------------------------- hand-over

    async def _tell_revoked(self, sub: Subscription, member: _Member, tps: set[TopicPartition]) -> None:
        """on_revoked for those of ``tps`` the subscriber was told of (``held`` until it returned). Only
        the consume loop calls it, and ``stop`` once the loop ended: never twice at a time."""
        gone = member.held & tps
        if gone:
            await sub.partitions_revoked(frozenset((self.logical(t), p) for t, p in gone))
            member.held -= gone

    async def _hand_over(self, sub: Subscription, member: _Member) -> None:
        """Partitions no longer our share: commit what was handled, tell the subscriber, release."""
        release = set(member.to_release)
        consumed = {tp for tp in release if tp in member.position}
        # Out of the consumption, still leased (and renewed) until released below.
        member.revoking |= consumed
        await self._run_write(self._commit, member, None)
        for tp in consumed:
            member.position.pop(tp, None)
            member.handled.pop(tp, None)
            member.committed.pop(tp, None)
        await self._tell_revoked(sub, member, consumed)
        async with member.lock:
            # Those not consumed yet (on_assigned was not called for them) go back as they are.
            waiting = {tp for tp in release if tp in member.assigning}
            await self._run_write(self._commit, member, consumed | waiting)
            for tp in waiting:
                member.assigning.pop(tp, None)
            member.revoking -= consumed
            for tp in release:
                member.to_release.pop(tp, None)

    async def _take_over(self, sub: Subscription, member: _Member) -> None:
        """Newly leased partitions: on_assigned first, then they are consumed."""
        offsets = dict(member.assigning)
        member.held |= set(offsets)
        await sub.partitions_assigned(frozenset((self.logical(t), p) for t, p in offsets))
        member.adopt(offsets)
        member.wakeup.set()

    def _fetch(
        self, positions: list[tuple[TopicPartition, int]], last_version: int | None
    ) -> tuple[int, list[tuple[TopicPartition, list[tuple[Any, ...]]]]]:
        conn = self._rconn
        if conn is None:
            raise BusUnavailable("embedded bus is closed")
        version = conn.execute("PRAGMA data_version").fetchone()[0]
        out = []
        for tp, pos in positions:
            rows = conn.execute(
                "SELECT offset, key, value, headers FROM events WHERE topic=? AND partition=? AND offset>=? "
                "ORDER BY offset LIMIT ?",
                (*tp, pos, self.fetch_batch),
            ).fetchall()
            if rows:
                out.append((tp, rows))
        return version, out

    def _peek_version(self) -> int | None:
        """``PRAGMA data_version`` of a connection of its own, asked on the event loop's thread: a few µs,
        against ~150 µs of CPU for a trip to the reader's thread, and an idle consumer asks every 10 ms
        (6 % of a core per idle service, measured). The connection never waits (``timeout=0``): where
        SQLite would, this answers ``None`` and the caller asks on the reader's thread instead. The value
        is this connection's own counter: it changes whenever another connection committed since."""
        conn = self._pconn
        if conn is None:
            if self._rconn is None:
                raise BusUnavailable("embedded bus is closed")
            conn = self._pconn = sqlite3.connect(self.path, timeout=0, isolation_level=None)
        try:
            return int(conn.execute("PRAGMA data_version").fetchone()[0])
        except sqlite3.OperationalError:
            return None

    def _version(self) -> int:
        conn = self._rconn
        if conn is None:
            raise BusUnavailable("embedded bus is closed")
        return int(conn.execute("PRAGMA data_version").fetchone()[0])

    async def _consume(self, sub: Subscription, member: _Member, stopping: asyncio.Event, from_beginning: bool) -> None:
        wakeup = member.wakeup

        def _owner_of(tp: TopicPartition):  # type: ignore[no-untyped-def]
            # A rebalance interrupts a delivery that waits out an outage, as a stop does.
            return lambda: not stopping.is_set() and tp in member.position and tp not in member.to_release

        def _leases_fresh() -> bool:
            return time.monotonic() < member.lease_until

        idle = self.poll_min
        last_version: int | None = None  # the reader's data_version at the last fetch
        peeked: int | None = None  # the loop's own connection's, at its last look (_peek_version)
        dirty = True  # something may be there: read without waiting for a version change
        backlog = False  # the last fetch filled a whole batch: more is waiting, fetch it at once
        while not stopping.is_set():
            try:
                if not _leases_fresh():
                    # No heartbeat for a session timeout (the process was paused, the log was locked):
                    # our leases may be someone else's by now. Find out before delivering anything more.
                    await self._rebalance(member, from_beginning)
                if member.lost:
                    lost, member.lost = set(member.lost), set()
                    log.warning("bus.partitions_lost", group=member.group, partitions=sorted(lost))
                    await sub.partitions_revoked(frozenset((self.logical(t), p) for t, p in lost))
                if member.to_release:
                    await self._hand_over(sub, member)
                if member.assigning:
                    await self._take_over(sub, member)
                    dirty = True
                if not member.assigning:
                    sub.ready.set()
                if not dirty:
                    version = self._peek_version()
                    if version is not None:
                        dirty = version != peeked or wakeup.is_set()
                        peeked = version
                    else:  # SQLite would wait (busy): ask on the reader's thread, which may
                        version = await self._run_read(self._version)
                        dirty = version != last_version or wakeup.is_set()
                if dirty:
                    if sub.gather and not backlog:
                        # Let records gather into one batch (subscribe's ``gather``); a stop cuts it short.
                        with contextlib.suppress(TimeoutError):
                            async with asyncio.timeout(sub.gather):
                                await stopping.wait()
                        if stopping.is_set():
                            continue
                    wakeup.clear()
                    positions = list(member.position.items())
                    last_version, batches = await self._run_read(self._fetch, positions, last_version)
                    sub.recover()  # the log answers again (a handler's stall ends inside _deliver)
                    dirty = False
                    backlog = any(len(rows) >= self.fetch_batch for _, rows in batches)
                    if batches:
                        step = MAX_BATCH if sub.batch_handler is not None else 1
                        for tp, rows in batches:
                            records = [
                                Record(self.logical(tp[0]), tp[1], offset, key, value, _decode_headers(headers))
                                for offset, key, value, headers in rows
                            ]

                            def handled(record: Record, tp: TopicPartition = tp) -> None:
                                if tp in member.position:  # not lost meanwhile
                                    member.handled[tp] = member.position[tp] = record.offset + 1

                            for start in range(0, len(records), step):
                                if stopping.is_set() or tp not in member.position or tp in member.to_release:
                                    break  # a hand-over is due: it goes first
                                if not _leases_fresh():
                                    break
                                try:
                                    await self._deliver_many(sub, records[start : start + step], _owner_of(tp), handled)
                                except DeliveryInterrupted:
                                    break  # not handled: whoever owns the partition next gets it again
                        # Committed every commit_interval, not after each batch: a commit is an
                        # fsync'd write on the log that intake's publishes queue behind too. What
                        # was handled is committed within the interval (the idle path below); a
                        # crash replays at most that much, which handlers dedupe.
                        if time.monotonic() - member.last_commit >= self.commit_interval:
                            await self._run_write(self._commit, member, None)
                        dirty = True  # there may be more than one batch
                        idle = self.poll_min
                        continue
                if member.handled != member.committed and time.monotonic() - member.last_commit >= self.commit_interval:
                    await self._run_write(self._commit, member, None)
                # asyncio.timeout, not wait_for: no task per wait, and an idle consumer waits 100 times a second.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(idle):
                        await wakeup.wait()
                    dirty = True
                idle = min(idle * 2, self.poll_max)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the bus's own storage failed (disk full, locked...): wait, not ready
                log.exception("bus.consume_failed", group=member.group)
                sub.stall(exc)
                await asyncio.sleep(0.5)
                dirty = True
