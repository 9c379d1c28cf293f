"""The one-trip SQLite cursor (shared/sqlite_one_hop.py) answers exactly as SQLAlchemy's stock aiosqlite
adapter does (rows, columns, row counts, RETURNING, inserted keys, errors, transactions) in one trip to the
driver's thread per statement, and every engine of the project gets it."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiosqlite
import pytest
from sqlalchemy import Column, Integer, MetaData, String, Table, exc, insert, select, text, update
from sqlalchemy.dialects.sqlite.aiosqlite import AsyncAdapt_aiosqlite_dbapi
from sqlalchemy.ext.asyncio import AsyncEngine

from shared import db, sqlite_one_hop

metadata = MetaData()
items = Table(
    "items",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String, unique=True, nullable=False),
    Column("n", Integer, nullable=False, default=0),
)


@pytest.fixture(params=["one-hop", "stock"])
async def engine(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    url = f"sqlite+aiosqlite:///{tmp_path / 'one_hop.sqlite3'}"
    kwargs: dict[str, Any] = {}
    if request.param == "stock":
        kwargs["module"] = AsyncAdapt_aiosqlite_dbapi(aiosqlite, sqlite3)
    engine = db.make_engine(url, sqlite_busy_timeout=0.2, **kwargs)
    async with engine.begin() as conn:
        await conn.run_sync(metadata.create_all)
    yield engine
    await engine.dispose()


async def driver_connection(engine: AsyncEngine) -> Any:
    async with engine.connect() as conn:
        raw = await conn.get_raw_connection()
        return raw.dbapi_connection


async def test_every_project_engine_on_aiosqlite_gets_the_one_trip_cursor(tmp_path: Path) -> None:
    engine = db.make_engine(f"sqlite+aiosqlite:///{tmp_path / 'x.sqlite3'}")
    try:
        assert sqlite_one_hop.available()
        assert isinstance(await driver_connection(engine), sqlite_one_hop.OneHopConnection)
    finally:
        await engine.dispose()


async def test_rows_columns_counts_returning_and_keys(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        first = await conn.execute(insert(items).values(name="a", n=1))
        assert first.inserted_primary_key == (1,)
        many = await conn.execute(insert(items), [{"name": "b", "n": 2}, {"name": "c", "n": 3}])
        assert many.rowcount == 2
        back = await conn.execute(insert(items).values(name="d", n=4).returning(items.c.id, items.c.name))
        assert back.all() == [(4, "d")]
        changed = await conn.execute(update(items).where(items.c.n >= 3).values(n=items.c.n + 10))
        assert changed.rowcount == 2
        none = await conn.execute(update(items).where(items.c.name == "zz").values(n=0))
        assert none.rowcount == 0
    async with engine.connect() as conn:
        result = await conn.execute(select(items.c.name, items.c.n).order_by(items.c.id))
        assert list(result.keys()) == ["name", "n"]
        assert result.all() == [("a", 1), ("b", 2), ("c", 13), ("d", 14)]
        assert (await conn.execute(select(items).where(items.c.name == "zz"))).first() is None
        assert (await conn.execute(text("SELECT count(*) FROM items"))).scalar_one() == 4


async def test_a_rolled_back_transaction_leaves_nothing(engine: AsyncEngine) -> None:
    with pytest.raises(RuntimeError):
        async with engine.begin() as conn:
            await conn.execute(insert(items).values(name="gone"))
            raise RuntimeError("fail before the commit")
    async with engine.connect() as conn:
        assert (await conn.execute(select(items))).all() == []


async def test_driver_errors_arrive_as_sqlalchemy_errors(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        await conn.execute(insert(items).values(name="a"))
    with pytest.raises(exc.IntegrityError):
        async with engine.begin() as conn:
            await conn.execute(insert(items).values(name="a"))
    with pytest.raises(exc.OperationalError):
        async with engine.connect() as conn:
            await conn.execute(text("SELECT nope FROM items"))


async def test_a_held_write_lock_is_a_locked_error_after_the_busy_timeout(engine: AsyncEngine, tmp_path: Path) -> None:
    holder = sqlite3.connect(tmp_path / "one_hop.sqlite3", isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(exc.OperationalError, match="locked"):
            async with engine.begin() as conn:
                await conn.execute(insert(items).values(name="blocked"))
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    async with engine.begin() as conn:  # and the connection is usable afterwards
        await conn.execute(insert(items).values(name="after"))


async def test_a_statement_is_one_trip_to_the_drivers_thread(
    engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    trips: list[str] = []
    original = aiosqlite.Connection._execute

    async def counted(self: aiosqlite.Connection, fn: Any, *args: Any, **kwargs: Any) -> Any:
        trips.append(getattr(fn, "__name__", repr(fn)))
        return await original(self, fn, *args, **kwargs)

    async with engine.connect() as conn:
        await conn.execute(text("SELECT 1"))  # checked out and begun: count the statements alone
        monkeypatch.setattr(aiosqlite.Connection, "_execute", counted)
        for n in range(10):
            await conn.execute(select(items).where(items.c.n == n))
        monkeypatch.undo()
    one_hop = isinstance(await driver_connection(engine), sqlite_one_hop.OneHopConnection)
    if one_hop:
        assert len(trips) == 10
    else:
        assert len(trips) >= 30  # the stock adapter: cursor, execute, fetch, close
