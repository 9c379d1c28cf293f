"""Alembic environment of the intake service: its idempotency table plus the shared messaging tables."""

import shared.inbox  # noqa: F401  (registers processed_events on MESSAGING_METADATA)
import shared.outbox  # noqa: F401  (registers outbox on MESSAGING_METADATA)
from services.intake.store import INTAKE_METADATA
from shared.db import MESSAGING_METADATA
from shared.migrations_env import run_migrations

run_migrations([INTAKE_METADATA, MESSAGING_METADATA])
