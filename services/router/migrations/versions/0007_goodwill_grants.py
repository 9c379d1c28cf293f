"""Goodwill grants in a table of their own: the goodwill period budget is tenant-wide, and several active
routers (``ownership=partitions``) must check it against every router's grants, which they read here.
Until now each router replayed the grants of its own domains from the completed contacts' outcomes.

The grants already made are copied from those outcomes, with the role each contact was offered under.

Revision ID: 0007_router_goodwill_grants
Revises: 0006_router_lease_address
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0007_router_goodwill_grants"
down_revision: str | None = "0006_router_lease_address"
branch_labels = None
depends_on = None

ROLES = {"service", "sales", "brand_ambassador"}


def upgrade() -> None:
    grants = op.create_table(
        "router_goodwill_grants",
        sa.Column("seq", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True),
        sa.Column("contact_id", sa.String(100), nullable=False),
        sa.Column("granted_at", sa.Double, nullable=False),
        sa.Column("amount", sa.Double, nullable=False),
        sa.Column("role", sa.String(40), nullable=True),
    )
    op.create_index("ix_router_goodwill_grants_granted_at", "router_goodwill_grants", ["granted_at"])
    contacts = sa.table(
        "router_contacts",
        sa.column("contact_id", sa.String),
        sa.column("agent_id", sa.String),
        sa.column("state", sa.String),
        sa.column("ended_at", sa.Double),
        sa.column("outcome", sa.JSON),
    )
    offers = sa.table(
        "router_offers",
        sa.column("contact_id", sa.String),
        sa.column("agent_id", sa.String),
        sa.column("state", sa.String),
        sa.column("resolved_at", sa.Double),
        sa.column("explanation", sa.JSON),
    )
    bind = op.get_bind()
    done = bind.execute(
        sa.select(contacts.c.contact_id, contacts.c.agent_id, contacts.c.ended_at, contacts.c.outcome).where(
            contacts.c.state == "completed", contacts.c.ended_at.is_not(None)
        )
    )
    rows = []
    for contact_id, agent_id, ended_at, outcome in done:
        amount = float((outcome or {}).get("goodwill_amount") or 0.0)
        if amount <= 0:
            continue
        explanation = bind.execute(
            sa.select(offers.c.explanation)
            .where(offers.c.contact_id == contact_id, offers.c.agent_id == agent_id, offers.c.state == "accepted")
            .order_by(offers.c.resolved_at.desc())
            .limit(1)
        ).scalar()
        role = explanation.get("role") if isinstance(explanation, dict) else None
        role = role if role in ROLES else None
        rows.append({"contact_id": contact_id, "granted_at": ended_at, "amount": amount, "role": role})
    if rows:
        op.bulk_insert(grants, rows)


def downgrade() -> None:
    op.drop_index("ix_router_goodwill_grants_granted_at", table_name="router_goodwill_grants")
    op.drop_table("router_goodwill_grants")
