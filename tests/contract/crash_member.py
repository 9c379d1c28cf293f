"""A consumer-group member in its own process, for tests that kill it with SIGKILL.

Usage: python -m tests.contract.crash_member <kind> <config-json> <topic> <group> <log-file> <mode>

It appends every event id it receives to ``log-file`` (flushed and fsynced, so the test sees it even
after the kill). ``mode`` is ``block`` (the handler never returns: the offset is never committed),
``handle`` (the handler returns at once) or ``hooks`` (as ``handle``, and every ``on_assigned`` /
``on_revoked`` call is appended to ``<log-file>.hooks`` as a JSON line: hook, partitions, wall time).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time

from shared.bus.base import Record
from shared.events import Envelope
from tests.contract.support import build_bus


async def main(kind: str, config: str, topic: str, group: str, log_file: str, mode: str) -> None:
    bus = build_bus(kind, json.loads(config))
    await bus.start()

    async def handler(envelope: Envelope, _record: Record) -> None:
        with open(log_file, "a") as out:
            out.write(envelope.id + "\n")
            out.flush()
            os.fsync(out.fileno())
        if mode == "block":
            await asyncio.Event().wait()

    def hook(name: str):  # type: ignore[no-untyped-def]
        async def record(tps: frozenset[tuple[str, int]]) -> None:
            line = json.dumps({"hook": name, "partitions": sorted(tps), "t": time.time()})
            with open(log_file + ".hooks", "a") as out:
                out.write(line + "\n")
                out.flush()
                os.fsync(out.fileno())

        return record

    hooks = {"on_assigned": hook("assigned"), "on_revoked": hook("revoked")} if mode == "hooks" else {}
    sub = await bus.subscribe([topic], group, handler, **hooks)
    await sub.ready.wait()
    with open(log_file + ".ready", "w") as out:
        out.write("ready\n")
    await asyncio.Event().wait()  # until killed


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:7]))
