"""A fresh PostgreSQL database per test, on the server named by SWITCHBOARD_TEST_POSTGRES_URL.

Every PostgreSQL leg of the suite goes through here, so they all skip the same way (with the reason
printed) where no server is given or reachable, and never share state with a parallel run.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import AsyncIterator

import pytest

ENV = "SWITCHBOARD_TEST_POSTGRES_URL"
HOW_TO = f"set {ENV}=postgresql+asyncpg://user@host:5432/db to run it"


@contextlib.asynccontextmanager
async def fresh_database(prefix: str = "sb_test") -> AsyncIterator[str]:
    """Create a uniquely named database, yield its SQLAlchemy URL, drop it afterwards (or skip)."""
    base = os.environ.get(ENV)
    if not base:
        pytest.skip(f"PostgreSQL leg skipped: {HOW_TO}")
    import asyncpg

    dsn = base.replace("postgresql+asyncpg://", "postgresql://")
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    try:
        admin = await asyncpg.connect(dsn, timeout=5)
    except (OSError, asyncpg.PostgresError) as exc:
        pytest.skip(f"PostgreSQL leg skipped: server at {base} not reachable ({exc})")
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    try:
        yield base.rsplit("/", 1)[0] + "/" + name
    finally:
        admin = await asyncpg.connect(dsn, timeout=5)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()
