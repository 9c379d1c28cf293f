"""Readiness answers in bounded time; a dependency outage in a request is 503 + Retry-After, not 500."""

from __future__ import annotations

import asyncio
import sqlite3
import time

import httpx
from fastapi import FastAPI
from sqlalchemy.exc import IntegrityError, OperationalError

from shared.bus import create_bus
from shared.bus.base import BusUnavailable
from shared.bus.kafka import KafkaBus
from shared.observability import install_operations, install_unavailable_handler
from shared.settings import CommonSettings


def client(app: FastAPI) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app, raise_app_exceptions=False), base_url="http://t")


async def test_a_hung_check_makes_readyz_answer_503_within_the_timeout() -> None:
    async def hangs() -> bool:
        await asyncio.sleep(60)
        return True

    async def fine() -> bool:
        return True

    app = FastAPI()
    install_operations(app, {"database": hangs, "bus": fine}, timeout=0.3)
    async with client(app) as http:
        started = time.monotonic()
        r = await http.get("/readyz")
    assert time.monotonic() - started < 2.0
    assert r.status_code == 503 and r.headers["Retry-After"]
    assert r.json()["checks"] == {"database": False, "bus": True}


async def test_transient_dependency_errors_answer_503_with_retry_after_others_500() -> None:
    app = FastAPI()
    install_unavailable_handler(app)
    errors = {
        "locked": OperationalError("UPDATE ...", {}, sqlite3.OperationalError("database is locked")),
        "full": OperationalError("INSERT ...", {}, sqlite3.OperationalError("database or disk is full")),
        "refused": ConnectionRefusedError(111, "Connection refused"),
        "bus": BusUnavailable("kafka did not acknowledge"),
        "integrity": IntegrityError("INSERT ...", {}, sqlite3.IntegrityError("UNIQUE constraint failed")),
    }

    @app.get("/fail/{kind}")
    async def fail(kind: str) -> None:
        raise errors[kind]

    async with client(app) as http:
        for kind in ("locked", "full", "refused", "bus"):
            r = await http.get(f"/fail/{kind}")
            assert r.status_code == 503, (kind, r.text)
            assert r.headers["Retry-After"] == "2"
            assert "UPDATE" not in r.text and "INSERT" not in r.text  # no SQL echoed to clients
        r = await http.get("/fail/integrity")
        assert r.status_code == 500 and r.json() == {"detail": "internal error"}


def test_consumer_timeouts_are_settings(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("SWITCHBOARD_BUS", "kafka")
    monkeypatch.setenv("SWITCHBOARD_KAFKA_SESSION_TIMEOUT_MS", "7000")
    monkeypatch.setenv("SWITCHBOARD_KAFKA_HEARTBEAT_INTERVAL_MS", "700")
    monkeypatch.setenv("SWITCHBOARD_KAFKA_REBALANCE_TIMEOUT_MS", "20000")
    monkeypatch.setenv("SWITCHBOARD_KAFKA_GROUP_INSTANCE_ID", "router-0")
    monkeypatch.setenv("SWITCHBOARD_TRANSIENT_BACKOFF_MAX", "3")
    bus = create_bus(CommonSettings())
    assert isinstance(bus, KafkaBus)
    assert (bus.session_timeout_ms, bus.heartbeat_interval_ms, bus.rebalance_timeout_ms) == (7000, 700, 20000)
    assert bus.group_instance_id == "router-0" and bus.transient_backoff_max == 3.0


async def test_sqlite_is_not_ready_while_another_process_holds_its_write_lock(tmp_path) -> None:
    """``SELECT 1`` passes on a locked SQLite file; the probe must take the write lock to tell the truth."""
    from shared import db

    path = tmp_path / "router.db"
    engine = db.make_engine(f"sqlite+aiosqlite:///{path}")
    try:
        async with engine.begin() as conn:
            await conn.exec_driver_sql("CREATE TABLE t (x INTEGER)")
        assert await db.ping(engine, lock_wait=0.2) is True

        holder = sqlite3.connect(path, isolation_level=None)
        holder.execute("BEGIN EXCLUSIVE")
        try:
            started = time.monotonic()
            assert await db.ping(engine, lock_wait=0.2) is False
            assert time.monotonic() - started < 1.5
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        assert await db.ping(engine, lock_wait=0.2) is True

        path.unlink()  # a database file that vanished is not ready (and the probe must not create it anew)
        assert await db.ping(engine, lock_wait=0.2) is False
        assert not path.exists()
    finally:
        await engine.dispose()
