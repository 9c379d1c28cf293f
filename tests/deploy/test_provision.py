"""`switchboard migrate` and `switchboard topics create`, as the Jobs and one-shots run them: real processes
against a fresh SQLite data dir, fresh PostgreSQL databases (SWITCHBOARD_TEST_POSTGRES_URL) and a real
Kafka broker (KAFKA_BOOTSTRAP_SERVERS); and services that wait for the schema instead of migrating."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from services.provision import MIGRATIONS
from shared import db
from tests.deploy.support import ROOT
from tests.postgres import fresh_database


def _cli(*args: str, env: dict[str, str], timeout: float = 180) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHBOARD_")}
    return subprocess.run(
        [sys.executable, "-m", "services.cli", *args],
        cwd=ROOT,
        env={**clean, "SWITCHBOARD_LOG_JSON": "false", **env},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_the_migration_scripts_are_the_ones_the_services_run() -> None:
    from services.callback.migrations_path import MIGRATIONS as CALLBACK
    from services.intake.app import MIGRATIONS as INTAKE
    from services.router.app import MIGRATIONS as ROUTER

    assert MIGRATIONS == {"intake": INTAKE.resolve(), "router": ROUTER.resolve(), "callback": CALLBACK.resolve()}


def test_migrate_brings_fresh_sqlite_databases_to_head_and_is_idempotent(tmp_path: Path) -> None:
    data = tmp_path / "data"
    env = {"SWITCHBOARD_DATA_DIR": str(data)}
    first = _cli("migrate", env=env)
    assert first.returncode == 0, first.stderr
    for service, scripts in MIGRATIONS.items():
        path = data / f"{service}.sqlite3"
        assert oct(path.stat().st_mode & 0o777) == "0o600", service  # customers' data: owner only
        with sqlite3.connect(path) as conn:
            (version,) = conn.execute("SELECT version_num FROM alembic_version").fetchone()
            tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        assert {version} == db.head_revisions(scripts)
        assert "outbox" in tables and len(tables) > 2, service
        assert f"{service:<9} (empty) -> {version}" in first.stdout
    second = _cli("migrate", env=env)
    assert second.returncode == 0, second.stderr
    assert second.stdout.count("already at") == 3
    one = _cli("migrate", "--service", "router", env=env)
    assert one.returncode == 0 and one.stdout.startswith("router") and one.stdout.count("\n") == 1
    assert _cli("migrate", "--service", "connector", env=env).returncode == 2


async def test_migrate_brings_fresh_postgresql_databases_to_head() -> None:
    async with (
        fresh_database("sb_mig_intake") as intake,
        fresh_database("sb_mig_router") as router,
        fresh_database("sb_mig_callback") as callback,
    ):
        urls = {"intake": intake, "router": router, "callback": callback}
        env = {f"SWITCHBOARD_{s.upper()}_DATABASE_URL": url for s, url in urls.items()}
        for url in urls.values():
            assert await db.current_revisions(url) == set()
        first = _cli("migrate", env=env)
        assert first.returncode == 0, first.stderr
        for service, url in urls.items():
            assert await db.current_revisions(url) == db.head_revisions(MIGRATIONS[service])
            await db.wait_until_migrated(MIGRATIONS[service], url, timeout=0)
        second = _cli("migrate", env=env)
        assert second.returncode == 0 and second.stdout.count("already at") == 3, second.stdout + second.stderr


async def test_a_service_told_not_to_migrate_waits_for_the_schema_and_refuses_an_old_one(tmp_path: Path) -> None:
    from shared.runtime import ServiceRuntime
    from shared.settings import CommonSettings

    common = CommonSettings(data_dir=tmp_path, migrate_on_start=False, migration_wait_seconds=0)
    runtime = ServiceRuntime("callback", common, migrations=MIGRATIONS["callback"])
    with pytest.raises(db.SchemaNotMigrated, match="switchboard migrate"):
        await runtime.start()
    assert not (tmp_path / "callback.sqlite3").exists()  # it neither migrated nor created the database
    result = _cli("migrate", "--service", "callback", env={"SWITCHBOARD_DATA_DIR": str(tmp_path)})
    assert result.returncode == 0, result.stderr
    runtime = ServiceRuntime("callback", common, migrations=MIGRATIONS["callback"])
    await runtime.start()
    try:
        assert await runtime.database_ready()
    finally:
        await runtime.stop()


def test_migrate_on_start_stays_the_default() -> None:
    from shared.settings import CommonSettings

    assert CommonSettings().migrate_on_start is True


def test_the_graceful_shutdown_setting_reaches_uvicorn(monkeypatch: pytest.MonkeyPatch) -> None:
    from shared.http_server import uvicorn_limits

    assert uvicorn_limits()["timeout_graceful_shutdown"] == 10.0
    monkeypatch.setenv("SWITCHBOARD_HTTP_GRACEFUL_SHUTDOWN_SECONDS", "25")
    assert uvicorn_limits()["timeout_graceful_shutdown"] == 25.0


def test_topics_create_on_the_embedded_bus_has_nothing_to_do(tmp_path: Path) -> None:
    result = _cli("topics", "create", env={"SWITCHBOARD_DATA_DIR": str(tmp_path)})
    assert result.returncode == 0 and "needs no topics" in result.stdout


@pytest.mark.kafka
async def test_topics_create_on_a_real_broker_is_idempotent(kafka_bootstrap_servers: str) -> None:
    from aiokafka.admin import AIOKafkaAdminClient

    from shared.topics import ALL_TOPICS

    prefix = f"deploytest-{uuid.uuid4().hex[:8]}-"
    env = {
        "SWITCHBOARD_BUS": "kafka",
        "SWITCHBOARD_KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap_servers,
        "SWITCHBOARD_TOPIC_PREFIX": prefix,
        "SWITCHBOARD_KAFKA_PARTITIONS": "5",
    }
    names = [prefix + n for t in ALL_TOPICS for n in (t, f"{t}.dlq")]
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap_servers)
    await admin.start()
    try:
        first = _cli("topics", "create", "--wait", "30", env=env)
        assert first.returncode == 0, first.stderr
        assert first.stdout.count(" created ") == 6 and first.stdout.count("partitions=5 replication=1") == 6
        described = {t["topic"]: t for t in await admin.describe_topics(names)}
        assert {n: len(described[n]["partitions"]) for n in names} == dict.fromkeys(names, 5)
        # again, and with other settings: existing topics are kept as they are, and said to differ
        second = _cli("topics", "create", "--wait", "30", env={**env, "SWITCHBOARD_KAFKA_PARTITIONS": "3"})
        assert second.returncode == 0, second.stderr
        assert second.stdout.count(" exists ") == 6 and second.stdout.count("settings say 3 partitions") == 6
        described = {t["topic"]: t for t in await admin.describe_topics(names)}
        assert {n: len(described[n]["partitions"]) for n in names} == dict.fromkeys(names, 5)
    finally:
        try:
            await admin.delete_topics(names)
        finally:
            await admin.close()


def test_a_service_started_as_in_kubernetes_waits_for_migrate_then_drains_on_sigterm(tmp_path: Path) -> None:
    """The Deployment's path on the embedded bus: no migration at start-up, ready once `switchboard migrate`
    ran, and on SIGTERM a clean stop (consumers stopped, outbox flushed) well within the grace period."""
    import signal
    import socket
    import time

    import httpx

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("SWITCHBOARD_")},
        "SWITCHBOARD_ADMIN_TOKEN": os.environ["SWITCHBOARD_ADMIN_TOKEN"],
        "SWITCHBOARD_DATA_DIR": str(tmp_path),
        "SWITCHBOARD_MIGRATE_ON_START": "false",
        "SWITCHBOARD_MIGRATION_WAIT_SECONDS": "60",
        "SWITCHBOARD_HTTP_GRACEFUL_SHUTDOWN_SECONDS": "5",
        "SWITCHBOARD_LOG_JSON": "false",
    }
    log = (tmp_path / "callback.log").open("w+")
    proc = subprocess.Popen(
        [sys.executable, "-m", "services.cli", "callback", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        time.sleep(1.0)
        assert proc.poll() is None  # waiting for the schema, not migrating it
        assert not (tmp_path / "callback.sqlite3").exists()
        assert _cli("migrate", env={"SWITCHBOARD_DATA_DIR": str(tmp_path)}).returncode == 0
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline and proc.poll() is None, "callback did not become ready"
            time.sleep(0.3)
        began = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
        assert time.monotonic() - began < 20
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    log.seek(0)
    text = log.read()
    assert "service.stopped" in text and "Application shutdown complete" in text, text[-2000:]
