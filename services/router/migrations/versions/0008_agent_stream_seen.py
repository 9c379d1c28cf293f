"""The agent's stream as its domain's owner last saw it (``stream_open``, ``stream_changed_at``): with
several active routers, any router answers lists and the dashboard, but only the owner of an agent's
domain holds its stream (``shared_presence.py``).

Revision ID: 0008_router_agent_stream_seen
Revises: 0007_router_goodwill_grants
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0008_router_agent_stream_seen"
down_revision: str | None = "0007_router_goodwill_grants"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("router_agents") as batch:
        batch.add_column(sa.Column("stream_open", sa.Boolean, nullable=False, server_default=sa.false()))
        batch.add_column(sa.Column("stream_changed_at", sa.Double, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("router_agents") as batch:
        batch.drop_column("stream_changed_at")
        batch.drop_column("stream_open")
