"""The Alembic migration creates exactly the tables the code declares, and downgrades cleanly."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

import shared.inbox  # noqa: F401  (declares processed_events)
import shared.outbox  # noqa: F401  (declares outbox)
from services.router.app import MIGRATIONS
from services.router.store import ROUTER_METADATA
from shared import db


async def test_migration_matches_the_declared_tables_and_downgrades(tmp_path: Path) -> None:
    await check_migration(f"sqlite+aiosqlite:///{tmp_path / 'router.sqlite3'}")


@pytest.mark.postgres
async def test_migration_on_postgres(postgres_url: str) -> None:
    await check_migration(postgres_url)


async def check_migration(url: str) -> None:
    await db.migrate(MIGRATIONS, url)
    engine = db.make_engine(url)
    try:
        async with engine.connect() as conn:

            def diff(sync_conn):  # type: ignore[no-untyped-def]
                ctx = MigrationContext.configure(sync_conn)
                return compare_metadata(ctx, [ROUTER_METADATA, db.MESSAGING_METADATA])

            differences = await conn.run_sync(diff)
            tables = await conn.run_sync(lambda c: set(inspect(c).get_table_names()))
    finally:
        await engine.dispose()
    assert differences == []
    assert {
        "router_agents",
        "router_contacts",
        "router_offers",
        "router_timeline",
        "router_counters",
        "router_leases",
        "router_goodwill_grants",
        "processed_events",
        "outbox",
    } <= tables
    await asyncio.to_thread(command.downgrade, db.alembic_config(MIGRATIONS, url), "base")
    engine = db.make_engine(url)
    try:
        async with engine.connect() as conn:
            left = await conn.run_sync(lambda c: set(inspect(c).get_table_names()))
    finally:
        await engine.dispose()
    assert left <= {"alembic_version"}
