"""Fixtures for the callback tests: calendars, a migrated database (SQLite, and PostgreSQL when
``SWITCHBOARD_TEST_POSTGRES_URL`` is set), a service on a manual clock, and the events it staged."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.callback.clock import ManualClock
from services.callback.lifecycle import Policy
from services.callback.migrations_path import MIGRATIONS
from services.callback.service import CallbackService
from shared import db, sqlite_inline
from shared.business_hours import BusinessCalendars
from shared.events import Envelope, decode_event
from shared.outbox import outbox
from tests.postgres import fresh_database

BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")
UTC = ZoneInfo("UTC")

WEEKDAYS_8_18 = {d: ["08:00-18:00"] for d in ("mon", "tue", "wed", "thu", "fri")}

SITES: dict[str, Any] = {
    "sites": {
        # Munich: Bavarian holidays (Epiphany 6 Jan, Corpus Christi...), Saturday mornings.
        "main": {
            "timezone": "Europe/Berlin",
            "country": "DE",
            "subdiv": "BY",
            "hours": {**WEEKDAYS_8_18, "sat": ["09:00-13:00"]},
            "closed_dates": ["2026-12-24"],
        },
        "nyc": {"timezone": "America/New_York", "country": "US", "subdiv": "NY", "hours": WEEKDAYS_8_18},
    },
    "default": {"timezone": "UTC", "hours": WEEKDAYS_8_18},
}


@pytest.fixture
def calendars() -> BusinessCalendars:
    return BusinessCalendars.from_config(SITES)


@pytest.fixture
def policy() -> Policy:
    return Policy()


def berlin(*args: int) -> datetime:
    return datetime(*args, tzinfo=BERLIN)  # type: ignore[misc]


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """A fresh database: an SQLite file, or a new database on the PostgreSQL server when one is given."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'callback.sqlite3'}"
        return
    async with fresh_database("sb_callback") as url:
        yield url


@pytest.fixture
async def sessionmaker(database_url: str) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    await db.migrate(MIGRATIONS, database_url)
    engine = db.make_engine(database_url)
    yield db.make_sessionmaker(engine)
    await engine.dispose()


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(berlin(2026, 3, 25, 7, 0))  # a Wednesday


ServiceFactory = Callable[..., CallbackService]


@pytest.fixture
def make_service(
    sessionmaker: async_sessionmaker[AsyncSession], calendars: BusinessCalendars, policy: Policy, clock: ManualClock
) -> Iterator[ServiceFactory]:
    """A service over the test database; call again to get a 'restarted' one (no shared memory). On SQLite
    its units of work run inline, as the app runs them (``inline_writes=None``: through aiosqlite)."""
    made: list[CallbackService] = []

    def make(**kwargs: Any) -> CallbackService:
        if "inline_writes" not in kwargs:
            kwargs["inline_writes"] = sqlite_inline.for_engine(sessionmaker.kw["bind"])
        made.append(
            CallbackService(
                sessionmaker,
                kwargs.pop("calendars", calendars),
                kwargs.pop("policy", policy),
                kwargs.pop("clock", clock),
                **kwargs,
            )
        )
        return made[-1]

    yield make
    for service in made:
        service.close()


@pytest.fixture
def service(make_service: ServiceFactory) -> CallbackService:
    return make_service()


class Outbox:
    """Reads (and removes) what the service staged for the bus, like the relay would."""

    def __init__(self, sessionmaker: async_sessionmaker[AsyncSession]) -> None:
        self.sessionmaker = sessionmaker

    async def take(self) -> list[Envelope]:
        async with self.sessionmaker() as s, s.begin():
            rows = (await s.execute(select(outbox).order_by(outbox.c.seq))).all()
            await s.execute(delete(outbox))
        return [decode_event(row.payload) for row in rows]

    async def take_types(self) -> list[str]:
        return [short(e.type) for e in await self.take()]


def short(event_type: str) -> str:
    """``switchboard.callback.due.v1`` -> ``callback.due``."""
    return event_type.removeprefix("switchboard.").rsplit(".", 1)[0]


@pytest.fixture
def staged(sessionmaker: async_sessionmaker[AsyncSession]) -> Outbox:
    return Outbox(sessionmaker)
