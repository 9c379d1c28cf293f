"""Read models of the callback service: one commitment, the filtered list, today's summary, and whether
an agent's token is still its current one.

Reads never change state; each runs on a session of its own (the database is the truth). The service
holds one :class:`CallbackViews` as ``views``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from sqlalchemy import ColumnElement, and_, or_, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import selectinload

from services.callback.clock import Clock
from services.callback.errors import CommitmentNotFound
from services.callback.lifecycle import CloseReason, Status
from services.callback.rows import OPEN
from services.callback.store import AgentToken, Commitment
from shared.business_hours import BusinessCalendars


@dataclass(frozen=True)
class ListFilter:
    status: Sequence[str] = ()
    day: date | None = None  # site-local date of the deadline
    agent_id: str | None = None
    customer_id: str | None = None
    site: str | None = None
    at_risk: bool | None = None
    tenant_id: str | None = None
    limit: int = 100
    offset: int = 0


@dataclass
class SiteSummary:
    """Counts over the promises due on one (site-local) day.

    ``same_day_fulfilment_rate`` = fulfilled / promised: it only rises through the day and is the
    final rate once every promise has ended; None when nothing was promised.
    """

    site: str | None
    date: date | None
    promised: int = 0
    fulfilled: int = 0
    open: int = 0
    at_risk: int = 0
    breached: int = 0
    breached_unflagged: int = 0  # of those, not flagged at risk first
    closed: int = 0
    exhausted: int = 0  # of those closed, after max_attempts without reaching the customer

    def count(self, c: Commitment) -> None:
        self.promised += 1
        if c.status == Status.FULFILLED.value:
            self.fulfilled += 1
        elif c.status in OPEN:
            self.open += 1
            self.at_risk += int(c.at_risk)
        elif c.status == Status.BREACHED.value:
            self.breached += 1
            self.breached_unflagged += int(c.at_risk_at is None)
        elif c.status == Status.CLOSED.value:
            self.closed += 1
            self.exhausted += int(c.close_reason == CloseReason.ATTEMPTS_EXHAUSTED.value)

    def add(self, other: SiteSummary) -> None:
        for name in (
            "promised",
            "fulfilled",
            "open",
            "at_risk",
            "breached",
            "breached_unflagged",
            "closed",
            "exhausted",
        ):
            setattr(self, name, getattr(self, name) + getattr(other, name))

    @property
    def same_day_fulfilment_rate(self) -> float | None:
        return round(self.fulfilled / self.promised, 4) if self.promised else None


@dataclass
class Summary:
    at: datetime
    overall: SiteSummary
    sites: list[SiteSummary]


class CallbackViews:
    def __init__(
        self, sessionmaker: async_sessionmaker[AsyncSession], calendars: BusinessCalendars, clock: Clock
    ) -> None:
        self.sessionmaker = sessionmaker
        self.calendars = calendars
        self.clock = clock

    async def get(self, callback_id: str) -> Commitment:
        """One commitment with its attempt history."""
        async with self.sessionmaker() as s:
            c = (
                await s.execute(
                    select(Commitment)
                    .where(Commitment.id == callback_id)
                    .options(selectinload(Commitment.attempt_history))
                )
            ).scalar_one_or_none()
        if c is None:
            raise CommitmentNotFound(callback_id)
        return c

    async def list(self, f: ListFilter) -> list[Commitment]:
        stmt = select(Commitment)
        conditions: list[ColumnElement[bool]] = []
        if f.status:
            conditions.append(Commitment.status.in_(list(f.status)))
        if f.day is not None:
            conditions.append(Commitment.deadline_day == f.day)
        if f.agent_id is not None:
            conditions.append(
                or_(
                    Commitment.promised_by_agent_id == f.agent_id,
                    Commitment.fulfilled_by_agent_id == f.agent_id,
                    Commitment.accepted_by_agent_id == f.agent_id,
                    Commitment.released_to_agent_id == f.agent_id,
                )
            )
        if f.customer_id is not None:
            conditions.append(Commitment.customer_id == f.customer_id)
        if f.site is not None:
            conditions.append(Commitment.site == f.site)
        if f.at_risk is not None:
            conditions.append(Commitment.at_risk.is_(f.at_risk))
        if f.tenant_id is not None:
            conditions.append(Commitment.tenant_id == f.tenant_id)
        if conditions:
            stmt = stmt.where(and_(*conditions))
        stmt = stmt.order_by(Commitment.deadline, Commitment.id).limit(f.limit).offset(f.offset)
        async with self.sessionmaker() as s:
            return list((await s.execute(stmt)).scalars().all())

    async def summary_today(self, now: datetime | None = None) -> Summary:
        """The promises for today (each site's local today), per site and overall.

        A promise belongs to the day it was made for (``promise_day``: "today" in the customer's clock),
        not to the date its deadline falls on at the site: "by 21:00" for a customer three hours west of
        a UTC site ends after the site's midnight, and is still one of today's promises."""
        now = (now or self.clock.now()).astimezone(UTC)
        utc_day = now.date()
        async with self.sessionmaker() as s:
            rows = (
                (
                    await s.execute(
                        # deadline_day is indexed, and lies within three days of any site's today for
                        # the promises made for that day (timezones differ by up to 26 hours)
                        select(Commitment).where(
                            Commitment.deadline_day >= utc_day - timedelta(days=3),
                            Commitment.deadline_day <= utc_day + timedelta(days=3),
                        )
                    )
                )
                .scalars()
                .all()
            )
        sites: dict[str, SiteSummary] = {}
        for c in rows:
            today = now.astimezone(self.calendars.for_site(c.site).tz).date()
            if c.promise_day == today:
                sites.setdefault(c.site, SiteSummary(site=c.site, date=today)).count(c)
        overall = SiteSummary(site=None, date=None)
        for entry in sites.values():
            overall.add(entry)
        return Summary(at=now, overall=overall, sites=[sites[k] for k in sorted(sites)])

    async def agent_token_is_current(self, tenant_id: str, agent_id: str, token_id: str) -> bool:
        """False when the router has since issued the agent another token. An agent not heard of yet
        (its ``agent.token_issued`` still on the way) is trusted on its signature alone."""
        async with self.sessionmaker() as s:
            row = await s.get(AgentToken, (tenant_id, agent_id))
        return row is None or row.token_id == token_id
