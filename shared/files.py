"""Data files (SQLite databases, the embedded bus log, the token file) hold phone numbers and secrets:
they are created readable by their owner only (``0600``), and tightened if an older version left them
world-readable. SQLite creates its ``-wal``/``-shm`` files with the database file's mode."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

PRIVATE_FILE_MODE = 0o600
PRIVATE_DIR_MODE = 0o700


def private_file(path: str | os.PathLike[str]) -> Path:
    """Create ``path`` (and its directory) if absent, owner-only; tighten it if it exists."""
    p = Path(path)
    if not p.parent.exists():
        p.parent.mkdir(parents=True, exist_ok=True, mode=PRIVATE_DIR_MODE)
    fd = os.open(p, os.O_WRONLY | os.O_CREAT, PRIVATE_FILE_MODE)  # never truncates an existing file
    try:
        os.fchmod(fd, PRIVATE_FILE_MODE)
    finally:
        os.close(fd)
    for suffix in ("-wal", "-shm", "-journal"):
        with contextlib.suppress(FileNotFoundError):
            os.chmod(f"{p}{suffix}", PRIVATE_FILE_MODE)
    return p
