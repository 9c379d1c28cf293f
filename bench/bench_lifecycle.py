"""The router's own cost of one contact's lifecycle, without HTTP, streams or a bus: where its CPU goes.

``bench_e2e.py`` measures what a caller feels, on a machine where the load generator, intake and the
agents' streams compete with the router for two cores, so its "router CPU per contact" moves by ±10 %
from run to run. This one drives the router's use cases in one process (``RouterService`` on a migrated
database, as ``tests/router/conftest.py::bare_service`` does) and counts what a lifecycle costs the
service core alone: the consumed ``contact.requested``, the offer, the accept and the complete (the
strategy's wrap-up set to 0 s, so the agent is free again at once), SQL statements and CPU seconds.

Each round sends ``--group`` contacts at once: they arrive as one consumed batch, are offered at the end
of that batch's own transaction, and their agents accept and complete concurrently, so group commit puts
each step of a round in one transaction (``--group 1`` is a lifecycle alone). Printed per database and
group size: statements, commits and CPU ms per lifecycle, and the wall time. Side by side, the same with
the writer's statements through the async stack instead of inline on the loop's thread
(``shared/sqlite_inline.py``): "sqlite async", one trip to aiosqlite's thread per statement
(``shared/sqlite_one_hop.py``), and "sqlite stock", SQLAlchemy's stock aiosqlite adapter with four.

    python bench/bench_lifecycle.py [--contacts 400] [--groups 1,20] [--postgres postgresql+asyncpg://...]
    python bench/bench_lifecycle.py --profile 30     # cProfile's top functions by own time, group 20
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import os
import pstats
import sqlite3
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiosqlite
import yaml
from sqlalchemy import event
from sqlalchemy.dialects.sqlite.aiosqlite import AsyncAdapt_aiosqlite_dbapi

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from services.router.auth import Principal  # noqa: E402
from services.router.service import RouterService  # noqa: E402
from services.router.settings import RouterSettings  # noqa: E402
from services.router.strategy import DEFAULT_STRATEGY_PATH  # noqa: E402
from shared.events import (  # noqa: E402
    AgentStatus,
    Channel,
    ContactRequested,
    Customer,
    Outcome,
    make_event,
)
from tests.router.conftest import bare_service, chat_agent  # noqa: E402


@dataclass
class Row:
    database: str
    group: int
    lifecycles: int
    statements: float
    commits: float
    cpu_ms: float
    wall_ms: float


def no_wrap_up_strategy(directory: Path) -> Path:
    doc = yaml.safe_load(DEFAULT_STRATEGY_PATH.read_text())
    for policy in doc.get("channels", {}).values():
        policy["wrap_up_seconds"] = 0
    path = directory / "strategy.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


async def lifecycles(service: RouterService, contacts: int, group: int, first: int) -> None:
    """``contacts`` lifecycles, ``group`` at a time: one batch in and offered, accepts and completes at once."""
    for start in range(first, first + contacts, group):
        batch = [
            make_event(
                ContactRequested(
                    contact_id=f"c{n}",
                    source="bench",
                    external_id=str(n),
                    channel=Channel.CHAT,
                    customer=Customer(id=f"x{n}"),
                    within_business_hours=True,
                ),
                source="bench",
            )
            for n in range(start, min(start + group, first + contacts))
        ]
        await service.handle_events(batch)  # the group's offers are made in its transaction
        offers = service.open_offers.values()
        if len(offers) != len(batch):
            raise RuntimeError(f"{len(offers)} offers for {len(batch)} contacts: not enough free agents")
        await asyncio.gather(*(service.accept(o.offer_id, Principal.agent(o.agent_id)) for o in offers))
        await asyncio.gather(
            *(service.complete(o.contact_id, Principal.agent(o.agent_id), Outcome(), None) for o in offers)
        )


async def measure(
    url: str, label: str, contacts: int, group: int, directory: Path, *, inline: bool = True, **engine_kwargs: Any
) -> Row:
    settings = RouterSettings(presence_grace_seconds=1e9, sqlite_inline_writes=inline)
    strategy = no_wrap_up_strategy(directory)
    async with bare_service(url, strategy=strategy, settings=settings, **engine_kwargs) as service:
        for n in range(max(group, 20)):
            await service.register_agent(f"a{n}", chat_agent(f"a{n}"), AgentStatus.AVAILABLE)
            service.stream_opened(f"a{n}")
        await lifecycles(service, 2 * group, group, first=0)  # warm the statement caches
        counted = {"statements": 0, "commits": 0}
        sync_engine = service.write_engine

        def statement(*_args: object) -> None:
            counted["statements"] += 1

        def commit(*_args: object) -> None:
            counted["commits"] += 1

        event.listen(sync_engine, "before_cursor_execute", statement)
        event.listen(sync_engine, "commit", commit)
        cpu, wall = time.process_time(), time.perf_counter()
        await lifecycles(service, contacts, group, first=10**6)
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        event.remove(sync_engine, "before_cursor_execute", statement)
        event.remove(sync_engine, "commit", commit)
    return Row(
        label,
        group,
        contacts,
        counted["statements"] / contacts,
        counted["commits"] / contacts,
        1000 * cpu / contacts,
        1000 * wall / contacts,
    )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--contacts", type=int, default=400)
    parser.add_argument("--groups", type=lambda s: [int(x) for x in s.split(",")], default=[1, 20])
    parser.add_argument("--postgres", help="a PostgreSQL URL whose server gets a fresh database for the run")
    parser.add_argument("--no-baseline", action="store_true", help="skip the async-stack rows")
    parser.add_argument("--profile", type=int, default=0, help="print cProfile's top N by own time (SQLite)")
    args = parser.parse_args()

    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="bench-lifecycle-") as tmp:
        for group in args.groups:
            directory = Path(tmp) / f"sqlite-{group}"
            directory.mkdir()
            url = f"sqlite+aiosqlite:///{directory / 'router.sqlite3'}"
            rows.append(await measure(url, "sqlite", args.contacts, group, directory))
            if not args.no_baseline:
                # The same through the async stack: the writer's statements on aiosqlite's thread, one trip
                # each (shared/sqlite_one_hop.py), then on SQLAlchemy's stock adapter (four trips each).
                url = f"sqlite+aiosqlite:///{directory / 'async.sqlite3'}"
                rows.append(await measure(url, "sqlite async", args.contacts, group, directory, inline=False))
                stock = AsyncAdapt_aiosqlite_dbapi(aiosqlite, sqlite3)
                url = f"sqlite+aiosqlite:///{directory / 'stock.sqlite3'}"
                rows.append(
                    await measure(url, "sqlite stock", args.contacts, group, directory, inline=False, module=stock)
                )
            if args.postgres:
                from tests.postgres import ENV, fresh_database

                os.environ[ENV] = args.postgres
                async with fresh_database("sb_bench_lifecycle") as pg_url:
                    rows.append(await measure(pg_url, "postgresql", args.contacts, group, directory))
        if args.profile:
            directory = Path(tmp) / "profiled"
            directory.mkdir()
            profiler = cProfile.Profile()
            profiler.enable()
            await measure(f"sqlite+aiosqlite:///{directory / 'r.sqlite3'}", "sqlite", args.contacts, 20, directory)
            profiler.disable()

    print(f"bench_lifecycle: {args.contacts} lifecycles per row (contact.requested, offer, accept, complete)")
    print(f"{'database':<14}{'group':>6}{'statements/c':>14}{'commits/c':>11}{'CPU ms/c':>10}{'wall ms/c':>11}")
    for r in rows:
        print(f"{r.database:<14}{r.group:>6}{r.statements:>14.1f}{r.commits:>11.2f}{r.cpu_ms:>10.2f}{r.wall_ms:>11.2f}")
    if args.profile:
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(args.profile)
        print(out.getvalue())


if __name__ == "__main__":
    asyncio.run(main())
