"""callback_agent_presence keeps the router's view of each agent's work apart from their own status.

The router now says what an agent does (``agent.work_changed``: idle, offered, on_contact, wrap_up)
apart from what they chose (``agent.status_changed``: available, break, offline). A free agent is both
available and idle.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("callback_agent_presence") as batch:
        batch.add_column(sa.Column("activity", sa.String(20), nullable=True))
        batch.add_column(sa.Column("activity_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("callback_agent_presence") as batch:
        batch.drop_column("activity_at")
        batch.drop_column("activity")
