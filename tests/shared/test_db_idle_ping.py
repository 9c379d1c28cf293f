"""PostgreSQL connections are pinged before use only after sitting idle in the pool (``shared/db.py``).

On a real server: a connection the server dropped while it sat idle is replaced before use, so the
caller sees no error; a connection back from work a moment ago is not pinged (the round trips every
transaction of the router's writer paid before); one killed on a live server and reused at once fails
that one use as a transient disconnect, and the pool is renewed for the next.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from shared import db
from shared.faults import is_transient
from tests.postgres import ENV, fresh_database


@pytest.fixture
async def postgres_url() -> AsyncIterator[str]:
    async with fresh_database("sb_idle_ping") as url:
        yield url


async def backend_pid(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        return int((await conn.execute(text("SELECT pg_backend_pid()"))).scalar_one())


async def terminate(pid: int) -> None:
    """Drop one server connection, as a restart or an administrator would."""
    import asyncpg

    admin = await asyncpg.connect(os.environ[ENV].replace("postgresql+asyncpg://", "postgresql://"), timeout=5)
    try:
        assert await admin.fetchval("SELECT pg_terminate_backend($1)", pid)
    finally:
        await admin.close()


def count_pings(engine: AsyncEngine) -> Callable[[], int]:
    dialect = engine.sync_engine.dialect
    real = dialect.do_ping
    pings = 0

    def do_ping(dbapi_connection: Any) -> bool:
        nonlocal pings
        pings += 1
        return real(dbapi_connection)

    dialect.do_ping = do_ping  # type: ignore[method-assign]
    return lambda: pings


async def test_a_connection_dropped_while_idle_is_replaced_before_use(postgres_url: str) -> None:
    engine = db.make_engine(postgres_url, ping_idle_seconds=0.2, pool_size=1, max_overflow=0)
    try:
        first = await backend_pid(engine)
        await terminate(first)
        await asyncio.sleep(0.3)  # idle longer than the ping threshold
        assert await backend_pid(engine) != first  # no error: pinged, found dead, replaced
    finally:
        await engine.dispose()


async def test_a_connection_back_from_work_a_moment_ago_is_not_pinged(postgres_url: str) -> None:
    busy = db.make_engine(postgres_url, ping_idle_seconds=10.0, pool_size=1, max_overflow=0)
    idle = db.make_engine(postgres_url, ping_idle_seconds=0.0, pool_size=1, max_overflow=0)
    try:
        busy_pings, idle_pings = count_pings(busy), count_pings(idle)
        for _ in range(20):
            await backend_pid(busy)
            await backend_pid(idle)
        assert busy_pings() == 0
        assert idle_pings() == 19  # every reuse of a pooled connection, none for the new one
    finally:
        await busy.dispose()
        await idle.dispose()


async def test_a_connection_killed_and_reused_at_once_fails_that_use_only(postgres_url: str) -> None:
    engine = db.make_engine(postgres_url, ping_idle_seconds=10.0, pool_size=2, max_overflow=0)
    try:
        first = await backend_pid(engine)
        await terminate(first)
        with pytest.raises(DBAPIError) as failed:
            await backend_pid(engine)
        assert failed.value.connection_invalidated
        assert is_transient(failed.value)  # consumers retry it, the API answers 503
        assert await backend_pid(engine) != first
    finally:
        await engine.dispose()
