"""Embedded bus: publish->handler latency across processes and durable publish throughput.

Prints a table. The baseline is a bare SQLite INSERT+COMMIT loop with the same durability settings
(WAL, synchronous=FULL) run side by side, so the ratio says what the bus costs on top of the disk.

    python bench/bench_bus.py [--events 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sqlite3
import sys
import tempfile
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from shared import topics  # noqa: E402
from shared.bus.embedded import EmbeddedBus  # noqa: E402
from shared.events import AgentStatus, AgentStatusChanged  # noqa: E402

PRODUCER = textwrap.dedent(
    """
    import asyncio, sys, time
    from shared.bus.embedded import EmbeddedBus
    from shared.events import AgentStatusChanged, AgentStatus
    async def main():
        bus = EmbeddedBus(sys.argv[1]); await bus.start()
        for i in range(int(sys.argv[2])):
            await bus.emit(AgentStatusChanged(agent_id=f"a{i % 50}", status=AgentStatus.BUSY,
                                              reason=repr(time.time())), source="bench")
            await asyncio.sleep(0.002)
        await bus.stop()
    asyncio.run(main())
    """
)


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * p))]


async def cross_process_latency(path: Path, n: int) -> list[float]:
    bus = EmbeddedBus(path)
    await bus.start()
    lat: list[float] = []

    async def handler(env, _rec):  # type: ignore[no-untyped-def]
        lat.append(time.time() - float(env.payload.reason))

    sub = await bus.subscribe([topics.ROUTING], "bench", handler, from_beginning=False)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", PRODUCER, str(path), str(n), env={**os.environ, "PYTHONPATH": str(ROOT)}
    )
    await proc.wait()
    async with asyncio.timeout(30):
        while len(lat) < n:
            await asyncio.sleep(0.01)
    await sub.stop()
    await bus.stop()
    return lat


async def concurrent_publish(path: Path, n: int) -> float:
    bus = EmbeddedBus(path)
    await bus.start()
    data = AgentStatusChanged(agent_id="a", status=AgentStatus.BUSY)
    t0 = time.perf_counter()
    await asyncio.gather(*(bus.emit(data, source="bench") for _ in range(n)))
    dt = time.perf_counter() - t0
    await bus.stop()
    return n / dt


def bare_sqlite_commits(path: Path, n: int) -> float:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v BLOB)")
    payload = b"x" * 400
    t0 = time.perf_counter()
    for _ in range(n):
        conn.execute("BEGIN")
        conn.execute("INSERT INTO t(v) VALUES (?)", (payload,))
        conn.execute("COMMIT")
    dt = time.perf_counter() - t0
    conn.close()
    return n / dt


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=2000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as d:
        lat = asyncio.run(cross_process_latency(Path(d) / "lat.sqlite3", min(args.events, 1000)))
        bus_rate = asyncio.run(concurrent_publish(Path(d) / "pub.sqlite3", args.events))
        bare_rate = bare_sqlite_commits(Path(d) / "bare.sqlite3", args.events)
    print(f"{'measure':<52}{'value':>12}")
    print("-" * 64)
    print(f"{'cross-process publish->handler p50 (ms)':<52}{pct(lat, 0.50) * 1000:>12.2f}")
    print(f"{'cross-process publish->handler p99 (ms)':<52}{pct(lat, 0.99) * 1000:>12.2f}")
    print(f"{'cross-process publish->handler max (ms)':<52}{max(lat) * 1000:>12.2f}")
    print(f"{'durable publishes/s, concurrent (group commit)':<52}{bus_rate:>12.0f}")
    print(f"{'baseline: bare SQLite INSERT+COMMIT/s (FULL sync)':<52}{bare_rate:>12.0f}")
    print(f"{'ratio bus / baseline':<52}{bus_rate / bare_rate:>12.2f}x")


if __name__ == "__main__":
    main()
