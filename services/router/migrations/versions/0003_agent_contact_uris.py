"""Agents get contact URIs per channel, so a connector can ring the agent who accepted a voice contact.

Revision ID: 0003_router_agent_contact_uris
Revises: 0002_router_inbox_prune_index
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0003_router_agent_contact_uris"
down_revision: str | None = "0002_router_inbox_prune_index"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Nullable: agents registered before this revision simply have no address yet (treated as {}).
    with op.batch_alter_table("router_agents") as batch:
        batch.add_column(sa.Column("contact_uris", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("router_agents") as batch:
        batch.drop_column("contact_uris")
