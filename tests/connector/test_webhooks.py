"""Signed outbound webhooks: delivery verified by a receiver, retries, the DLQ after N, and replay."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client import REGISTRY
from pydantic import ValidationError
from tenacity import wait_none

from services import dlq
from services.connector.app import create_app
from services.connector.settings import ConnectorSettings
from services.connector.webhooks import WebhookSender, WebhookSubscription, WebhookUndeliverable
from shared.bus.base import DLQ_CONSUMER_GROUP, DLQ_ERROR
from shared.events import ContactAbandoned, OfferAccepted, OfferMade, make_event, utcnow
from shared.settings import CommonSettings
from tests.connector.receiver import SECRET, Receiver, receiver
from tests.router.conftest import eventually


@pytest.fixture
def pbx() -> Iterator[Receiver]:
    with receiver() as rec:
        yield rec


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as c:
        yield c


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def subscription(url: str, **changes: object) -> WebhookSubscription:
    return WebhookSubscription.model_validate({"source": "asterisk", "url": url, "secret": SECRET, **changes})


def accepted() -> OfferAccepted:
    return OfferAccepted(offer_id="o-1", contact_id="c-1", agent_id="alice", site="berlin", contact_uri="sip:a@pbx")


async def test_delivers_the_event_signed_as_intake_verifies(pbx: Receiver, client: httpx.AsyncClient) -> None:
    sender = WebhookSender(subscription(pbx.url), client, wait=wait_none())
    env = make_event(accepted(), source="switchboard/router")
    await sender(env)
    (got,) = pbx.received
    assert got.signature is None  # the receiver's verify_generic accepted it
    assert got.headers["X-Switchboard-Event-Id"] == env.id and got.headers["X-Switchboard-Event"] == "offer.accepted"
    assert got.headers["Content-Type"] == "application/cloudevents+json"
    body = json.loads(got.body)
    assert body["type"] == "switchboard.offer.accepted.v1" and body["data"]["contact_uri"] == "sip:a@pbx"


async def test_a_wrong_secret_does_not_verify(client: httpx.AsyncClient) -> None:
    with receiver("another-secret-entirely") as other:
        await WebhookSender(subscription(other.url), client)(make_event(accepted(), source="t"))
    assert [r.signature for r in other.received] == ["signature_mismatch"]


async def test_only_subscribed_events_and_sites_are_sent(pbx: Receiver, client: httpx.AsyncClient) -> None:
    sender = WebhookSender(subscription(pbx.url, events=["contact.abandoned"], sites=["berlin"]), client)
    await sender(make_event(accepted(), source="t"))  # not subscribed
    await sender(make_event(ContactAbandoned(contact_id="c-2", site="paris"), source="t"))  # other site
    await sender(make_event(ContactAbandoned(contact_id="c-3", site="berlin"), source="t"))
    assert [json.loads(r.body)["data"]["contact_id"] for r in pbx.verified()] == ["c-3"]


async def test_retries_after_a_500_with_a_fresh_signature(pbx: Receiver, client: httpx.AsyncClient) -> None:
    pbx.statuses = [500, 503]
    sender = WebhookSender(subscription(pbx.url, source="retried"), client, wait=wait_none())
    assert await sender.deliver(make_event(accepted(), source="t")) == 3
    assert len(pbx.verified()) == 3
    assert sample("switchboard_connector_webhook_deliveries_total", source="retried", outcome="delivered") == 1
    assert sample("switchboard_connector_webhook_attempts_total", source="retried", answer="5xx") == 2
    assert sample("switchboard_connector_webhook_attempts_total", source="retried", answer="2xx") == 1


async def test_gives_up_after_n_attempts_and_does_not_retry_a_4xx(pbx: Receiver, client: httpx.AsyncClient) -> None:
    pbx.statuses = [500] * 10
    sender = WebhookSender(subscription(pbx.url, attempts=3, source="gives-up"), client, wait=wait_none())
    with pytest.raises(WebhookUndeliverable, match="HTTP 500 after 3 attempts"):
        await sender.deliver(make_event(accepted(), source="t"))
    assert len(pbx.received) == 3
    pbx.statuses = [400]
    with pytest.raises(WebhookUndeliverable, match="refused with HTTP 400"):
        await sender.deliver(make_event(accepted(), source="t"))
    assert len(pbx.received) == 4
    # What the PBX owner sees in Prometheus: two events given up on, after 3 x 5xx and 1 x 4xx.
    assert sample("switchboard_connector_webhook_deliveries_total", source="gives-up", outcome="undeliverable") == 2
    assert sample("switchboard_connector_webhook_deliveries_total", source="gives-up", outcome="delivered") == 0
    assert sample("switchboard_connector_webhook_attempts_total", source="gives-up", answer="5xx") == 3
    assert sample("switchboard_connector_webhook_attempts_total", source="gives-up", answer="4xx") == 1


def test_bad_subscription_config_is_refused_clearly() -> None:
    with pytest.raises(ValidationError, match="unknown events"):
        subscription("http://pbx/hook", events=["offer.acceptd"])
    with pytest.raises(ValidationError, match="secret"):
        WebhookSubscription.model_validate({"source": "a", "url": "http://pbx/hook", "secret": "short"})
    with pytest.raises(ValidationError, match="one webhook subscription per source"):
        ConnectorSettings(webhooks=[subscription("http://a/h"), subscription("http://b/h")])


async def test_undeliverable_event_goes_to_the_dlq_and_replay_delivers_it(tmp_path: Path, pbx: Receiver) -> None:
    common = CommonSettings(data_dir=tmp_path / "data", log_json=False, log_level="WARNING", embedded_partitions=2)
    sub = subscription(pbx.url, attempts=2, events=["offer.made"])
    app = create_app(common, ConnectorSettings(webhooks=[sub]))
    pbx.statuses = [500, 500]
    made = OfferMade(offer_id="o-9", contact_id="c-9", agent_id="alice", expires_at=utcnow(), rule="r", score=1.0)
    async with app.router.lifespan_context(app):
        bus = app.state.runtime.bus
        env = await bus.emit(made, source="switchboard/router")

        async def dead() -> list[dlq.DeadLetter]:
            return await dlq.read_dead_letters(bus, "routing")

        (letter,) = await eventually(dead)
        assert letter.header(DLQ_CONSUMER_GROUP) == sub.group  # whose delivery failed
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://c") as http:
            scraped = (await http.get("/metrics")).text  # the connector is a Prometheus target too
        assert 'switchboard_bus_dlq_size{topic="routing"} 1.0' in scraped
        given_up = f'outcome="undeliverable",source="{sub.source}"'
        assert f"switchboard_connector_webhook_deliveries_total{{{given_up}}}" in scraped
        assert "HTTP 500 after 2 attempts" in (letter.header(DLQ_ERROR) or "")
        assert len(pbx.received) == 2 and pbx.verified()
        replayed, _ = await dlq.replay(bus, [letter])
        assert replayed

        async def delivered() -> bool:
            return len(pbx.received) == 3

        await eventually(delivered)
    assert pbx.received[-1].signature is None
    assert pbx.received[-1].headers["X-Switchboard-Event-Id"] == env.id  # same id: the PBX can dedupe
