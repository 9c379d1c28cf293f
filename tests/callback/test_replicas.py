"""Several scheduler replicas over one database: claims with FOR UPDATE SKIP LOCKED (PostgreSQL) and a
per-domain dispatch lock mean a free agent is never counted twice and no event is emitted twice."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest

from services.callback.clock import ManualClock
from services.callback.consumers import CallbackConsumer
from shared.events import AgentStatus
from tests.callback.conftest import Outbox, ServiceFactory, berlin, short
from tests.callback.helpers import agent_status, requested

pytestmark = pytest.mark.asyncio


async def test_concurrent_replicas_release_once_within_capacity(
    make_service: ServiceFactory, staged: Outbox, clock: ManualClock, database_url: str
) -> None:
    replicas = [make_service() for _ in range(3)]
    consumer = CallbackConsumer(replicas[0])
    t = berlin(2026, 3, 25, 9, 0)
    clock.set(t)
    for i in range(5):
        await consumer.handle(agent_status(f"a{i}", AgentStatus.AVAILABLE, t))
    for i in range(20):
        await consumer.handle(requested(f"c{i}", berlin(2026, 3, 25, 8, 0)))
    await staged.take()
    # All replicas tick at once, repeatedly; later the deadline passes for everyone still open.
    for _ in range(5):
        await asyncio.gather(*(r.tick() for r in replicas))
    clock.set(berlin(2026, 3, 25, 17, 0))
    for _ in range(3):
        await asyncio.gather(*(r.tick() for r in replicas))
    clock.set(berlin(2026, 3, 25, 18, 0))
    for _ in range(3):
        await asyncio.gather(*(r.tick() for r in replicas))
    events = await staged.take()
    kinds = Counter(short(e.type) for e in events)
    # 5 released at 9:00 (capacity), re-offered once each when at risk; by 17:00 nobody has accepted them
    # for hours, past the release hold, so the 5 free agents count as free again: 5 more released.
    assert kinds["callback.due"] == 5 + 5 + 5
    assert kinds["callback.at_risk"] == 20 and kinds["callback.breached"] == 20
    assert len({e.id for e in events}) == len(events)  # nothing emitted twice
    per_callback = Counter((short(e.type), e.subject) for e in events)
    assert max(per_callback.values()) == 2 and all(
        n == 1 for (kind, _), n in per_callback.items() if kind != "callback.due"
    )
