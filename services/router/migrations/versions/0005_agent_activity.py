"""An agent's own status apart from the router's view of their work.

``status`` was one field for both: ``busy`` (reason ``on_contact``) meant "working, and available for
more", ``wrap_up`` was set by the router. An agent whose offer timed out after their last contact ended
stayed ``busy on_contact`` with no load, and consumers that wait for ``available`` never counted them.
Now ``status`` is only the agent's choice (available, break, offline) and ``activity`` the router's view
(idle, offered, on_contact, wrap_up). The router settles every agent's activity from its loads when it
starts, so the backfill here only needs to be close.

Revision ID: 0005_router_agent_activity
Revises: 0004_router_contact_external_ref
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0005_router_agent_activity"
down_revision: str | None = "0004_router_contact_external_ref"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("router_agents") as batch:
        batch.add_column(sa.Column("activity", sa.String(20), nullable=False, server_default="idle"))
        batch.add_column(sa.Column("activity_since", sa.Double, nullable=True))
    agents = sa.table(
        "router_agents",
        sa.column("status", sa.String),
        sa.column("status_reason", sa.String),
        sa.column("activity", sa.String),
    )
    # Working agents were "busy on_contact" or "wrap_up": their choice was to take work.
    op.execute(
        agents.update()
        .where(agents.c.status == "busy", agents.c.status_reason == "on_contact")
        .values(status="available", activity="on_contact")
    )
    op.execute(agents.update().where(agents.c.status == "wrap_up").values(status="available", activity="wrap_up"))
    # A "busy" the agent chose meant "no new work": a break, in the new words.
    op.execute(agents.update().where(agents.c.status == "busy").values(status="break"))


def downgrade() -> None:
    agents = sa.table(
        "router_agents",
        sa.column("status", sa.String),
        sa.column("status_reason", sa.String),
        sa.column("activity", sa.String),
    )
    op.execute(
        agents.update()
        .where(agents.c.status == "available", agents.c.activity.in_(("on_contact", "offered")))
        .values(status="busy", status_reason="on_contact")
    )
    op.execute(
        agents.update().where(agents.c.status == "available", agents.c.activity == "wrap_up").values(status="wrap_up")
    )
    with op.batch_alter_table("router_agents") as batch:
        batch.drop_column("activity_since")
        batch.drop_column("activity")
