"""The Alembic migrations create exactly what the models describe, on SQLite and PostgreSQL, and can
be rolled back and re-applied."""

from __future__ import annotations

import asyncio

from alembic import command

from services.callback.migrations_path import MIGRATIONS
from shared.db import alembic_config, migrate


async def test_migrations_match_the_models_and_roll_back(database_url: str) -> None:
    await migrate(MIGRATIONS, database_url)
    cfg = alembic_config(MIGRATIONS, database_url)
    await asyncio.to_thread(command.check, cfg)  # raises if the models and the schema differ
    await asyncio.to_thread(command.downgrade, cfg, "base")
    await migrate(MIGRATIONS, database_url)
    await asyncio.to_thread(command.check, cfg)
