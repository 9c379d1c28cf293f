"""Group commit: actions that arrive together share a transaction, yet each keeps its own answer, and a
failure in the middle of a batch of events leaves nothing half-done (rolled back, then one by one)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import event, func, select

from services.router.errors import Conflict
from services.router.group_commit import GroupCommit
from services.router.service import RouterService
from services.router.store import contacts
from services.router.use_cases.inbound_events import EVENT_HANDLERS
from shared.events import AgentStatus, ContactRequested, make_event
from tests.router.conftest import Router, bare_service, chat_agent, contact


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


def finishing(log: list[str], fail: list[bool]):  # type: ignore[no-untyped-def]
    """A finish step that writes "finish" into the group's transaction, failing while ``fail`` says so."""

    async def finish(tx: FakeTx) -> None:
        if fail and fail.pop(0):
            raise ValueError("the finish step failed")
        tx.writes.append("finish")

    return finish


async def test_the_finish_step_ends_each_group_in_its_transaction() -> None:
    log: list[str] = []
    writes: GroupCommit[FakeTx] = GroupCommit(recording_unit_of_work(log, []), finish=finishing(log, []))

    async def op(tx: FakeTx) -> str:
        tx.writes.append("op")
        return "ok"

    assert await asyncio.gather(writes.run(op), writes.run(op)) == ["ok", "ok"]
    assert log == ["begin", "commit:op,op,finish"]  # one commit for the changes and what they made possible
    await writes.stop()


@pytest.mark.parametrize("size", [1, 3])
async def test_a_failing_finish_step_never_fails_the_operations_of_its_group(size: int) -> None:
    log: list[str] = []
    dropped: list[bool] = []
    writes: GroupCommit[FakeTx] = GroupCommit(
        recording_unit_of_work(log, []), finish=finishing(log, [True]), finish_dropped=lambda: dropped.append(True)
    )

    async def op(tx: FakeTx) -> str:
        tx.writes.append("op")
        return "ok"

    assert await asyncio.gather(*(writes.run(op) for _ in range(size))) == ["ok"] * size
    # The group failed in its finish step: each operation commits again alone, without it, and the
    # owner of the step hears that it was dropped (the router's tick then routes on its own).
    assert log == ["begin"] + ["begin", "commit:op"] * size
    assert dropped == [True]
    await writes.stop()


async def test_a_failing_commit_after_the_finish_step_commits_the_operations_without_it() -> None:
    """The commit may fail because of what the finish step wrote: a lone operation is tried once more
    without it, rather than failing for the step's sake."""
    log: list[str] = []
    writes: GroupCommit[FakeTx] = GroupCommit(recording_unit_of_work(log, [True]), finish=finishing(log, []))

    async def op(tx: FakeTx) -> str:
        tx.writes.append("op")
        return "ok"

    assert await writes.run(op) == "ok"
    assert log == ["begin", "rollback", "begin", "commit:op"]
    await writes.stop()


async def test_a_consumed_contact_is_offered_in_the_commit_that_records_it(tmp_path: Path) -> None:
    """With an agent free, the contact and its offer are one commit: no second transaction (and fsync)
    between the event and the offer on the agent's stream."""
    async with bare_service(f"sqlite+aiosqlite:///{tmp_path / 'router.sqlite3'}") as service:
        await service.register_agent("alice", chat_agent("A"), AgentStatus.AVAILABLE)
        commits: list[str] = []
        event.listen(service.write_engine, "commit", lambda _conn: commits.append("commit"))
        stream = service.hub.open("alice")
        await service.handle_event(make_event(contact("c1"), source="t"))
        assert commits == ["commit"]
        message = stream.get_nowait()  # pushed once that commit is done, before any tick
        assert message is not None and message.event == "offer"
        async with service.sessionmaker() as s:
            assert (await s.execute(select(contacts.c.state))).scalar_one() == "offered"
