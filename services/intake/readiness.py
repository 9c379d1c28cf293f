"""Intake's readiness: can it persist a request right now? Answered within a bounded time.

Issue 13: ``/readyz`` said ready through a full disk, a read-only file system and a stuck bus writer
while every request got 503, and hung ~12 s with the store locked. A read (``SELECT 1``) proves none of
that, so each check here takes the path a request takes, and each is bounded by ``timeout``:

* ``bus``: the bus can take a publish (embedded: its writer thread answers and can take the write lock);
* ``idempotency_store``: the store can start a write (SQLite: its write lock is free);
* ``disk``: the directories holding the embedded bus and the store take a small write and ``fsync``
  (a full disk or a read-only file system fails it; SQLite might not notice until a write needs space);
* ``recent_requests``: the last accept attempt did not fail for lack of the bus or the store, unless
  that was more than ``failure_window`` seconds ago (without traffic the probes above decide alone).

A check that does not answer in time is "not ready": a stuck dependency is not a ready one.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from shared.observability import Check

PROBE_BYTES = 4096


def bounded(check: Check, timeout: float) -> Check:
    """``check`` answering ``False`` when it raises or takes longer than ``timeout`` seconds."""

    async def run() -> bool:
        try:
            async with asyncio.timeout(timeout):
                return bool(await check())
        except Exception:  # TimeoutError included
            return False

    return run


class DiskProbe:
    """Write, fsync and remove a small file in each directory; one probe in flight per directory.

    Runs in a worker thread (a hung disk must not block the event loop); a probe still running from an
    earlier call means the disk is not answering, so the next call says so without starting another.
    """

    def __init__(self, directories: list[Path]) -> None:
        self.directories = sorted(set(directories))
        self._inflight: dict[Path, asyncio.Future[None]] = {}

    async def __call__(self) -> bool:
        results = await asyncio.gather(*(self._probe(d) for d in self.directories), return_exceptions=True)
        return all(r is True for r in results)

    async def _probe(self, directory: Path) -> bool:
        running = self._inflight.get(directory)
        if running is not None and not running.done():
            return False
        future = asyncio.ensure_future(asyncio.to_thread(_write_probe, directory))
        self._inflight[directory] = future
        await asyncio.shield(future)  # the caller's timeout must not orphan a running probe unnoticed
        return True


def _write_probe(directory: Path) -> None:
    path = directory / f".intake-write-probe-{os.getpid()}"
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, b"\0" * PROBE_BYTES)
            os.fsync(fd)
        finally:
            os.close(fd)
    finally:
        try:
            path.unlink()
        except FileNotFoundError:
            pass


class RecentOutcomes:
    """Whether the latest accept attempt could persist, remembered for ``failure_window`` seconds."""

    def __init__(self, failure_window: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.failure_window = failure_window
        self._clock = clock
        self._last_success = float("-inf")
        self._last_failure = float("-inf")

    def succeeded(self) -> None:
        self._last_success = self._clock()

    def failed(self) -> None:
        self._last_failure = self._clock()

    async def ok(self) -> bool:
        if self._last_failure <= self._last_success:
            return True
        return self._clock() - self._last_failure > self.failure_window


def persist_checks(
    *,
    bus_writable: Callable[[], Awaitable[bool]],
    store_writable: Callable[[], Awaitable[bool]],
    database: Check | None,
    directories: list[Path],
    outcomes: RecentOutcomes,
    timeout: float,
) -> dict[str, Check]:
    """The named, time-bounded checks of intake's ``/readyz``."""
    checks: dict[str, Check] = {
        "bus": bounded(bus_writable, timeout),
        "idempotency_store": bounded(store_writable, timeout),
    }
    if database is not None:
        checks["database"] = bounded(database, timeout)
    if directories:
        checks["disk"] = bounded(DiskProbe(directories), timeout)
    checks["recent_requests"] = outcomes.ok
    return checks
