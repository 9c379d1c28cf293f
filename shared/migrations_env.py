"""The body of every service's Alembic ``env.py``: online migrations over an async engine.

A service's ``migrations/env.py`` is two lines: import its metadata, call :func:`run_migrations`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from alembic import context
from sqlalchemy import MetaData, pool
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import async_engine_from_config


def _do_run(connection: Connection, target: Sequence[MetaData]) -> None:
    context.configure(
        connection=connection,
        target_metadata=list(target),
        render_as_batch=connection.dialect.name == "sqlite",  # SQLite needs batch mode for ALTER
    )
    with context.begin_transaction():
        context.run_migrations()


async def _run_async(target: Sequence[MetaData]) -> None:
    engine = async_engine_from_config(
        context.config.get_section(context.config.config_ini_section, {}),
        prefix="sqlalchemy.",
        poolclass=pool.NullPool,
    )
    async with engine.connect() as connection:
        await connection.run_sync(_do_run, target)
    await engine.dispose()


def run_migrations(target: Sequence[MetaData]) -> None:
    if context.is_offline_mode():
        context.configure(url=context.config.get_main_option("sqlalchemy.url"), target_metadata=list(target))
        with context.begin_transaction():
            context.run_migrations()
    else:
        asyncio.run(_run_async(target))
