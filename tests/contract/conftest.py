"""The bus under test: the embedded bus always, Kafka when a broker is available (else a printed skip)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.contract.support import BusHarness

MAX_ATTEMPTS = 3
PARTITIONS = 4

# Contract tests a bus is known to fail, with why. Strict: once the bus is fixed, the XPASS fails the
# run, so the entry is removed and the test guards the behaviour from then on.
KNOWN_GAPS: dict[tuple[str, str], str] = {}


@pytest.fixture(params=["embedded", pytest.param("kafka", marks=pytest.mark.kafka)])
async def harness(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[BusHarness]:
    """A fresh, isolated bus setup: unique topic prefix (and, embedded, its own log file)."""
    gap = KNOWN_GAPS.get((request.param, request.function.__name__))
    if gap:
        request.applymarker(pytest.mark.xfail(strict=True, reason=gap))
    prefix = f"contract-{uuid.uuid4().hex[:10]}."
    if request.param == "embedded":
        config = {
            "path": str(tmp_path / "bus.sqlite3"),
            "partitions": PARTITIONS,
            "topic_prefix": prefix,
            "max_attempts": MAX_ATTEMPTS,
            "retry_backoff": 0.01,
            # Short so that taking over from a killed member is quick in tests.
            "session_timeout": 2.0,
            "heartbeat_interval": 0.2,
            "shutdown_grace": 2.0,
        }
    else:
        config = {
            "bootstrap_servers": request.getfixturevalue("kafka_bootstrap_servers"),
            "partitions": PARTITIONS,
            "replication_factor": 1,
            "topic_prefix": prefix,
            "max_attempts": MAX_ATTEMPTS,
            "retry_backoff": 0.01,
            # The broker's default group.min.session.timeout.ms is 6 s.
            "session_timeout_ms": 6000,
            "heartbeat_interval_ms": 500,
            "shutdown_grace": 2.0,
        }
    h = BusHarness(request.param, config)
    try:
        yield h
    finally:
        await h.close()
