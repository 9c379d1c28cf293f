"""The callback service's units of work on SQLite run inline (``inline_unit_of_work``): their statements on
the event loop's thread, only the commit on the writer's thread; a failed one leaves nothing behind."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import event, func, select

from services.callback.clock import ManualClock
from services.callback.consumers import CallbackConsumer
from services.callback.service import CallbackService
from services.callback.store import Commitment
from services.callback.unit_of_work import UnitOfWork
from services.callback.use_cases import inbound_events
from shared.events import CallbackRequested, CallbackScheduled, Envelope
from tests.callback.conftest import Outbox, ServiceFactory, berlin
from tests.callback.helpers import requested

pytestmark = pytest.mark.asyncio


def scheduled_count() -> float:
    """``callback.scheduled`` events counted so far (counted only once their transaction committed)."""
    total = 0.0
    for metric in REGISTRY.collect():
        for sample in metric.samples:
            if sample.name == "switchboard_callback_events_total" and sample.labels["event"] == "callback.scheduled":
                total += sample.value
    return total


async def count(service: CallbackService) -> int:
    async with service.sessionmaker() as s:
        return (await s.execute(select(func.count()).select_from(Commitment))).scalar_one()


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    """SQLite only: PostgreSQL keeps the async path (the rest of the suite runs both)."""
    return f"sqlite+aiosqlite:///{tmp_path / 'callback.sqlite3'}"


@pytest.fixture
def service(make_service: ServiceFactory) -> CallbackService:
    service = make_service()
    assert service.inline_writes is not None
    return service


async def test_a_consumed_request_is_written_on_the_loops_thread_and_committed_on_the_writers(
    service: CallbackService, staged: Outbox, clock: ManualClock
) -> None:
    assert service.inline_writes is not None
    ran: list[tuple[str, str]] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        ran.append((threading.current_thread().name, statement.split()[0].upper()))

    def committed(_conn: Any) -> None:
        ran.append((threading.current_thread().name, "COMMIT"))

    engine = service.inline_writes.engine
    event.listen(engine, "before_cursor_execute", record)
    event.listen(engine, "commit", committed)
    try:
        clock.set(berlin(2026, 3, 25, 10, 0))
        assert await CallbackConsumer(service).handle(requested("cust-1", berlin(2026, 3, 25, 10, 0)))
    finally:
        event.remove(engine, "before_cursor_execute", record)
        event.remove(engine, "commit", committed)

    loop_thread = threading.current_thread().name
    statements = [(thread, kind) for thread, kind in ran if kind != "COMMIT"]
    assert statements[0] == (loop_thread, "BEGIN")  # BEGIN IMMEDIATE: the lock was free, taken inline
    assert {"INSERT", "SELECT"} <= {kind for _, kind in statements}
    assert all(thread == loop_thread for thread, _ in statements), ran  # no trip per statement
    [(commit_thread, _)] = [entry for entry in ran if entry[1] == "COMMIT"]
    assert commit_thread.startswith("sqlite-writer"), ran  # the fsync waits off the loop
    # Committed for every other connection to see, the event staged with it.
    assert await count(service) == 1
    assert [type(e.payload) for e in await staged.take()] == [CallbackScheduled]


async def test_a_failed_unit_of_work_leaves_no_row_no_event_and_counts_no_event(
    service: CallbackService, staged: Outbox, clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The request's use case writes its commitment and stages ``callback.scheduled``, then the unit of
    work fails: rolled back, nothing committed, nothing counted; the next one succeeds as usual."""
    clock.set(berlin(2026, 3, 25, 10, 0))
    before = scheduled_count()
    consumer = CallbackConsumer(service)
    real = inbound_events.EVENT_HANDLERS[CallbackRequested]

    class Boom(Exception):
        pass

    async def then_fail(callbacks: CallbackService, tx: UnitOfWork, env: Envelope) -> None:
        await real(callbacks, tx, env)
        await tx.session.flush()  # the rows are written, inside the transaction
        raise Boom

    monkeypatch.setitem(inbound_events.EVENT_HANDLERS, CallbackRequested, then_fail)
    with pytest.raises(Boom):
        await consumer.handle(requested("cust-1", berlin(2026, 3, 25, 10, 0)))
    assert await count(service) == 0
    assert await staged.take() == []
    assert scheduled_count() == before
    # The writer's connection is usable again at once, and a good unit of work counts its event once.
    monkeypatch.setitem(inbound_events.EVENT_HANDLERS, CallbackRequested, real)
    assert await consumer.handle(requested("cust-1", berlin(2026, 3, 25, 10, 0)))
    assert await count(service) == 1
    assert scheduled_count() == before + 1
