"""Group commit: many concurrent callers, one round trip per batch.

Requests arrive concurrently and each wants a database or bus round trip. Queued up, one round trip
serves everything that arrived while the previous one was in flight: under no load a call costs one
round trip, under load N concurrent calls cost about one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class GroupCommit(Generic[T, R]):
    """Runs ``fn`` over batches of submitted items; each caller gets its own item's result.

    ``fn`` takes a list of items and returns one result per item, in order; if it raises, every caller
    of that batch gets the exception. One batch runs at a time; what arrives meanwhile is the next.
    """

    def __init__(
        self,
        fn: Callable[[list[T]], Awaitable[list[R]]],
        *,
        max_batch: int = 500,
        error: Callable[[BaseException], Exception] = lambda exc: RuntimeError(str(exc)),
    ) -> None:
        self._fn = fn
        self._max = max_batch
        self._error = error  # what callers get when a batch dies of a non-Exception (cancellation)
        self._pending: list[tuple[T, asyncio.Future[R]]] = []
        self._running = False
        self._task: asyncio.Task[None] | None = None  # held: the loop keeps only weak references

    async def submit(self, item: T) -> R:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[R] = loop.create_future()
        self._pending.append((item, fut))
        if not self._running:
            self._running = True
            self._task = loop.create_task(self._drain())
        return await fut

    async def _drain(self) -> None:
        try:
            while self._pending:
                batch, self._pending = self._pending[: self._max], self._pending[self._max :]
                try:
                    results = await self._fn([item for item, _ in batch])
                except BaseException as exc:  # noqa: BLE001 - handed to every waiter
                    for _, fut in batch:
                        if not fut.done():
                            fut.set_exception(exc if isinstance(exc, Exception) else self._error(exc))
                    if not isinstance(exc, Exception):
                        raise
                    continue
                for (_, fut), result in zip(batch, results, strict=True):
                    if not fut.done():
                        fut.set_result(result)
        finally:
            self._running = False
