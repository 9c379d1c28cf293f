"""Contacts remember where they came from (source, external id), so offer.accepted can say which call.

A telephone system bridging the accepted call needs its own call id back (Twilio's CallSid, an Asterisk
channel id); without it every connector would have to keep its own map of contacts to calls.

Revision ID: 0004_router_contact_external_ref
Revises: 0003_router_agent_contact_uris
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0004_router_contact_external_ref"
down_revision: str | None = "0003_router_agent_contact_uris"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Nullable: callbacks have no inbound call, and contacts from before this revision are not backfilled.
    with op.batch_alter_table("router_contacts") as batch:
        batch.add_column(sa.Column("source", sa.String(100), nullable=True))
        batch.add_column(sa.Column("external_id", sa.String(200), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("router_contacts") as batch:
        batch.drop_column("external_id")
        batch.drop_column("source")
