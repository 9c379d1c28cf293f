"""The idempotency store on SQLite and PostgreSQL: same code, migrations, group commit, first writer wins."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from services.intake.app import MIGRATIONS
from services.intake.store import IdempotencyStore, RequestKey, Scope, StoredRequest, open_store
from shared import db
from tests.intake.conftest import IntakeFactory, contact_payload
from tests.postgres import fresh_database

NOW = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """A fresh database: an SQLite file, or a uniquely named database on the PostgreSQL server."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'intake.sqlite3'}"
        return
    async with fresh_database("sb_intake") as url:
        yield url


def row(key: str, resource: str = "r1", *, scope: str = Scope.EXTERNAL) -> StoredRequest:
    return StoredRequest(
        key=RequestKey("default", scope, "acme", key),
        resource_id=resource,
        event_id=f"ev-{resource}",
        site="main",
        fingerprint="f" * 64,
        status_code=202,
        media_type="application/json",
        response=json.dumps({"contact_id": resource}),
        created_at=NOW,
    )


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[IdempotencyStore]:
    await db.migrate(MIGRATIONS, database_url)
    store = open_store(database_url)
    try:
        yield store
    finally:
        await store.close()


async def test_record_then_find_roundtrips_every_field(store: IdempotencyStore) -> None:
    stored = row("call-1")
    assert await store.find([stored.key]) is None
    await store.record([stored])
    found = await store.find([stored.key])
    assert found is not None
    assert found.resource_id == "r1" and found.response == stored.response and found.site == "main"
    assert found.created_at == NOW


async def test_first_writer_wins_on_the_same_key(store: IdempotencyStore) -> None:
    await store.record([row("k", "first")])
    await store.record([row("k", "second")])  # no error: the later writer silently loses
    found = await store.find([row("k").key])
    assert found is not None and found.resource_id == "first"


async def test_find_prefers_keys_in_the_given_order(store: IdempotencyStore) -> None:
    await store.record([row("ext", "by-external"), row("idem", "by-key", scope=Scope.IDEMPOTENCY_KEY)])
    idem, ext = row("idem", scope=Scope.IDEMPOTENCY_KEY).key, row("ext").key
    assert (await store.find([idem, ext])).resource_id == "by-key"  # type: ignore[union-attr]
    assert (await store.find([ext, idem])).resource_id == "by-external"  # type: ignore[union-attr]
    assert await store.find([row("nope").key]) is None


async def test_concurrent_callers_are_group_committed_and_each_sees_its_own_row(store: IdempotencyStore) -> None:
    rows = [row(f"k{i}", f"r{i}") for i in range(300)]
    await asyncio.gather(*(store.record([r]) for r in rows))
    found = await asyncio.gather(*(store.find([r.key]) for r in rows))
    assert [f.resource_id for f in found] == [f"r{i}" for i in range(300)]  # type: ignore[union-attr]


async def test_the_app_dedupes_on_this_database(intake: IntakeFactory, database_url: str, tmp_path: Path) -> None:
    app = await intake(database_url=database_url, data_dir=tmp_path / "d")
    first = await app.client.post("/v1/contacts", json=contact_payload())
    again = await app.client.post("/v1/contacts", json=contact_payload())
    assert first.status_code == again.status_code == 202
    assert again.json()["duplicate"] is True
    assert len(app.events()) == 1


async def test_purge_forgets_only_requests_older_than_the_cutoff(store: IdempotencyStore) -> None:
    from datetime import timedelta

    old = row("old")
    new = dataclasses.replace(row("new"), created_at=NOW + timedelta(days=8))
    await store.record([old, new])
    assert await store.purge(NOW + timedelta(days=1)) == 1
    assert await store.find([old.key]) is None
    assert await store.find([new.key]) is not None


async def test_a_batch_larger_than_one_statement_is_recorded_whole(store: IdempotencyStore) -> None:
    """Past one statement's rows (SQLite: 2000) a batch spans statements in one transaction: all or nothing."""
    rows = [row(f"big{i}", f"r{i}") for i in range(2600)]
    await store.record_many([*rows[:10], row("big0", "later writer")])  # first writer wins inside a batch too
    await store.record_many(rows)
    found = await store.find_many([[r.key] for r in rows])
    assert [f.resource_id for f in found] == [f"r{i}" for i in range(2600)]  # type: ignore[union-attr]
