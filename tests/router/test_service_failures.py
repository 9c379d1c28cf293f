"""A transaction that fails after the engine already changed must not leave the two apart: the engine is
rebuilt from the database, so a reservation that was never committed does not exist."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import select

import services.router.unit_of_work as unit_of_work
from services.router import rebuild
from services.router.service import RouterService
from services.router.store import contacts, offers
from shared.events import AgentStatus, Channel, ContactRequested, Customer, make_event
from tests.router.conftest import bare_service, chat_agent


@pytest.fixture
async def service(tmp_path: Path) -> AsyncIterator[RouterService]:
    async with bare_service(f"sqlite+aiosqlite:///{tmp_path / 'router.sqlite3'}") as svc:
        yield svc


async def test_a_failed_offer_transaction_leaves_no_phantom_reservation(
    service: RouterService, monkeypatch: pytest.MonkeyPatch
) -> None:
    profile = chat_agent("A")
    await service.register_agent("alice", profile, AgentStatus.AVAILABLE)
    event = ContactRequested(
        contact_id="c1", source="t", external_id="1", channel=Channel.CHAT, customer=Customer(id="x")
    )
    real_outbox_row = unit_of_work.outbox_row

    def broken_outbox_row(data, **kwargs):  # type: ignore[no-untyped-def]
        if type(data).__name__ == "OfferMade":
            raise RuntimeError("database went away mid-transaction")
        return real_outbox_row(data, **kwargs)

    monkeypatch.setattr(unit_of_work, "outbox_row", broken_outbox_row)
    # The group that records the contact ends with its offer, which fails: the group is rolled back
    # and committed again without it, so the contact is queued and the caller hears success...
    await service.handle_event(make_event(event, source="t"))
    with pytest.raises(RuntimeError):
        await service.tick()  # ...then the tick's own try: the engine reserved alice, the transaction failed
    assert service.engine.is_waiting("c1") and service.engine.reserved_agent("c1") is None
    assert service.engine.agent("alice").load.get(Channel.CHAT, 0) == 0
    assert service.open_offers.by_id == {}
    async with service.sessionmaker() as s:
        assert (await s.execute(select(contacts.c.state))).scalar_one() == "waiting"
        assert (await s.execute(select(offers))).all() == []

    monkeypatch.setattr(unit_of_work, "outbox_row", real_outbox_row)
    assert await service.tick() == 1  # the database is reachable again: the offer is made
    assert service.engine.reserved_agent("c1") == "alice"


async def test_when_even_the_rebuild_fails_the_engine_is_rebuilt_before_its_next_use(
    service: RouterService, monkeypatch: pytest.MonkeyPatch
) -> None:
    profile = chat_agent("A")
    await service.register_agent("alice", profile, AgentStatus.AVAILABLE)
    event = ContactRequested(
        contact_id="c1", source="t", external_id="1", channel=Channel.CHAT, customer=Customer(id="x")
    )
    real_outbox_row, real_rebuild = unit_of_work.outbox_row, rebuild.from_database

    def broken_outbox_row(data, **kwargs):  # type: ignore[no-untyped-def]
        raise RuntimeError("database went away")

    async def broken_rebuild(self):  # type: ignore[no-untyped-def]
        raise RuntimeError("still away")

    monkeypatch.setattr(unit_of_work, "outbox_row", broken_outbox_row)
    monkeypatch.setattr(rebuild, "from_database", broken_rebuild)
    with pytest.raises(RuntimeError):
        # The contact is queued and offered in memory, the transaction fails, the rebuild fails, and
        # the retry without the offer cannot start: the engine is stale.
        await service.handle_event(make_event(event, source="t"))
    assert service.engine.reserved_agent("c1") == "alice"  # a phantom: the database never saw it
    monkeypatch.setattr(unit_of_work, "outbox_row", real_outbox_row)
    monkeypatch.setattr(rebuild, "from_database", real_rebuild)
    await service.handle_event(make_event(event, source="t"))  # redelivered: rebuilt first, then applied
    assert service.engine.reserved_agent("c1") == "alice"
    async with service.sessionmaker() as s:
        assert (await s.execute(select(contacts.c.state))).scalar_one() == "offered"
        assert len((await s.execute(select(offers))).all()) == 1
