"""Event bus: one interface, two implementations chosen by ``SWITCHBOARD_BUS`` (embedded | kafka)."""

from __future__ import annotations

from shared.bus.base import BusUnavailable, EventBus, Handler, Record, Subscription
from shared.settings import CommonSettings

__all__ = ["BusUnavailable", "EventBus", "Handler", "Record", "Subscription", "create_bus"]


def create_bus(settings: CommonSettings) -> EventBus:
    if settings.bus == "kafka":
        from shared.bus.kafka import KafkaBus

        return KafkaBus(
            bootstrap_servers=settings.kafka_bootstrap_servers,
            partitions=settings.kafka_partitions,
            replication_factor=settings.kafka_replication_factor,
            topic_prefix=settings.topic_prefix,
            max_attempts=settings.max_delivery_attempts,
            publish_timeout=settings.kafka_publish_timeout,
        )
    from shared.bus.embedded import EmbeddedBus

    return EmbeddedBus(
        settings.embedded_bus_path,
        partitions=settings.embedded_partitions,
        topic_prefix=settings.topic_prefix,
        max_attempts=settings.max_delivery_attempts,
    )
