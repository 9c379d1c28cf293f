"""The inbox: which events a consumer has already handled.

Delivery is at-least-once; effects must be exactly-once. A handler records the event id in the same
transaction as its state change; a redelivered event finds its id and is skipped.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Column, DateTime, Index, String, Table, delete, select
from sqlalchemy.sql.dml import ReturningInsert

from shared.db import MESSAGING_METADATA, SqlSession, dialect_insert, rowcount
from shared.events import utcnow

processed_events = Table(
    "processed_events",
    MESSAGING_METADATA,
    Column("consumer", String(100), primary_key=True),
    Column("event_id", String(100), primary_key=True),
    Column("processed_at", DateTime(timezone=True), nullable=False),
)
Index("processed_events_processed_at", processed_events.c.processed_at)


async def first_time(session: SqlSession, consumer: str, event_id: str) -> bool:
    """Mark ``event_id`` handled by ``consumer`` in the caller's transaction.

    True the first time; False when it was already handled (the caller then skips its effect).
    """
    return bool(await first_times(session, consumer, [event_id]))


async def first_times(session: SqlSession, consumer: str, event_ids: Sequence[str]) -> set[str]:
    """Mark a batch of events handled by ``consumer`` in one statement (the caller's transaction).

    The ids seen for the first time; an id already handled, or given twice, is in it at most once, so a
    caller that takes each id out of the set as it applies it skips every repeat.
    """
    if not event_ids:
        return set()
    now = utcnow()
    rows = [{"consumer": consumer, "event_id": event_id, "processed_at": now} for event_id in dict.fromkeys(event_ids)]
    result = await session.execute(_mark_handled(session.get_bind().dialect.name), rows)
    return set(result.scalars().all())


@functools.cache
def _mark_handled(dialect: str) -> ReturningInsert[Any]:
    """``INSERT .. ON CONFLICT DO NOTHING RETURNING event_id`` for the dialect, built once: every consumed
    batch runs it, and a statement built per call is keyed for SQLAlchemy's compiled cache each time."""
    return dialect_insert(processed_events, dialect).on_conflict_do_nothing().returning(processed_events.c.event_id)


async def was_processed(session: SqlSession, consumer: str, event_id: str) -> bool:
    row = await session.execute(
        select(processed_events.c.event_id).where(
            processed_events.c.consumer == consumer, processed_events.c.event_id == event_id
        )
    )
    return row.first() is not None


async def purge(session: SqlSession, older_than: datetime) -> int:
    """Forget ids handled before ``older_than``. Safe once the bus can no longer redeliver them: keep the
    window longer than the bus's retention (embedded: 7 days; Kafka: the topic's ``retention.ms``)."""
    result = await session.execute(delete(processed_events).where(processed_events.c.processed_at < older_than))
    return int(rowcount(result) or 0)
