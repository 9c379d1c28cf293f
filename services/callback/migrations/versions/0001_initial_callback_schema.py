"""Initial callback schema: commitments, requests, attempts, agent presence, dispatch locks, inbox, outbox.

Revision ID: 0001
Revises:
Create Date: 2026-11-25 11:03:33.727280
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:

    op.create_table(
        "callback_agent_presence",
        sa.Column("tenant_id", sa.String(length=100), nullable=False),
        sa.Column("agent_id", sa.String(length=100), nullable=False),
        sa.Column("site", sa.String(length=100), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("changed_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "agent_id", name=op.f("pk_callback_agent_presence")),
    )
    with op.batch_alter_table("callback_agent_presence", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_callback_agent_presence_site"), ["site"], unique=False)

    op.create_table(
        "callback_commitments",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("tenant_id", sa.String(length=100), nullable=False),
        sa.Column("site", sa.String(length=100), nullable=False),
        sa.Column("customer_id", sa.String(length=200), nullable=False),
        sa.Column("open_customer_id", sa.String(length=200), nullable=True),
        sa.Column("customer", sa.JSON(), nullable=False),
        sa.Column("customer_timezone", sa.String(length=64), nullable=True),
        sa.Column("contact_id", sa.String(length=100), nullable=True),
        sa.Column("intent", sa.String(length=40), nullable=True),
        sa.Column("channel", sa.String(length=40), nullable=False),
        sa.Column("origin", sa.String(length=40), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("requested_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("virtual_start_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("deadline", sa.DateTime(timezone=True), nullable=False),
        sa.Column("deadline_day", sa.Date(), nullable=False),
        sa.Column("promise_day", sa.Date(), nullable=False),
        sa.Column("next_business_day", sa.Boolean(), nullable=False),
        sa.Column("promise_text", sa.Text(), nullable=False),
        sa.Column("window_start", sa.DateTime(timezone=True), nullable=True),
        sa.Column("window_end", sa.DateTime(timezone=True), nullable=True),
        sa.Column("initial_slack_seconds", sa.Float(), nullable=False),
        sa.Column("not_before", sa.DateTime(timezone=True), nullable=False),
        sa.Column("next_check_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("at_risk", sa.Boolean(), nullable=False),
        sa.Column("at_risk_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("promised_by_agent_id", sa.String(length=100), nullable=True),
        sa.Column("preferred_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("released_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("released_to_agent_id", sa.String(length=100), nullable=True),
        sa.Column("due_emissions", sa.Integer(), nullable=False),
        sa.Column("accepted_by_agent_id", sa.String(length=100), nullable=True),
        sa.Column("accepted_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_attempt_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_result", sa.String(length=20), nullable=True),
        sa.Column("merged_requests", sa.Integer(), nullable=False),
        sa.Column("fulfilled_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("fulfilled_by_agent_id", sa.String(length=100), nullable=True),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("close_reason", sa.String(length=40), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_callback_commitments")),
        sa.UniqueConstraint("tenant_id", "open_customer_id", name="uq_callback_open_customer"),
    )
    with op.batch_alter_table("callback_commitments", schema=None) as batch_op:
        batch_op.create_index("ix_callback_customer", ["tenant_id", "customer_id"], unique=False)
        batch_op.create_index("ix_callback_deadline_day", ["deadline_day", "site"], unique=False)
        batch_op.create_index("ix_callback_due", ["status", "next_check_at"], unique=False)
        batch_op.create_index("ix_callback_release", ["tenant_id", "site", "status", "not_before"], unique=False)

    op.create_table(
        "callback_dispatch_locks",
        sa.Column("tenant_id", sa.String(length=100), nullable=False),
        sa.Column("site", sa.String(length=100), nullable=False),
        sa.Column("last_dispatch_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("tenant_id", "site", name=op.f("pk_callback_dispatch_locks")),
    )
    op.create_table(
        "callback_attempts",
        sa.Column("seq", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("commitment_id", sa.String(length=64), nullable=False),
        sa.Column("attempt_key", sa.String(length=200), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("result", sa.String(length=20), nullable=False),
        sa.Column("agent_id", sa.String(length=100), nullable=True),
        sa.Column("notes", sa.Text(), nullable=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("source", sa.String(length=40), nullable=False),
        sa.Column("late", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(
            ["commitment_id"],
            ["callback_commitments.id"],
            name=op.f("fk_callback_attempts_commitment_id_callback_commitments"),
        ),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_callback_attempts")),
        sa.UniqueConstraint("commitment_id", "attempt_key", name="uq_callback_attempt_key"),
    )
    with op.batch_alter_table("callback_attempts", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_callback_attempts_commitment_id"), ["commitment_id"], unique=False)

    op.create_table(
        "callback_requests",
        sa.Column("tenant_id", sa.String(length=100), nullable=False),
        sa.Column("request_id", sa.String(length=200), nullable=False),
        sa.Column("commitment_id", sa.String(length=64), nullable=False),
        sa.Column("origin", sa.String(length=40), nullable=False),
        sa.Column("promised_by_agent_id", sa.String(length=100), nullable=True),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["commitment_id"],
            ["callback_commitments.id"],
            name=op.f("fk_callback_requests_commitment_id_callback_commitments"),
        ),
        sa.PrimaryKeyConstraint("tenant_id", "request_id", name=op.f("pk_callback_requests")),
    )
    with op.batch_alter_table("callback_requests", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_callback_requests_commitment_id"), ["commitment_id"], unique=False)

    op.create_table(
        "outbox",
        sa.Column("seq", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("topic", sa.String(length=200), nullable=False),
        sa.Column("key", sa.String(length=300), nullable=True),
        sa.Column("payload", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("seq"),
    )
    op.create_table(
        "processed_events",
        sa.Column("consumer", sa.String(length=100), nullable=False),
        sa.Column("event_id", sa.String(length=100), nullable=False),
        sa.Column("processed_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("consumer", "event_id"),
    )


def downgrade() -> None:

    op.drop_table("processed_events")
    op.drop_table("outbox")
    with op.batch_alter_table("callback_requests", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_callback_requests_commitment_id"))

    op.drop_table("callback_requests")
    with op.batch_alter_table("callback_attempts", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_callback_attempts_commitment_id"))

    op.drop_table("callback_attempts")
    op.drop_table("callback_dispatch_locks")
    with op.batch_alter_table("callback_commitments", schema=None) as batch_op:
        batch_op.drop_index("ix_callback_release")
        batch_op.drop_index("ix_callback_due")
        batch_op.drop_index("ix_callback_deadline_day")
        batch_op.drop_index("ix_callback_customer")

    op.drop_table("callback_commitments")
    with op.batch_alter_table("callback_agent_presence", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_callback_agent_presence_site"))

    op.drop_table("callback_agent_presence")
