"""The statements that do two lookups' work in one round trip answer as the lookups they replace, on
SQLite and on PostgreSQL: an accept takes the offer and reads its agent's columns in one UPDATE, a
completion reads the contact with the accepted offer's explanation in one SELECT."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import delete

from services.router.leeway import role_of
from services.router.rows import (
    agent_row,
    contact_row,
    contact_to_complete,
    offered_role,
    take_offer,
    take_offer_and_assign,
)
from services.router.store import agents
from shared.events import ContactRequested, Role
from tests.router.conftest import Router, contact, running_router


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest) -> str | None:
    return None if request.param == "sqlite" else request.getfixturevalue("postgres_url")  # type: ignore[no-any-return]


async def offered_to_alice(router: Router, name: str) -> tuple[ContactRequested, dict[str, Any], dict[str, str]]:
    """A contact offered to alice (her headers with it), zoe registered first: a subquery that lost its
    correlation to the offer would answer hers."""
    await router.register("zoe", status="offline", contact_uris={"voice": "client:zoe"})
    _, alice = await router.register("alice", contact_uris={"voice": "client:alice"})
    c = contact(name)
    await router.emit(c)
    return c, await router.wait_offer("alice", alice), alice


async def test_the_merged_statements_answer_as_the_lookups_they_replace(
    tmp_path: Path, database_url: str | None
) -> None:
    async with running_router(tmp_path / "data", database_url=database_url) as router:
        c, offer, alice = await offered_to_alice(router, "merged")
        sessionmaker = router.app.state.runtime.sessionmaker
        async with sessionmaker() as session:  # never committed: rolled back when it closes
            before = await contact_to_complete(session, c.contact_id)
            assert before.accepted_explanation is None  # offered, not accepted yet
            await session.execute(agents.update().where(agents.c.agent_id == "alice").values(missed_offers=2))
            taken = await take_offer(session, offer["offer_id"], 1.0)
            agent = await agent_row(session, "alice")
            assert taken.explanation == offer["explanation"]
            assert (taken.agent_missed_offers, taken.agent_contact_uris) == (agent.missed_offers, agent.contact_uris)
            assert (taken.agent_missed_offers, taken.agent_contact_uris) == (2, {"voice": "client:alice"})
            assert await take_offer(session, offer["offer_id"], 2.0) is None  # accepted: not pending any more
            assert await take_offer(session, "no-such-offer", 2.0) is None
        async with sessionmaker() as session:
            await session.execute(delete(agents).where(agents.c.agent_id == "alice"))
            assert await take_offer(session, offer["offer_id"], 1.0) is None  # its agent is gone: not taken
        r = await router.client.post(f"/v1/offers/{offer['offer_id']}/accept", headers=alice)
        assert r.status_code == 200, r.text
        async with sessionmaker() as session:
            row = await contact_to_complete(session, c.contact_id)
            assert row.state == "assigned" and row.agent_id == "alice"
            assert row.accepted_explanation == offer["explanation"]
            assert role_of(row.accepted_explanation) == await offered_role(session, c.contact_id, "alice")
            assert role_of(row.accepted_explanation) is Role.SERVICE
        r = await router.client.post(f"/v1/contacts/{c.contact_id}/complete", json={}, headers=alice)
        assert r.status_code == 200, r.text


@pytest.mark.postgres
async def test_taking_an_offer_and_assigning_its_contact_in_one_statement_changes_both_or_neither(
    tmp_path: Path, postgres_url: str
) -> None:
    """PostgreSQL's accept: the offer taken and its contact assigned in one round trip, answering what
    ``take_offer`` and ``assign_contact`` would; an offer not taken leaves the contact as it was."""
    async with running_router(tmp_path / "data", database_url=postgres_url) as router:
        c, offer, _ = await offered_to_alice(router, "both")
        sessionmaker = router.app.state.runtime.sessionmaker
        async with sessionmaker() as session:  # never committed: rolled back when it closes
            await session.execute(agents.update().where(agents.c.agent_id == "alice").values(missed_offers=2))
            both = await take_offer_and_assign(session, offer["offer_id"], c.contact_id, "alice", 5.0)
            assert both.explanation == offer["explanation"]
            assert (both.agent_missed_offers, both.agent_contact_uris) == (2, {"voice": "client:alice"})
            assigned = (both.contact_id, both.state, both.agent_id, both.answered_at)
            assert assigned == (c.contact_id, "assigned", "alice", 5.0)
            assert both.customer == (await contact_row(session, c.contact_id)).customer  # the contact's own columns
            assert await take_offer_and_assign(session, offer["offer_id"], c.contact_id, "alice", 6.0) is None
            assert (await contact_row(session, c.contact_id)).answered_at == 5.0  # the second changed nothing
        async with sessionmaker() as session:
            await session.execute(delete(agents).where(agents.c.agent_id == "alice"))
            assert await take_offer_and_assign(session, offer["offer_id"], c.contact_id, "alice", 5.0) is None
            row = await contact_row(session, c.contact_id)
            assert (row.state, row.answered_at) == ("offered", None)  # its agent is gone: neither changed
