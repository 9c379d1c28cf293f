"""Alembic env for the callback service: its tables plus the shared inbox/outbox tables."""

import shared.inbox  # noqa: F401  (registers processed_events on MESSAGING_METADATA)
import shared.outbox  # noqa: F401  (registers outbox on MESSAGING_METADATA)
from services.callback.store import CALLBACK_METADATA
from shared.db import MESSAGING_METADATA
from shared.migrations_env import run_migrations

run_migrations([CALLBACK_METADATA, MESSAGING_METADATA])
