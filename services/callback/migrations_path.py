"""Where the callback service's Alembic scripts live (importable without importing the app)."""

from pathlib import Path

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
