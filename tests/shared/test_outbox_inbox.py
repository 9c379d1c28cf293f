"""Inbox dedupe and outbox relay on SQLite and PostgreSQL, publishing through the real embedded bus."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from shared import db, inbox, outbox, topics
from shared.bus.base import BusUnavailable, Record
from shared.bus.embedded import EmbeddedBus
from shared.events import AgentStatus, AgentStatusChanged, Envelope


async def _engine(url: str):  # type: ignore[no-untyped-def]
    engine = db.make_engine(url)
    async with engine.begin() as conn:
        await conn.run_sync(db.MESSAGING_METADATA.create_all)
    return engine


async def test_inbox_marks_an_event_once_per_consumer(database_url: str) -> None:
    engine = await _engine(database_url)
    sm = db.make_sessionmaker(engine)
    try:
        async with sm() as s, s.begin():
            assert await inbox.first_time(s, "router", "evt-1") is True
        async with sm() as s, s.begin():
            assert await inbox.first_time(s, "router", "evt-1") is False
            assert await inbox.first_time(s, "callback", "evt-1") is True  # another consumer: its own inbox
            assert await inbox.was_processed(s, "router", "evt-1")
        # A rolled-back transaction did not mark anything: the redelivery is handled for real.
        async with sm() as s:
            async with s.begin():
                assert await inbox.first_time(s, "router", "evt-2") is True
                await s.rollback()
        async with sm() as s, s.begin():
            assert await inbox.first_time(s, "router", "evt-2") is True
    finally:
        await engine.dispose()


@contextlib.asynccontextmanager
async def observed_relay(
    database_url: str, bus: EmbeddedBus, **relay_options: float
) -> AsyncIterator[tuple[async_sessionmaker[AsyncSession], list[Envelope], outbox.OutboxRelay]]:
    """A fresh outbox database, its relay (not started) onto ``bus`` (started here), and the events an
    observer of ``routing`` received; everything stopped afterwards."""
    engine = await _engine(database_url)
    sm = db.make_sessionmaker(engine)
    await bus.start()
    received: list[Envelope] = []

    async def handler(env: Envelope, _rec: Record) -> None:
        received.append(env)

    sub = await bus.subscribe([topics.ROUTING], "observer", handler)
    relay = outbox.OutboxRelay(sm, bus, **relay_options)
    try:
        yield sm, received, relay
    finally:
        await relay.stop()
        await sub.stop()
        await bus.stop()
        await engine.dispose()


async def relay_until(relay: outbox.OutboxRelay, received: list[Envelope], count: int) -> None:
    """Start the relay and wait until ``count`` events arrived, and a little longer for any extra one."""
    await relay.start()
    relay.notify()
    async with asyncio.timeout(10):
        while len(received) < count:
            await asyncio.sleep(0.01)
    await asyncio.sleep(0.2)


async def outbox_rows(sm: async_sessionmaker[AsyncSession]) -> int:
    async with sm() as s:
        return int((await s.execute(select(func.count()).select_from(outbox.outbox))).scalar_one())


async def test_outbox_relay_publishes_committed_events_in_order_and_only_those(
    database_url: str, tmp_path: Path
) -> None:
    bus = EmbeddedBus(tmp_path / "bus.sqlite3", partitions=2)
    async with observed_relay(database_url, bus) as (sm, received, relay):
        staged = []
        async with sm() as s, s.begin():
            for i in range(5):
                data = AgentStatusChanged(agent_id="a1", status=AgentStatus.AVAILABLE, reason=f"n{i}")
                staged.append(await outbox.stage(s, data, source="test"))
        async with sm() as s:  # rolled back: must never be published
            async with s.begin():
                await outbox.stage(s, AgentStatusChanged(agent_id="a1", status=AgentStatus.BREAK), source="t")
                await s.rollback()
        # Nothing goes out before the relay runs: the outbox is the only path to the bus.
        await asyncio.sleep(0.05)
        assert received == []
        await relay_until(relay, received, 5)
        assert [e.id for e in received] == [e.id for e in staged]
        assert [e.payload.reason for e in received] == [f"n{i}" for i in range(5)]  # type: ignore[attr-defined]
        assert await outbox_rows(sm) == 0


async def test_a_gathering_relay_sends_the_commits_of_its_wait_together(database_url: str, tmp_path: Path) -> None:
    """``gather``: after a drain that published, commits made within the wait go to the bus in one batch
    (one transaction and one bus round trip), in order; with no wait each went alone."""
    bus = EmbeddedBus(tmp_path / "bus.sqlite3", partitions=2)
    async with observed_relay(database_url, bus, gather=0.6) as (sm, received, relay):
        batches: list[int] = []
        publish_many = bus.publish_many

        async def counted(records: Sequence[tuple[str, str | None, bytes]]) -> list[BaseException | None]:
            batches.append(len(records))
            return await publish_many(records)

        bus.publish_many = counted  # type: ignore[method-assign]
        staged: list[Envelope] = []

        async def commit(i: int) -> None:
            async with sm() as s, s.begin():
                data = AgentStatusChanged(agent_id="a1", status=AgentStatus.AVAILABLE, reason=f"n{i}")
                staged.append(await outbox.stage(s, data, source="test"))
            relay.notify()

        await commit(0)
        await relay.start()
        async with asyncio.timeout(10):
            while not batches:
                await asyncio.sleep(0.01)
        for i in range(1, 5):  # a commit every 40 ms, all within the wait
            await commit(i)
            await asyncio.sleep(0.04)
        async with asyncio.timeout(10):
            while len(received) < 5:
                await asyncio.sleep(0.01)
        assert batches == [1, 4]
        assert [e.id for e in received] == [e.id for e in staged]
        assert await outbox_rows(sm) == 0


async def test_outbox_rows_survive_until_the_bus_takes_them(database_url: str, tmp_path: Path) -> None:
    """Bus down: rows stay; once the bus is back, the same events (same ids) go out."""
    engine = await _engine(database_url)
    sm = db.make_sessionmaker(engine)
    bus = EmbeddedBus(tmp_path / "bus.sqlite3")  # not started: publish raises BusUnavailable
    relay = outbox.OutboxRelay(sm, bus, idle_interval=0.05)
    try:
        async with sm() as s, s.begin():
            env = await outbox.stage(s, AgentStatusChanged(agent_id="a9", status=AgentStatus.OFFLINE), source="t")
        await relay.start()
        await asyncio.sleep(0.3)
        assert await outbox_rows(sm) == 1
        await bus.start()
        got: list[str] = []

        async def handler(e: Envelope, _r: Record) -> None:
            got.append(e.id)

        sub = await bus.subscribe([topics.ROUTING], "g", handler)
        async with asyncio.timeout(15):
            while not got:
                relay.notify()
                await asyncio.sleep(0.05)
        assert got == [env.id]
        await sub.stop()
    finally:
        await relay.stop()
        await bus.stop()
        await engine.dispose()


class DiesMidList(EmbeddedBus):
    """The real embedded bus, except that its first ``publish_many`` takes the first ``taken`` records
    and refuses the rest, as a bus that went away in the middle of a list; it records each list."""

    def __init__(self, path: Path, taken: int) -> None:
        super().__init__(path, partitions=1)
        self.taken = taken
        self.lists: list[int] = []

    async def publish_many(self, records: Sequence[tuple[str, str | None, bytes]]) -> list[BaseException | None]:
        self.lists.append(len(records))
        if len(self.lists) > 1:
            return await super().publish_many(records)
        head = await super().publish_many(records[: self.taken])
        return [*head, *[BusUnavailable("gone mid-list")] * (len(records) - self.taken)]


async def test_the_relay_publishes_a_batch_as_one_list_and_keeps_only_what_the_bus_refused(
    database_url: str, tmp_path: Path
) -> None:
    """A batch is one ``publish_many`` (one bus commit, one Kafka round trip), not one wait per row. When
    the bus refuses part of it, the rows it took are deleted and the rest go out on the next pass, in
    order and once each: no key's events overtake, none is lost, none is sent twice."""
    bus = DiesMidList(tmp_path / "bus.sqlite3", taken=2)
    async with observed_relay(database_url, bus, idle_interval=0.05) as (sm, received, relay):
        async with sm() as s, s.begin():
            staged = [
                await outbox.stage(
                    s, AgentStatusChanged(agent_id="a1", status=AgentStatus.AVAILABLE, reason=f"n{i}"), source="t"
                )
                for i in range(5)
            ]
        await relay_until(relay, received, 5)
        assert [e.id for e in received] == [e.id for e in staged]
        assert bus.lists[:2] == [5, 3]  # all five in one list; then the three refused, again in one
        assert await outbox_rows(sm) == 0


async def test_inbox_purge_forgets_only_ids_older_than_the_window(database_url: str) -> None:
    from datetime import timedelta

    from shared.events import utcnow

    engine = await _engine(database_url)
    sm = db.make_sessionmaker(engine)
    try:
        async with sm() as s, s.begin():
            assert await inbox.first_time(s, "router", "old")
            await s.execute(
                inbox.processed_events.update()
                .where(inbox.processed_events.c.event_id == "old")
                .values(processed_at=utcnow() - timedelta(days=9))
            )
            assert await inbox.first_time(s, "router", "recent")
        async with sm() as s, s.begin():
            assert await inbox.purge(s, utcnow() - timedelta(days=8)) == 1
        async with sm() as s, s.begin():
            assert not await inbox.was_processed(s, "router", "old")
            assert await inbox.was_processed(s, "router", "recent")
    finally:
        await engine.dispose()
