"""Router tables (agents, contacts, offers, timeline, counters, lease) and the shared inbox/outbox.

Revision ID: 0001_router_initial
Revises:
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001_router_initial"
down_revision = None
branch_labels = None
depends_on = None

_id_type = sa.BigInteger().with_variant(sa.Integer, "sqlite")


def upgrade() -> None:
    op.create_table(
        "processed_events",
        sa.Column("consumer", sa.String(100), primary_key=True),
        sa.Column("event_id", sa.String(100), primary_key=True),
        sa.Column("processed_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "outbox",
        sa.Column("seq", _id_type, primary_key=True, autoincrement=True),
        sa.Column("topic", sa.String(200), nullable=False),
        sa.Column("key", sa.String(300), nullable=True),
        sa.Column("payload", sa.LargeBinary, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "router_agents",
        sa.Column("agent_id", sa.String(100), primary_key=True),
        sa.Column("tenant_id", sa.String(100), nullable=False),
        sa.Column("site", sa.String(100), nullable=False),
        sa.Column("team", sa.String(100), nullable=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("roles", sa.JSON, nullable=False),
        sa.Column("primary_role", sa.String(50), nullable=False),
        sa.Column("skills", sa.JSON, nullable=False),
        sa.Column("languages", sa.JSON, nullable=False),
        sa.Column("capacity", sa.JSON, nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("status_since", sa.Double, nullable=False),
        sa.Column("status_reason", sa.String(200), nullable=True),
        sa.Column("wrap_up_until", sa.Double, nullable=True),
        sa.Column("missed_offers", sa.Integer, nullable=False),
        sa.Column("token_hash", sa.String(128), nullable=False),
        sa.Column("created_at", sa.Double, nullable=False),
        sa.Column("updated_at", sa.Double, nullable=False),
    )
    op.create_index("ix_router_agents_token_hash", "router_agents", ["token_hash"], unique=True)
    op.create_table(
        "router_contacts",
        sa.Column("contact_id", sa.String(100), primary_key=True),
        sa.Column("tenant_id", sa.String(100), nullable=False),
        sa.Column("site", sa.String(100), nullable=False),
        sa.Column("channel", sa.String(20), nullable=False),
        sa.Column("state", sa.String(20), nullable=False),
        sa.Column("customer", sa.JSON, nullable=False),
        sa.Column("intent", sa.String(30), nullable=True),
        sa.Column("summary", sa.Text, nullable=True),
        sa.Column("expected_handling_seconds", sa.Integer, nullable=True),
        sa.Column("within_business_hours", sa.Boolean, nullable=True),
        sa.Column("received_at", sa.Double, nullable=False),
        sa.Column("virtual_start", sa.Double, nullable=False),
        sa.Column("priority_boost", sa.Double, nullable=False),
        sa.Column("preferred_agent_id", sa.String(100), nullable=True),
        sa.Column("widen_roles", sa.Boolean, nullable=False),
        sa.Column("callback_id", sa.String(100), nullable=True),
        sa.Column("callback_attempt", sa.Integer, nullable=True),
        sa.Column("agent_id", sa.String(100), nullable=True),
        sa.Column("offers_made", sa.Integer, nullable=False),
        sa.Column("answered_at", sa.Double, nullable=True),
        sa.Column("ended_at", sa.Double, nullable=True),
        sa.Column("outcome", sa.JSON, nullable=True),
    )
    op.create_index("ix_router_contacts_state", "router_contacts", ["state"])
    op.create_index("ix_router_contacts_agent_state", "router_contacts", ["agent_id", "state"])
    op.create_index("ix_router_contacts_ended_at", "router_contacts", ["ended_at"])
    op.create_index("ix_router_contacts_received_at", "router_contacts", ["received_at"])
    op.create_table(
        "router_offers",
        sa.Column("offer_id", sa.String(100), primary_key=True),
        sa.Column("contact_id", sa.String(100), nullable=False),
        sa.Column("agent_id", sa.String(100), nullable=False),
        sa.Column("state", sa.String(20), nullable=False),
        sa.Column("made_at", sa.Double, nullable=False),
        sa.Column("expires_at", sa.Double, nullable=False),
        sa.Column("resolved_at", sa.Double, nullable=True),
        sa.Column("rule", sa.String(200), nullable=False),
        sa.Column("score", sa.Double, nullable=False),
        sa.Column("explanation", sa.JSON, nullable=False),
        sa.Column("reason", sa.String(200), nullable=True),
    )
    op.create_index("ix_router_offers_state_expires", "router_offers", ["state", "expires_at"])
    op.create_index("ix_router_offers_agent_state", "router_offers", ["agent_id", "state"])
    op.create_index("ix_router_offers_contact", "router_offers", ["contact_id"])
    op.create_index("ix_router_offers_made_at", "router_offers", ["made_at"])
    op.create_table(
        "router_timeline",
        sa.Column("seq", _id_type, primary_key=True, autoincrement=True),
        sa.Column("contact_id", sa.String(100), nullable=False),
        sa.Column("at", sa.Double, nullable=False),
        sa.Column("kind", sa.String(40), nullable=False),
        sa.Column("agent_id", sa.String(100), nullable=True),
        sa.Column("detail", sa.JSON, nullable=False),
    )
    op.create_index("ix_router_timeline_contact", "router_timeline", ["contact_id", "seq"])
    op.create_table(
        "router_counters",
        sa.Column("period", sa.String(20), primary_key=True),
        sa.Column("name", sa.String(60), primary_key=True),
        sa.Column("value", sa.Double, nullable=False),
    )
    op.create_table(
        "router_leases",
        sa.Column("name", sa.String(200), primary_key=True),
        sa.Column("owner", sa.String(100), nullable=False),
        sa.Column("expires_at", sa.Double, nullable=False),
        sa.Column("acquired_at", sa.Double, nullable=False),
    )


def downgrade() -> None:
    tables = ("router_leases", "router_counters", "router_timeline", "router_offers", "router_contacts")
    for table in (*tables, "router_agents"):
        op.drop_table(table)
    op.drop_table("outbox")
    op.drop_table("processed_events")
