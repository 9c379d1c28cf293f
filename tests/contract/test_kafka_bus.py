"""What only the Kafka bus has to show: bounded failure when the broker is away, and topic creation."""

from __future__ import annotations

import asyncio
import json
import socket
import uuid

import pytest

from shared.bus.base import BusUnavailable
from shared.bus.kafka import KafkaBus
from shared.events import AgentStatus, AgentStatusChanged, make_event
from shared.topics import ROUTING, dlq


def unused_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_unreachable_broker_fails_fast_instead_of_hanging() -> None:
    """Intake must be able to answer 503: publish raises BusUnavailable within its timeout."""
    bus = KafkaBus(f"127.0.0.1:{unused_port()}", publish_timeout=1.0, ping_timeout=0.5)
    event = make_event(AgentStatusChanged(agent_id="a-1", status=AgentStatus.AVAILABLE), source="test")
    async with asyncio.timeout(15):  # generous bound: the point is that it returns at all
        await bus.start()  # a service may boot while the broker is down; it is just not ready
        assert await bus.ping() is False
        with pytest.raises(BusUnavailable):
            await bus.publish(ROUTING, event, "default/main")
        with pytest.raises(BusUnavailable):  # and again: no poisoned state after a failed attempt
            await bus.publish_raw(ROUTING, "default/main", event.to_bytes())
        # A list (intake's batch, the outbox relay's) is answered per record, within the timeout too.
        results = await bus.publish_many([(ROUTING, "default/main", event.to_bytes())] * 3)
        assert len(results) == 3 and all(isinstance(r, BusUnavailable) for r in results), results
        await bus.stop()


@pytest.mark.kafka
async def test_topics_and_dead_letter_topics_are_created_with_the_configured_layout(
    kafka_bootstrap_servers: str,
) -> None:
    from aiokafka.admin import AIOKafkaAdminClient

    prefix = f"layout-{uuid.uuid4().hex[:8]}."
    bus = KafkaBus(kafka_bootstrap_servers, partitions=3, replication_factor=1, topic_prefix=prefix)
    await bus.start()
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap_servers)
    await admin.start()
    try:
        async with asyncio.timeout(30):
            assert await bus.ping() is True
            await bus.emit(AgentStatusChanged(agent_id="a-1", status=AgentStatus.BREAK), source="test")
            described = await admin.describe_topics([prefix + ROUTING, prefix + dlq(ROUTING)])
        assert {t["topic"]: len(t["partitions"]) for t in described} == {
            prefix + ROUTING: 3,
            prefix + dlq(ROUTING): 3,
        }
        # Creating what exists is fine (another instance got there first).
        fresh = KafkaBus(kafka_bootstrap_servers, partitions=3, topic_prefix=prefix)
        await fresh.ensure_topics([prefix + ROUTING])
        await fresh.stop()
    finally:
        await admin.close()
        await bus.stop()


@pytest.mark.kafka
async def test_a_bus_internal_failure_mid_batch_rewinds_instead_of_skipping(
    kafka_bootstrap_servers: str,
) -> None:
    """If delivery itself breaks (not the handler: that is retried and dead-lettered), the consumer
    re-reads the rest of the batch: nothing fetched but not handled is skipped by later commits."""
    prefix = f"rewind-{uuid.uuid4().hex[:8]}."
    bus = KafkaBus(kafka_bootstrap_servers, partitions=2, topic_prefix=prefix)
    await bus.start()
    events = [
        make_event(AgentStatusChanged(agent_id=f"a-{i}", status=AgentStatus.BUSY), source="test") for i in range(40)
    ]
    broken_once = {events[5].id}
    handled: list[str] = []
    real_deliver = bus._deliver

    async def flaky_deliver(sub, record, *args):  # type: ignore[no-untyped-def]
        env_id = json.loads(record.value)["id"]
        if env_id in broken_once:
            broken_once.clear()
            raise RuntimeError("bus-internal failure")
        await real_deliver(sub, record, *args)

    bus._deliver = flaky_deliver  # type: ignore[method-assign]

    async def handler(env, _record):  # type: ignore[no-untyped-def]
        handled.append(env.id)

    try:
        for i, env in enumerate(events):  # published before subscribing: one big first batch
            await bus.publish(ROUTING, env, f"key-{i % 5}")
        sub = await bus.subscribe([ROUTING], "rewind", handler)
        async with asyncio.timeout(30):
            while set(handled) != {e.id for e in events}:
                await asyncio.sleep(0.05)
        assert sub.ready.is_set()
        assert not broken_once  # the failure did happen
    finally:
        await bus.stop()


@pytest.mark.kafka
async def test_a_group_formed_before_its_topic_existed_is_assigned_once_the_topic_appears(
    kafka_bootstrap_servers: str,
) -> None:
    """A consumer whose group formed while its topic had no partition metadata (created meanwhile by
    another process, or not yet visible on a slow or new cluster) picks the topic up within seconds,
    not at aiokafka's default 5-minute metadata refresh. This failed before the consumers' metadata age
    was bounded (tests/router/test_kafka.py once waited out its 30 s that way on a busy machine)."""
    prefix = f"late-topic-{uuid.uuid4().hex[:8]}."
    consuming = KafkaBus(kafka_bootstrap_servers, partitions=2, topic_prefix=prefix)
    publishing = KafkaBus(kafka_bootstrap_servers, partitions=2, topic_prefix=prefix)

    async def not_yet(_topics: object) -> None:
        return None  # the consumer's own topic creation did not get there first

    consuming.ensure_topics = not_yet  # type: ignore[method-assign]
    seen: list[str] = []

    async def handler(env, _record):  # type: ignore[no-untyped-def]
        seen.append(env.id)

    await consuming.start()
    await publishing.start()
    try:
        await consuming.subscribe([ROUTING], "late", handler)
        await asyncio.sleep(3)  # the group forms and is assigned nothing: the topic does not exist
        event = make_event(AgentStatusChanged(agent_id="a-1", status=AgentStatus.BREAK), source="test")
        await publishing.publish(ROUTING, event, "default/main")  # creates the topic
        async with asyncio.timeout(30):
            while event.id not in seen:
                await asyncio.sleep(0.1)
    finally:
        await consuming.stop()
        await publishing.stop()
