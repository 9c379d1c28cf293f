"""Fixtures every test area may use: where a real Kafka broker is (or a clear skip when there is none)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

# Every service refuses to start without an operator token (shared.auth): in-process apps read it from
# here; helpers that spawn processes with a clean environment pass it on explicitly.
TEST_ADMIN_TOKEN = "test-admin-token"
os.environ["SWITCHBOARD_ADMIN_TOKEN"] = TEST_ADMIN_TOKEN
ADMIN_HEADERS = {"Authorization": f"Bearer {TEST_ADMIN_TOKEN}"}

KAFKA_HOW_TO = (
    "set KAFKA_BOOTSTRAP_SERVERS=host:port to run it against a broker, "
    "or start a Docker engine so testcontainers can run one"
)


@pytest.fixture(scope="session")
def kafka_bootstrap_servers() -> Iterator[str]:
    """A Kafka broker: ``KAFKA_BOOTSTRAP_SERVERS`` if set, else a KRaft broker in Docker, else skip."""
    configured = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if configured:
        yield configured
        return
    try:
        from testcontainers.community.kafka import KafkaContainer
    except ImportError as exc:  # testcontainers < 4.15 has only the old module path
        try:
            from testcontainers.kafka import KafkaContainer  # type: ignore[no-redef]
        except ImportError:
            pytest.skip(f"Kafka leg skipped: testcontainers[kafka] is not installed ({exc}); {KAFKA_HOW_TO}")
    try:
        container = KafkaContainer().with_kraft()  # constructing it already talks to Docker
        container.start()
    except Exception as exc:  # docker.errors.DockerException and friends: no engine answered
        pytest.skip(
            f"Kafka leg skipped: KAFKA_BOOTSTRAP_SERVERS is not set and no Docker engine answered "
            f"({type(exc).__name__}); {KAFKA_HOW_TO}"
        )
    try:
        yield container.get_bootstrap_server()
    finally:
        container.stop()
