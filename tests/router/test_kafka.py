"""The router on the production bus: contacts consumed from Kafka, offers and completions published to it.

Runs against ``KAFKA_BOOTSTRAP_SERVERS`` (or a Docker broker); skipped with the reason otherwise. Topics
get a unique prefix so runs never see each other's events."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from shared import topics
from shared.events import AssignmentCompleted, OfferAccepted, OfferMade
from tests.router.conftest import collect_events, contact, eventually, running_router

pytestmark = pytest.mark.kafka


async def test_routing_over_kafka(tmp_path: Path, kafka_bootstrap_servers: str) -> None:
    common = {
        "bus": "kafka",
        "kafka_bootstrap_servers": kafka_bootstrap_servers,
        "kafka_partitions": 2,
        "topic_prefix": f"router-test-{uuid.uuid4().hex[:10]}.",
    }
    async with running_router(tmp_path / "data", common_overrides=common) as router:
        async with collect_events(router.bus, topics.ROUTING, "router-test-audit") as routing:
            _, alice = await router.register("alice")
            c = contact("kafka-1")
            await router.bus.emit(c, source="test")
            offer = await router.wait_offer("alice", alice, timeout=30)
            assert offer["contact_id"] == c.contact_id
            r = await router.client.post(f"/v1/offers/{offer['offer_id']}/accept", headers=alice)
            assert r.status_code == 200, r.text
            r = await router.client.post(
                f"/v1/contacts/{c.contact_id}/complete", json={"resolved": True}, headers=alice
            )
            assert r.status_code == 200, r.text

            async def published() -> bool:
                return any(isinstance(e, AssignmentCompleted) for e in routing)

            await eventually(published, timeout=30)
        types = [type(e) for e in routing if getattr(e, "contact_id", None) == c.contact_id]
        assert types == [OfferMade, OfferAccepted, AssignmentCompleted]
