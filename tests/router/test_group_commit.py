"""Group commit: actions that arrive together share a transaction, yet each keeps its own answer, and a
failure in the middle of a batch of events leaves nothing half-done (rolled back, then one by one)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import func, select

from services.router.errors import Conflict
from services.router.group_commit import GroupCommit
from services.router.service import RouterService
from services.router.store import contacts
from services.router.use_cases.inbound_events import EVENT_HANDLERS
from shared.events import ContactRequested, make_event
from tests.router.conftest import Router, contact


class FakeTx:
    def __init__(self, log: list[str]) -> None:
        self.log = log
        self.writes: list[str] = []


def recording_unit_of_work(log: list[str], fail_commit: list[bool]):  # type: ignore[no-untyped-def]
    @contextlib.asynccontextmanager
    async def unit_of_work() -> AsyncIterator[FakeTx]:
        tx = FakeTx(log)
        log.append("begin")
        yield tx
        if fail_commit and fail_commit.pop(0):
            log.append("rollback")
            raise RuntimeError("commit failed")
        log.append("commit:" + ",".join(tx.writes))

    return unit_of_work


async def test_operations_queued_together_share_one_commit_and_keep_their_own_answers() -> None:
    log: list[str] = []
    writes: GroupCommit[FakeTx] = GroupCommit(recording_unit_of_work(log, []), refusals=(Conflict,))

    def op(name: str, refuse: bool = False):  # type: ignore[no-untyped-def]
        async def run(tx: FakeTx) -> str:
            if refuse:
                raise Conflict(f"{name} refused")
            tx.writes.append(name)
            return name.upper()

        return run

    results = await asyncio.gather(
        writes.run(op("a")), writes.run(op("b", refuse=True)), writes.run(op("c")), return_exceptions=True
    )
    assert results[0] == "A" and results[2] == "C"
    assert isinstance(results[1], Conflict)
    assert log == ["begin", "commit:a,c"]  # one transaction; the refusal did not spoil the others
    await writes.stop()


async def test_a_failed_group_is_run_again_one_by_one_so_only_the_bad_operation_fails() -> None:
    log: list[str] = []
    writes: GroupCommit[FakeTx] = GroupCommit(recording_unit_of_work(log, []))

    async def good(tx: FakeTx) -> str:
        tx.writes.append("good")
        return "ok"

    async def bad(tx: FakeTx) -> str:
        raise ValueError("a bug")

    results = await asyncio.gather(writes.run(good), writes.run(bad), writes.run(good), return_exceptions=True)
    assert results[0] == "ok" and results[2] == "ok" and isinstance(results[1], ValueError)
    assert log == ["begin", "begin", "commit:good", "begin", "begin", "commit:good"]
    await writes.stop()


async def test_an_answer_means_committed() -> None:
    log: list[str] = []
    writes: GroupCommit[FakeTx] = GroupCommit(recording_unit_of_work(log, [True]))

    async def good(tx: FakeTx) -> str:
        tx.writes.append("x")
        return "ok"

    with pytest.raises(RuntimeError, match="commit failed"):
        await writes.run(good)  # the commit failed: the caller hears it, never a success
    assert await writes.run(good) == "ok"
    assert log == ["begin", "rollback", "begin", "commit:x"]
    await writes.stop()


async def test_a_failure_in_the_middle_of_a_batch_of_events_leaves_nothing_half_done(
    router: Router, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The third of five contacts fails once: the batch rolls back (the engine is rebuilt), then the
    events run one by one; every contact is queued exactly once and the failing one on its retry."""
    service: RouterService = router.service
    requested = [contact(f"b{n}") for n in range(5)]
    events = [make_event(c, source="t") for c in requested]
    real = EVENT_HANDLERS[ContactRequested]
    failed: list[str] = []

    async def flaky(svc, tx, event):  # type: ignore[no-untyped-def]
        if event.contact_id == requested[2].contact_id and not failed:
            failed.append(event.contact_id)
            raise ValueError("a bug that happens once")
        await real(svc, tx, event)

    monkeypatch.setitem(EVENT_HANDLERS, ContactRequested, flaky)
    with pytest.raises(ValueError):
        await service.handle_events(events)  # the bus then hands them over one by one
    async with service.sessionmaker() as s:
        assert (await s.execute(select(func.count()).select_from(contacts))).scalar_one() == 0
    for e in events:
        await service.handle_event(e)
    await service.handle_events(events)  # redelivered as a batch: deduped, no second effect
    async with service.sessionmaker() as s:
        ids = sorted((await s.execute(select(contacts.c.contact_id))).scalars())
    assert ids == sorted(c.contact_id for c in requested)
    assert sorted(await router.queue_ids()) == ids


async def test_stopping_lets_the_group_in_flight_commit() -> None:
    log: list[str] = []
    writes: GroupCommit[FakeTx] = GroupCommit(recording_unit_of_work(log, []))
    entered = asyncio.Event()

    async def slow(tx: FakeTx) -> str:
        entered.set()
        await asyncio.sleep(0.2)
        tx.writes.append("slow")
        return "done"

    pending = asyncio.create_task(writes.run(slow))
    await entered.wait()
    await writes.stop()  # while the group is inside its transaction
    assert await pending == "done"
    assert log == ["begin", "commit:slow"]
