from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest


@pytest.fixture(params=["sqlite", "postgres"])
async def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """A fresh database: an SQLite file, or a new database on the PostgreSQL server when one is given."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'svc.sqlite3'}"
        return
    base = os.environ.get("SWITCHBOARD_TEST_POSTGRES_URL")
    if not base:
        pytest.skip("PostgreSQL leg: set SWITCHBOARD_TEST_POSTGRES_URL=postgresql+asyncpg://user@host:5432/db")
    import asyncpg

    dsn = base.replace("postgresql+asyncpg://", "postgresql://")
    name = f"sb_test_{uuid.uuid4().hex[:12]}"
    try:
        admin = await asyncpg.connect(dsn, timeout=5)
    except (OSError, asyncpg.PostgresError) as exc:
        pytest.skip(f"PostgreSQL leg: server at {base} not reachable: {exc}")
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    yield base.rsplit("/", 1)[0] + "/" + name
    admin = await asyncpg.connect(dsn, timeout=5)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()
