"""Where each lease holder answers: several active routers each own some routing domains, and one that
is asked about a domain it does not own forwards the request to the owner's address (``forwarding.py``).

Revision ID: 0006_router_lease_address
Revises: 0005_router_agent_activity
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0006_router_lease_address"
down_revision: str | None = "0005_router_agent_activity"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("router_leases") as batch:
        batch.add_column(sa.Column("address", sa.String(300), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("router_leases") as batch:
        batch.drop_column("address")
