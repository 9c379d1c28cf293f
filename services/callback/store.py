"""Tables of the callback service (SQLAlchemy 2, the same on SQLite and PostgreSQL).

* ``callback_commitments``: one row per promise; the database is the truth, the scheduler re-derives
  everything (due, at risk, breached) from it after a restart.
* ``callback_requests``: every request merged into a commitment (dedupes a request id seen twice).
* ``callback_attempts``: the attempt history.
* ``callback_agent_presence``: the last known status of each agent, from ``agent.status_changed``,
  to release due callbacks only as agents are free.
* ``callback_dispatch_locks``: one row per routing domain; a scheduler replica locks it (SKIP LOCKED)
  while it decides releases for that domain, so two replicas never count the same free agent twice.

One open commitment per customer is enforced by the database: ``open_customer_id`` holds the customer
id while the commitment is open and NULL once it ended; a unique constraint over (tenant, it) lets
duplicates merge safely even with several replicas (NULLs never collide, on both databases).
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Date,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator


class UTCDateTime(TypeDecorator[datetime]):
    """Aware datetimes in, aware UTC datetimes out, on SQLite (which has no timezone) as on PostgreSQL."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime stored: pass timezone-aware datetimes")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(
        naming_convention={
            "ix": "ix_%(column_0_label)s",
            "uq": "uq_%(table_name)s_%(column_0_name)s",
            "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
            "pk": "pk_%(table_name)s",
        }
    )


CALLBACK_METADATA = Base.metadata


class Commitment(Base):
    __tablename__ = "callback_commitments"
    __table_args__ = (
        UniqueConstraint("tenant_id", "open_customer_id", name="uq_callback_open_customer"),
        Index("ix_callback_due", "status", "next_check_at"),
        Index("ix_callback_release", "tenant_id", "site", "status", "not_before"),
        Index("ix_callback_deadline_day", "deadline_day", "site"),
        Index("ix_callback_customer", "tenant_id", "customer_id"),
    )

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(100))
    site: Mapped[str] = mapped_column(String(100))
    customer_id: Mapped[str] = mapped_column(String(200))
    open_customer_id: Mapped[str | None] = mapped_column(String(200), nullable=True)
    customer: Mapped[dict[str, Any]] = mapped_column(JSON)  # shared.events.Customer as JSON
    customer_timezone: Mapped[str | None] = mapped_column(String(64), nullable=True)
    contact_id: Mapped[str | None] = mapped_column(String(100), nullable=True)
    intent: Mapped[str | None] = mapped_column(String(40), nullable=True)
    channel: Mapped[str] = mapped_column(String(40))
    origin: Mapped[str] = mapped_column(String(40))
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)

    status: Mapped[str] = mapped_column(String(20))
    requested_at: Mapped[datetime] = mapped_column(UTCDateTime())
    virtual_start_time: Mapped[datetime] = mapped_column(UTCDateTime())
    deadline: Mapped[datetime] = mapped_column(UTCDateTime())
    deadline_day: Mapped[date] = mapped_column(Date)  # site-local date of the deadline
    promise_day: Mapped[date] = mapped_column(Date)  # customer-local date of the promise
    next_business_day: Mapped[bool] = mapped_column(Boolean, default=False)
    promise_text: Mapped[str] = mapped_column(Text)
    window_start: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    window_end: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    initial_slack_seconds: Mapped[float] = mapped_column(Float)

    not_before: Mapped[datetime] = mapped_column(UTCDateTime())  # next release may happen from then
    next_check_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    at_risk: Mapped[bool] = mapped_column(Boolean, default=False)
    at_risk_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)

    promised_by_agent_id: Mapped[str | None] = mapped_column(String(100), nullable=True)
    preferred_until: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    released_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    released_to_agent_id: Mapped[str | None] = mapped_column(String(100), nullable=True)
    due_emissions: Mapped[int] = mapped_column(Integer, default=0)
    accepted_by_agent_id: Mapped[str | None] = mapped_column(String(100), nullable=True)
    accepted_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)

    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    last_result: Mapped[str | None] = mapped_column(String(20), nullable=True)
    merged_requests: Mapped[int] = mapped_column(Integer, default=1)

    fulfilled_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    fulfilled_by_agent_id: Mapped[str | None] = mapped_column(String(100), nullable=True)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    close_reason: Mapped[str | None] = mapped_column(String(40), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())

    attempt_history: Mapped[list[Attempt]] = relationship(
        back_populates="commitment", order_by="Attempt.seq", lazy="raise"
    )


class Request(Base):
    __tablename__ = "callback_requests"

    tenant_id: Mapped[str] = mapped_column(String(100), primary_key=True)
    request_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    commitment_id: Mapped[str] = mapped_column(ForeignKey("callback_commitments.id"), index=True)
    origin: Mapped[str] = mapped_column(String(40))
    promised_by_agent_id: Mapped[str | None] = mapped_column(String(100), nullable=True)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime())


class Attempt(Base):
    __tablename__ = "callback_attempts"
    __table_args__ = (UniqueConstraint("commitment_id", "attempt_key", name="uq_callback_attempt_key"),)

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    commitment_id: Mapped[str] = mapped_column(ForeignKey("callback_commitments.id"), index=True)
    attempt_key: Mapped[str] = mapped_column(String(200))  # event id or Idempotency-Key: dedupe
    number: Mapped[int] = mapped_column(Integer)  # 1-based; 0 when it came after the end (late)
    result: Mapped[str] = mapped_column(String(20))
    agent_id: Mapped[str | None] = mapped_column(String(100), nullable=True)
    notes: Mapped[str | None] = mapped_column(Text, nullable=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime())
    source: Mapped[str] = mapped_column(String(40))  # "event" | "api"
    late: Mapped[bool] = mapped_column(Boolean, default=False)  # after the commitment had ended

    commitment: Mapped[Commitment] = relationship(back_populates="attempt_history")


class AgentPresence(Base):
    __tablename__ = "callback_agent_presence"

    tenant_id: Mapped[str] = mapped_column(String(100), primary_key=True)
    agent_id: Mapped[str] = mapped_column(String(100), primary_key=True)
    site: Mapped[str] = mapped_column(String(100), index=True)
    status: Mapped[str] = mapped_column(String(20))  # the agent's own choice (agent.status_changed)
    changed_at: Mapped[datetime] = mapped_column(UTCDateTime())
    # The router's view of their work (agent.work_changed), apart from the status; null: not heard yet.
    activity: Mapped[str | None] = mapped_column(String(20), nullable=True)
    activity_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class DispatchLock(Base):
    __tablename__ = "callback_dispatch_locks"

    tenant_id: Mapped[str] = mapped_column(String(100), primary_key=True)
    site: Mapped[str] = mapped_column(String(100), primary_key=True)
    last_dispatch_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class AgentToken(Base):
    """The id of each agent's current bearer token (``agent.token_issued``): older tokens are revoked."""

    __tablename__ = "callback_agent_tokens"

    tenant_id: Mapped[str] = mapped_column(String(100), primary_key=True)
    agent_id: Mapped[str] = mapped_column(String(100), primary_key=True)
    token_id: Mapped[str] = mapped_column(String(100))
    issued_at: Mapped[datetime] = mapped_column(UTCDateTime())
