"""Group commit: state changes that arrive together share one transaction, one lease renewal, one commit.

Every commit waits for the disk (an fsync: ~3 ms on this machine's SQLite, a WAL flush on PostgreSQL),
and the router has one writer. One transaction per agent action and per consumed event capped it at a
few hundred changes a second however idle its CPU was. Here a single writer task takes whatever is
queued, runs each operation in arrival order inside one unit of work, commits once, and only then answers
each caller: an answer still means "durable", and the order of changes is the order of arrival.

An operation that is *refused* (it raises one of ``refusals`` before it changed anything, by the
router's convention) answers its caller with the refusal and the others still commit. Any other failure
rolls the group back; the operations are then run again each in a unit of work of its own (unless the
failure is an outage, which they would all meet again), so one bad operation fails alone.

A group may end with a ``finish`` step in the same transaction: the router's routing, which offers what
the group queued or freed, so a consumed contact is recorded and offered in one commit instead of two.
``finish`` is never what fails an operation: a group that fails once it ran is run again without it
(one by one, as above), and ``finish_dropped`` is told, so the step can be retried on its own.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import structlog

from services.router import metrics
from shared.faults import is_transient

log = structlog.get_logger(__name__)

Tx = TypeVar("Tx")
T = TypeVar("T")

MAX_GROUP = 256  # operations per commit: bounds one transaction and the wait of the first in line


@dataclass
class _Queued(Generic[Tx]):
    operation: Callable[[Tx], Awaitable[Any]]
    future: asyncio.Future[Any] = field(default_factory=lambda: asyncio.get_running_loop().create_future())


class GroupCommit(Generic[Tx]):
    """One writer: queued operations run in order, many to a transaction; callers wait for the commit."""

    def __init__(
        self,
        unit_of_work: Callable[[], AbstractAsyncContextManager[Tx]],
        *,
        refusals: tuple[type[BaseException], ...] = (),
        max_group: int = MAX_GROUP,
        finish: Callable[[Tx], Awaitable[object]] | None = None,
        finish_dropped: Callable[[], None] = lambda: None,
    ) -> None:
        self._unit_of_work = unit_of_work
        self._refusals = refusals
        self._finish = finish
        self._finish_dropped = finish_dropped
        self._max_group = max_group
        self._queue: list[_Queued[Tx]] = []
        self._queued = asyncio.Event()
        self._worker: asyncio.Task[None] | None = None
        self._committing = False

    async def run(self, operation: Callable[[Tx], Awaitable[T]]) -> T:
        """Run ``operation`` in the next group; returns its result once the group committed."""
        item: _Queued[Tx] = _Queued(operation)
        self._queue.append(item)
        self._queued.set()
        if self._worker is None or self._worker.done():
            self._worker = asyncio.create_task(self._work(), name="router-group-commit")
        result: T = await item.future
        return result

    async def stop(self) -> None:
        """Finish what is queued, then stop the writer."""
        if self._worker is None:
            return
        while self._queue or self._committing:  # a group in flight finishes: its callers hear the commit
            await asyncio.sleep(0.01)
        self._worker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._worker
        self._worker = None

    async def _work(self) -> None:
        while True:
            await self._queued.wait()
            self._queued.clear()
            while self._queue:
                group, self._queue = self._queue[: self._max_group], self._queue[self._max_group :]
                self._committing = True
                try:
                    await self._commit(group)
                except asyncio.CancelledError:
                    for item in group + self._queue:
                        if not item.future.done():
                            item.future.set_exception(RuntimeError("the router is stopping"))
                    raise
                except Exception:  # never leave a caller waiting, never let the writer die
                    log.exception("router.group_commit_failed")
                    for item in group:
                        if not item.future.done():
                            item.future.set_exception(RuntimeError("the group commit failed"))
                finally:
                    self._committing = False

    async def _commit(self, group: list[_Queued[Tx]], *, finish: bool = True) -> None:
        answers: list[tuple[_Queued[Tx], Any, BaseException | None]] = []
        finished = False  # the finish step ran in this attempt: a failure from here on may be its doing
        try:
            async with self._unit_of_work() as tx:
                for item in group:
                    try:
                        answers.append((item, await item.operation(tx), None))
                    except self._refusals as refused:
                        answers.append((item, None, refused))
                if finish and self._finish is not None:
                    finished = True
                    await self._finish(tx)
        except Exception as exc:
            if not is_transient(exc) and (finished or len(group) > 1):
                log.warning("router.group_failed_one_by_one", size=len(group), after_finish=finished, error=repr(exc))
                for item in group:
                    await self._commit([item], finish=False)
                if self._finish is not None:
                    self._finish_dropped()
                return
            for item in group:
                if not item.future.done():
                    item.future.set_exception(exc)
            return
        metrics.GROUP_COMMIT_SIZE.observe(len(group))
        for item, value, refusal in answers:
            if item.future.done():
                continue  # the caller went away (a closed connection); the change is committed anyway
            if refusal is not None:
                item.future.set_exception(refusal)
            else:
                item.future.set_result(value)
