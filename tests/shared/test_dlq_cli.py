"""``switchboard dlq list|show|replay`` against a real bus (embedded always, Kafka when a broker is given).

The CLI runs as its own process, configured through the environment like the services.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Column, MetaData, String, Table, func, insert, select

from shared import db, inbox
from shared.bus.base import EventBus, Record
from shared.events import Envelope
from shared.topics import CONTACTS
from tests.contract.support import build_bus
from tests.contract.test_bus_contract import event

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(params=["embedded", pytest.param("kafka", marks=pytest.mark.kafka)])
def bus_config(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, dict[str, Any], dict[str, str]]:
    """(kind, bus config, the CLI's environment for the same bus)."""
    prefix = f"dlqcli-{uuid.uuid4().hex[:8]}."
    env = {"SWITCHBOARD_TOPIC_PREFIX": prefix, "SWITCHBOARD_DATA_DIR": str(tmp_path)}
    if request.param == "embedded":
        config = {
            "path": str(tmp_path / "bus.sqlite3"),
            "topic_prefix": prefix,
            "max_attempts": 2,
            "retry_backoff": 0.01,
        }
        return "embedded", config, {**env, "SWITCHBOARD_BUS": "embedded"}
    servers = request.getfixturevalue("kafka_bootstrap_servers")
    config = {
        "bootstrap_servers": servers,
        "partitions": 2,
        "topic_prefix": prefix,
        "max_attempts": 2,
        "retry_backoff": 0.01,
        "session_timeout_ms": 6000,
        "heartbeat_interval_ms": 500,
    }
    return (
        "kafka",
        config,
        {
            **env,
            "SWITCHBOARD_BUS": "kafka",
            "SWITCHBOARD_KAFKA_BOOTSTRAP_SERVERS": servers,
            "SWITCHBOARD_KAFKA_PARTITIONS": "2",
        },
    )


async def cli(env: dict[str, str], *args: str) -> str:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHBOARD_")}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "services.cli",
        "dlq",
        *args,
        cwd=ROOT,
        env={**clean, "PYTHONPATH": str(ROOT), **env},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode == 0, err.decode()
    return out.decode()


async def eventually(predicate: Any, timeout: float = 30.0) -> None:
    async with asyncio.timeout(timeout):
        while not await predicate():
            await asyncio.sleep(0.05)


async def test_dead_letters_are_listed_shown_and_replayed_once(
    bus_config: tuple[str, dict[str, Any], dict[str, str]], tmp_path: Path
) -> None:
    kind, config, env = bus_config
    effects = Table("effects", MetaData(), Column("event_id", String(100), nullable=False))
    engine = db.make_engine(f"sqlite+aiosqlite:///{tmp_path / 'consumer.sqlite3'}")
    async with engine.begin() as conn:
        await conn.run_sync(effects.metadata.create_all)
        await conn.run_sync(db.MESSAGING_METADATA.create_all)
    maker = db.make_sessionmaker(engine)
    poison, good = event(1), event(2)
    broken = True
    calls: list[str] = []

    async def handler(env_: Envelope, _record: Record) -> None:
        calls.append(env_.id)
        if broken and env_.id == poison.id:
            raise ValueError("missing reference data for this contact")
        async with maker() as session, session.begin():
            if await inbox.first_time(session, "dlq-test", env_.id):
                await session.execute(insert(effects).values(event_id=env_.id))

    async def effect_count(event_id: str) -> int:
        async with maker() as session:
            return int(await session.scalar(select(func.count()).where(effects.c.event_id == event_id)) or 0)

    bus: EventBus = build_bus(kind, config)
    await bus.start()
    try:
        sub = await bus.subscribe([CONTACTS], "dlq-test", handler)
        async with asyncio.timeout(30):
            await sub.ready.wait()
        await bus.publish_raw(CONTACTS, "k1", b"not an event at all")
        await bus.publish(CONTACTS, poison, "k1")
        await bus.publish(CONTACTS, good, "k1")
        await eventually(lambda: effect_count(good.id))

        listed = [json.loads(line) for line in (await cli(env, "list", CONTACTS, "--json")).splitlines()]
        assert len(listed) == 2
        malformed, dead = listed
        assert malformed["valid"] is False and malformed["attempts"] == "0"
        assert dead["event_id"] == poison.id and dead["type"] == poison.type and dead["key"] == "k1"
        assert dead["group"] == "dlq-test" and dead["attempts"] == "2"
        assert "missing reference data" in dead["error"]
        assert "1 event" not in await cli(env, "list", CONTACTS)  # the human table prints too
        shown = json.loads(await cli(env, "show", f"{CONTACTS}.dlq", dead["ref"]))
        assert shown["event"]["id"] == poison.id
        assert shown["headers"]["x-original-topic"] == CONTACTS

        broken = False  # the operator fixed what made it fail
        out = await cli(env, "replay", CONTACTS)
        assert "replayed 1, skipped 1" in out, out
        await eventually(lambda: effect_count(poison.id))

        # Replaying again (or replaying an event that was handled) has no second effect: inbox dedupe.
        seen = calls.count(poison.id)
        out = await cli(env, "replay", CONTACTS, dead["ref"])
        assert "replayed 1, skipped 0" in out, out

        async def delivered_again() -> bool:
            return calls.count(poison.id) > seen

        await eventually(delivered_again)
        assert await effect_count(poison.id) == 1
        assert len(await bus.read_topic(CONTACTS + ".dlq")) == 2  # nothing new was dead-lettered
        replays = [r for r in await bus.read_topic(CONTACTS) if dict(r.headers).get("x-replayed-from")]
        assert len(replays) == 2 and all(r.key == "k1" for r in replays)
    finally:
        await bus.stop()
        await engine.dispose()


def test_a_record_from_before_the_content_type_header_is_replayed_with_it() -> None:
    """Dead letters written before events carried ``content-type`` are valid events: replay labels them
    structured-mode, so a standard CloudEvents consumer of the original topic reads them."""
    from services.dlq import REPLAYED_FROM, DeadLetter

    old = Record(topic="contacts.dlq", partition=0, offset=7, key="k", value=event(1).to_bytes(), headers=())
    headers = dict(DeadLetter(old).replay_headers())
    assert headers["content-type"] == b"application/cloudevents+json"
    assert REPLAYED_FROM in headers
    labelled = Record(
        topic="contacts.dlq",
        partition=0,
        offset=8,
        key="k",
        value=b"{}",
        headers=(("Content-Type", b"application/cloudevents+json; charset=utf-8"),),
    )
    assert [k for k, _ in DeadLetter(labelled).replay_headers()].count("Content-Type") == 1  # not added twice
