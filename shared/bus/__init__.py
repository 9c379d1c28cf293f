"""Event bus: one interface, two implementations chosen by ``SWITCHBOARD_BUS`` (embedded | kafka)."""

from __future__ import annotations

from shared.bus.base import BatchHandler, BusUnavailable, EventBus, Handler, Record, Subscription
from shared.settings import CommonSettings

__all__ = ["BatchHandler", "BusUnavailable", "EventBus", "Handler", "Record", "Subscription", "create_bus"]


def create_bus(settings: CommonSettings) -> EventBus:
    if settings.bus == "kafka":
        from shared.bus.kafka import KafkaBus

        return KafkaBus(
            bootstrap_servers=settings.kafka_bootstrap_servers,
            partitions=settings.kafka_partitions,
            replication_factor=settings.kafka_replication_factor,
            topic_prefix=settings.topic_prefix,
            max_attempts=settings.max_delivery_attempts,
            transient_backoff_max=settings.transient_backoff_max,
            publish_timeout=settings.kafka_publish_timeout,
            session_timeout_ms=settings.kafka_session_timeout_ms,
            heartbeat_interval_ms=settings.kafka_heartbeat_interval_ms,
            rebalance_timeout_ms=settings.kafka_rebalance_timeout_ms,
            group_instance_id=settings.kafka_group_instance_id,
        )
    from shared.bus.embedded import EmbeddedBus

    return EmbeddedBus(
        settings.embedded_bus_path,
        partitions=settings.embedded_partitions,
        topic_prefix=settings.topic_prefix,
        max_attempts=settings.max_delivery_attempts,
        transient_backoff_max=settings.transient_backoff_max,
        session_timeout=settings.embedded_session_timeout,
        heartbeat_interval=settings.embedded_heartbeat_interval,
    )
