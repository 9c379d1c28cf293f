from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.postgres import fresh_database


@pytest.fixture(params=["sqlite", "postgres"])
async def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """A fresh database: an SQLite file, or a new database on the PostgreSQL server when one is given."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'svc.sqlite3'}"
        return
    async with fresh_database("sb_test") as url:
        yield url
