"""Agents' contact URIs: validated on registration and update, kept when an update leaves them out, and
carried by ``offer.accepted`` so a connector can ring the agent."""

from __future__ import annotations

import pytest

from shared import topics
from shared.contact_uri import UriKind, kind_of, normalise_contact_uri
from shared.events import Channel, OfferAccepted
from tests.router.conftest import ADMIN, Router, collect_events, contact, eventually


@pytest.mark.parametrize(
    ("given", "stored", "kind"),
    [
        ("client:alice", "client:alice", UriKind.CLIENT),
        ("sip:alice@pbx.example.com:5060;transport=tls", "sip:alice@pbx.example.com:5060;transport=tls", UriKind.SIP),
        ("+49 30 901820", "+4930901820", UriKind.NUMBER),
    ],
)
def test_accepted_addresses_are_normalised(given: str, stored: str, kind: UriKind) -> None:
    assert normalise_contact_uri(given) == stored
    assert kind_of(stored) is kind


@pytest.mark.parametrize(
    "bad", ["alice", "client:", "client:al ice", "sip:pbx.example.com", "sip:a@b c", "+1234", "tel:+4930901820", ""]
)
def test_bad_addresses_are_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="client|SIP|phone|E.164"):
        normalise_contact_uri(bad)


async def test_registration_stores_and_update_edits_contact_uris(router: Router) -> None:
    agent, _ = await router.register("alice", contact_uris={"voice": "client:alice", "chat": "+49 30 901820"})
    assert agent["contact_uris"] == {"voice": "client:alice", "chat": "+4930901820"}
    profile = {"name": "Alice", "roles": ["service"], "capacity": {"voice": 1}}
    kept = await router.client.put("/v1/agents/alice", json=profile, headers=ADMIN)
    assert kept.status_code == 200 and kept.json()["contact_uris"]["voice"] == "client:alice"
    changed = await router.client.put(
        "/v1/agents/alice", json={**profile, "contact_uris": {"voice": "sip:alice@pbx.example.com"}}, headers=ADMIN
    )
    assert changed.status_code == 200 and changed.json()["contact_uris"] == {"voice": "sip:alice@pbx.example.com"}


@pytest.mark.parametrize("uris", [{"voice": "alice"}, {"voice": "sip:nohost"}, {"fax": "client:alice"}])
async def test_bad_contact_uri_is_a_422_naming_the_field(router: Router, uris: dict[str, str]) -> None:
    body = {"agent_id": "bob", "name": "Bob", "roles": ["service"], "contact_uris": uris}
    r = await router.client.post("/v1/agents", json=body, headers=ADMIN)
    assert r.status_code == 422, r.text
    assert any("contact_uris" in [str(p) for p in e["loc"]] for e in r.json()["detail"])
    await router.register("bob")
    r = await router.client.put(
        "/v1/agents/bob", json={k: v for k, v in body.items() if k != "agent_id"}, headers=ADMIN
    )
    assert r.status_code == 422


async def test_offer_accepted_carries_the_agents_address_for_the_channel(router: Router) -> None:
    async with collect_events(router.bus, topics.ROUTING, "test-routing") as routing:
        _, alice = await router.register("alice", capacity={"voice": 1}, contact_uris={"voice": "client:alice"})
        call = contact("CA123", channel=Channel.VOICE)
        await router.emit(call)
        offer = await router.wait_offer("alice", alice)
        r = await router.client.post(f"/v1/offers/{offer['offer_id']}/accept", headers=alice)
        assert r.status_code == 200, r.text

        async def accepted() -> list[OfferAccepted]:
            return [e for e in routing if isinstance(e, OfferAccepted)]

        (event,) = await eventually(accepted)
    assert (event.contact_id, event.agent_id) == (call.contact_id, "alice")
    assert event.channel is Channel.VOICE and event.contact_uri == "client:alice"
    assert (event.source, event.external_id) == ("test", "CA123")  # which call to bridge
    assert event.is_callback is False  # the callback service skips it without a lookup
