"""Index processed_events.processed_at so the inbox can be pruned by age without a full scan.

Revision ID: 0002_router_inbox_prune_index
Revises: 0001_router_initial
"""

from __future__ import annotations

from alembic import op

revision: str = "0002_router_inbox_prune_index"
down_revision: str | None = "0001_router_initial"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("processed_events_processed_at", "processed_events", ["processed_at"])


def downgrade() -> None:
    op.drop_index("processed_events_processed_at", table_name="processed_events")
