"""Read models of the router: agents, offers, assignments, the queue, timelines and statistics.

Reads never change state. They run on their own sessions (the database is the truth) and, for the line,
on the engine under the writer's lock. The service holds one :class:`RouterViews` as ``views``; the
payloads pushed on agent streams come from here too, so REST and streams show the same shapes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.router import goodwill, staffing
from services.router.auth import Principal
from services.router.coverage import FirstOffer, coverage
from services.router.domains import OwnedDomains
from services.router.errors import NotFound
from services.router.leeway import leeway_for, role_of
from services.router.matching import Decision, MatchingEngine
from services.router.rows import (
    agent_row,
    contact_row,
    loads_by_agent,
    offer_for,
    offered_role,
    period_of,
    to_datetime,
    waiting_contact,
)
from services.router.sales_targets import Sale, progress
from services.router.settings import RouterSettings
from services.router.shared_presence import StreamSeen
from services.router.stats import ContactTimes, service_level
from services.router.store import ContactState, OfferState, agents, contacts, counters, offers, timeline
from services.router.strategy import GoodwillLedger, Strategy
from services.router.streams import Presence
from services.router.unit_of_work import Writer
from shared.events import Channel, Role


def offer_view(row: Any) -> dict[str, Any]:
    return {
        "offer_id": row.offer_id,
        "contact_id": row.contact_id,
        "agent_id": row.agent_id,
        "state": row.state,
        "made_at": to_datetime(row.made_at).isoformat(),
        "expires_at": to_datetime(row.expires_at).isoformat(),
        "resolved_at": to_datetime(row.resolved_at).isoformat() if row.resolved_at else None,
        "rule": row.rule,
        "score": row.score,
        "explanation": row.explanation,
        "reason": row.reason,
    }


class RouterState(Protocol):
    """What the reads see of the router. Strategy, engine and ledger are replaced on a reload or a
    rebuild, so the views read them through the router each time instead of keeping their own."""

    sessionmaker: async_sessionmaker[AsyncSession]
    settings: RouterSettings
    strategy: Strategy
    engine: MatchingEngine
    goodwill: GoodwillLedger
    domains: OwnedDomains
    presence: Presence
    writer: Writer
    clock: Callable[[], float]


class RouterViews:
    """The read side: queries over the router's state (its database, and its engine for the line)."""

    def __init__(self, router: RouterState) -> None:
        self._router = router

    @property
    def strategy(self) -> Strategy:
        """The active strategy."""
        return self._router.strategy

    def clock(self) -> float:
        return self._router.clock()

    def _agent_view(self, row: Any, load: dict[Channel, int], now: float) -> dict[str, Any]:
        return {
            "agent_id": row.agent_id,
            "name": row.name,
            "site": row.site,
            "team": row.team,
            "roles": list(row.roles),
            "primary_role": row.primary_role,
            "skills": dict(row.skills),
            "languages": list(row.languages),
            "capacity": dict(row.capacity),
            "contact_uris": dict(row.contact_uris or {}),
            "status": row.status,
            "status_reason": row.status_reason,
            "status_since": to_datetime(row.status_since),
            # The router's view of their work, apart from the status they chose (agent_work.py).
            "activity": row.activity,
            "activity_since": to_datetime(row.activity_since) if row.activity_since else None,
            "wrap_up_until": to_datetime(row.wrap_up_until) if row.wrap_up_until else None,
            "missed_offers": row.missed_offers,
            "load": {c.value: n for c, n in load.items()},
            **self._stream(row, now),
        }

    def _stream(self, row: Any, now: float) -> dict[str, bool]:
        """Connected and present: from this router's streams for the agents it routes, else as the
        owner of the agent's domain recorded them (several active routers, ``shared_presence.py``)."""
        presence = self._router.presence
        if self._router.domains.whole or self._router.engine.agent(row.agent_id) is not None:
            return {"connected": presence.is_online(row.agent_id), "present": presence.is_present(row.agent_id, now)}
        seen = StreamSeen(open=row.stream_open, changed_at=row.stream_changed_at)
        return {"connected": seen.open, "present": seen.present(now, presence.grace)}

    async def get_agent(self, agent_id: str) -> dict[str, Any]:
        async with self._router.sessionmaker() as session:
            row = await agent_row(session, agent_id)
            loads = await loads_by_agent(session, agent_id)
        return self._agent_view(row, loads.get(agent_id, {}), self.clock())

    async def list_agents(self) -> list[dict[str, Any]]:
        async with self._router.sessionmaker() as session:
            rows = (await session.execute(select(agents).order_by(agents.c.agent_id))).all()
            loads = await loads_by_agent(session)
        now = self.clock()
        return [self._agent_view(r, loads.get(r.agent_id, {}), now) for r in rows]

    def offer_payload(self, offer_id: str, row: Any, decision: Decision, expires: float) -> dict[str, Any]:
        """An open offer as the agent sees it (stream ``offer`` event and ``GET /agents/{id}/offers``)."""
        plan = self.strategy.plan(waiting_contact(row))
        leeway = leeway_for(self.strategy, plan, role_of(decision.explanation))
        return {
            "offer_id": offer_id,
            "contact_id": row.contact_id,
            "agent_id": decision.agent_id,
            "expires_at": to_datetime(expires).isoformat(),
            "rule": decision.rule,
            "score": float(decision.score),
            "explanation": dict(decision.explanation),
            "contact": self._contact_summary(row),
            "plan": {
                "role": leeway.role.value,
                "upsell": leeway.upsell,
                "allowed_handling_seconds": leeway.allowed_handling_seconds,
                "goodwill_budget": self._router.goodwill.budget_for(leeway.goodwill_budget, self.clock(), leeway.role),
                "short_question": plan.short_question,
            },
        }

    @staticmethod
    def _contact_summary(row: Any) -> dict[str, Any]:
        return {
            "contact_id": row.contact_id,
            "site": row.site,
            "channel": row.channel,
            "intent": row.intent,
            "summary": row.summary,
            "customer": row.customer,
            "callback_id": row.callback_id,
            "callback_attempt": row.callback_attempt,
            "virtual_start": to_datetime(row.virtual_start).isoformat(),
        }

    async def get_offer(self, offer_id: str, who: Principal) -> dict[str, Any]:
        async with self._router.sessionmaker() as session:
            return offer_view(await offer_for(session, offer_id, who, read=True))

    def assignment_view(self, row: Any, role: Role | None) -> dict[str, Any]:
        """An assignment with its plan (stream ``assignment`` event and ``GET /agents/{id}/assignments``)."""
        plan = self.strategy.plan(waiting_contact(row))
        leeway = leeway_for(self.strategy, plan, role)
        return {
            "contact_id": row.contact_id,
            "agent_id": row.agent_id,
            "state": row.state,
            "answered_at": to_datetime(row.answered_at).isoformat() if row.answered_at else None,
            "contact": self._contact_summary(row),
            "plan": {
                "rule": plan.rule,
                "role": leeway.role.value,
                "upsell": leeway.upsell,
                "allowed_handling_seconds": leeway.allowed_handling_seconds,
                "goodwill_budget": self._router.goodwill.budget_for(leeway.goodwill_budget, self.clock(), leeway.role),
                "short_question": plan.short_question,
            },
        }

    async def agent_offers(self, agent_id: str) -> list[dict[str, Any]]:
        async with self._router.sessionmaker() as session:
            rows = (
                await session.execute(
                    select(offers, contacts)
                    .join(contacts, contacts.c.contact_id == offers.c.contact_id)
                    .where(offers.c.agent_id == agent_id, offers.c.state == OfferState.PENDING)
                    .order_by(offers.c.made_at)
                )
            ).all()
        out = []
        for r in rows:
            decision = Decision(r.contact_id, r.agent_id, r.rule, r.score, r.explanation)
            out.append(self.offer_payload(r.offer_id, r, decision, r.expires_at))
        return out

    async def agent_assignments(self, agent_id: str) -> list[dict[str, Any]]:
        async with self._router.sessionmaker() as session:
            rows = (
                await session.execute(
                    select(contacts)
                    .where(contacts.c.agent_id == agent_id, contacts.c.state == ContactState.ASSIGNED)
                    .order_by(contacts.c.answered_at)
                )
            ).all()
            roles = [await offered_role(session, r.contact_id, agent_id) for r in rows]
        return [self.assignment_view(r, role) for r, role in zip(rows, roles, strict=True)]

    async def queue(
        self, *, limit: int | None = None, site: str | None = None, channel: Channel | None = None
    ) -> tuple[list[dict[str, Any]], int]:
        """Waiting contacts in the order the engine would serve them (priority, then place in line),
        and how many wait in total."""
        async with self._router.writer.locked():
            now = self.clock()
            entries = self._router.engine.queue_snapshot(now, limit, site=site, channel=channel)
            total = self._router.engine.waiting_count()
            unservable = self._router.engine.unservable_reasons(e.contact_id for e in entries)
        items = [
            {
                "contact_id": e.contact_id,
                "site": e.site,
                "channel": e.channel.value,
                "priority": round(e.priority, 3),
                "waited_seconds": round(e.waited_seconds, 3),
                "rule": e.rule,
                "open_roles": [r.value for r in e.open_roles],
                "callback_id": e.callback_id,
                "preferred_agent_id": e.preferred_agent_id,
                # why nobody on duty can serve it (channel, language, role, skill, nobody_on_duty), or None
                "unservable_reason": unservable[e.contact_id],
            }
            for e in entries
        ]
        return items, total

    async def timeline(self, contact_id: str) -> dict[str, Any]:
        async with self._router.sessionmaker() as session:
            row = await contact_row(session, contact_id)
            if row is None:
                raise NotFound(f"contact {contact_id!r} not found")
            entries = (
                await session.execute(
                    select(timeline).where(timeline.c.contact_id == contact_id).order_by(timeline.c.seq)
                )
            ).all()
        return {
            "contact_id": contact_id,
            "state": row.state,
            "channel": row.channel,
            "site": row.site,
            "agent_id": row.agent_id,
            "callback_id": row.callback_id,
            "events": [
                {"at": to_datetime(e.at).isoformat(), "kind": e.kind, "agent_id": e.agent_id, **(e.detail or {})}
                for e in entries
            ],
        }

    async def activity_since(self, since: float) -> list[tuple[float, float | None, float | None, str]]:
        """(received, answered, ended, state) of contacts that arrived or ended since ``since``: the
        dashboard's throughput chart. Both columns are indexed; a contact received before ``since`` and
        answered after it but not yet ended is left out (rare, and it shows once it ends)."""
        async with self._router.sessionmaker() as session:
            rows = (
                await session.execute(
                    select(contacts.c.received_at, contacts.c.answered_at, contacts.c.ended_at, contacts.c.state).where(
                        (contacts.c.received_at > since) | (contacts.c.ended_at > since)
                    )
                )
            ).all()
        return [(r.received_at, r.answered_at, r.ended_at, r.state) for r in rows]

    @staticmethod
    async def _first_offers(session: AsyncSession, since: float) -> list[FirstOffer]:
        """Each contact's first offer made in the window (coverage.py): the rule and the role."""
        rows = (
            await session.execute(
                select(offers.c.contact_id, offers.c.rule, offers.c.explanation)
                .where(offers.c.made_at > since)
                .order_by(offers.c.made_at)
            )
        ).all()
        first: dict[str, FirstOffer] = {}
        for r in rows:
            if r.contact_id not in first:
                first[r.contact_id] = FirstOffer(r.rule, role_of(r.explanation))
        return list(first.values())

    async def _sales_target_progress(self, session: AsyncSession, now: float) -> list[dict[str, Any]]:
        """Target vs actual for the strategy's sales targets (sales_targets.py)."""
        targets = self.strategy.sales_targets
        if not targets:
            return []
        since = now - max(t.period_seconds for t in targets)
        rows = (
            await session.execute(
                select(
                    contacts.c.contact_id, contacts.c.ended_at, contacts.c.outcome, agents.c.team, offers.c.explanation
                )
                .join(agents, agents.c.agent_id == contacts.c.agent_id)
                .outerjoin(
                    offers,
                    (offers.c.contact_id == contacts.c.contact_id)
                    & (offers.c.agent_id == contacts.c.agent_id)
                    & (offers.c.state == OfferState.ACCEPTED),
                )
                .where(contacts.c.state == ContactState.COMPLETED, contacts.c.ended_at > since)
            )
        ).all()
        sales: dict[str, Sale] = {}  # one per contact (a callback's earlier attempts were accepted too)
        for r in rows:
            if not (r.outcome or {}).get("sold"):
                continue
            role = role_of(r.explanation)
            sales[r.contact_id] = Sale(r.ended_at, role.value if role is not None else None, r.team)
        return progress(targets, sales.values(), now)

    async def unservable_now(self) -> dict[str, Any]:
        """Contacts waiting right now that nobody on duty can serve, by reason: live, unlike the
        ``unservable`` timeline entry and counter, so it drops when someone able comes on duty."""
        async with self._router.writer.locked():
            reasons = self._router.engine.unservable_reasons(self._router.engine.waiting_ids())
        by_reason: dict[str, int] = {}
        for reason in reasons.values():
            if reason is not None:
                by_reason[reason] = by_reason.get(reason, 0) + 1
        return {"count": sum(by_reason.values()), "by_reason": dict(sorted(by_reason.items()))}

    async def stats(self) -> dict[str, Any]:
        unservable = await self.unservable_now()
        now = self.clock()
        window = self._router.settings.service_level_window_seconds
        since = now - window
        async with self._router.sessionmaker() as session:
            waiting_rows = (
                await session.execute(
                    select(contacts.c.site, contacts.c.channel, func.count(), func.min(contacts.c.virtual_start))
                    .where(contacts.c.state.in_(ContactState.OPEN))
                    .group_by(contacts.c.site, contacts.c.channel)
                )
            ).all()
            status_rows = (await session.execute(select(agents.c.status, func.count()).group_by(agents.c.status))).all()
            activity_rows = (
                await session.execute(select(agents.c.activity, func.count()).group_by(agents.c.activity))
            ).all()
            outstanding = (
                await session.execute(
                    select(func.count()).select_from(offers).where(offers.c.state == OfferState.PENDING)
                )
            ).scalar_one()
            recent = (
                await session.execute(
                    select(
                        contacts.c.channel,
                        contacts.c.state,
                        contacts.c.received_at,
                        contacts.c.answered_at,
                        contacts.c.ended_at,
                    ).where(
                        contacts.c.callback_id.is_(None),
                        contacts.c.received_at > since,
                        contacts.c.state != ContactState.DIVERTED,
                    )
                )
            ).all()
            arrivals, on_duty = await staffing.load(session, self.strategy, since)
            waiting_by_role = await staffing.waiting_by_role(session, self.strategy)
            targets = await self._sales_target_progress(session, now)
            first_offers = await self._first_offers(session, since)
            today = period_of(now)
            day = {
                r.name: r.value
                for r in (await session.execute(select(counters).where(counters.c.period == today))).all()
            }
            # Goodwill is the tenant's: with several routers, every router's grants, not this one's ledger.
            granted = (
                self._router.goodwill
                if self._router.domains.whole
                else await goodwill.ledger(session, self.strategy.goodwill, now)
            )
        waiting = [
            {"site": site, "channel": channel, "waiting": n, "oldest_wait_seconds": round(now - oldest, 3)}
            for site, channel, n, oldest in waiting_rows
        ]
        by_channel: dict[str, list[ContactTimes]] = {}
        for r in recent:
            by_channel.setdefault(r.channel, []).append(
                ContactTimes(
                    received_at=r.received_at,
                    answered_at=r.answered_at,
                    abandoned_at=r.ended_at if r.state == ContactState.ABANDONED else None,
                    waiting=r.state in ContactState.OPEN,
                )
            )
        service_levels = {
            channel: service_level(rows, now, self.strategy.channel_policy(Channel(channel)).service_level)
            for channel, rows in by_channel.items()
        }
        sales = self._router.engine.sales
        sales_n, offered_n = sales.counts(now)
        return {
            "at": to_datetime(now).isoformat(),
            "strategy_version": self.strategy.version,
            "waiting": waiting,
            "waiting_total": sum(w["waiting"] for w in waiting),
            "waiting_by_role": waiting_by_role,  # by the first role of each contact's plan
            "oldest_wait_seconds": max((w["oldest_wait_seconds"] for w in waiting), default=0.0),
            "agents_by_status": {status: n for status, n in status_rows},
            "agents_by_activity": {activity: n for activity, n in activity_rows},
            "offers_outstanding": outstanding,
            "window_seconds": window,
            "service_level": service_levels,
            "staffing": staffing.as_json(staffing.estimate(self.strategy, arrivals, on_duty, window)),
            "sales_share": {
                "share": round(sales_n / offered_n, 4) if offered_n else 0.0,
                "offered_to_sales": sales_n,
                "offered": offered_n,
                "cap": self.strategy.sales_share.max_share,
                "min_sample": self.strategy.sales_share.min_sample,  # below it the cap does not bind
                "period_seconds": self.strategy.sales_share.period_seconds,
                "per": self.strategy.sales_share.per,  # "tenant": one share for all sites; "site": each its own
                "by_site": {
                    site: {"share": round(sales.share(now, site), 4), "offered": n}
                    for site in sales.sites()
                    if (n := sales.counts(now, site)[1])
                },
            },
            "goodwill": {
                "spent": round(granted.spent(now), 2),
                "budget": self.strategy.goodwill.period_budget,
                "remaining": _round2(granted.remaining(now)),
                "period_seconds": self.strategy.goodwill.period_seconds,
                "by_role": {
                    role.value: {
                        "spent": round(granted.spent_by(role, now), 2),
                        "budget": budget,
                        "remaining": _round2(max(budget - granted.spent_by(role, now), 0.0)),
                    }
                    for role, budget in self.strategy.goodwill.role_budgets.items()
                },
            },
            "unservable": unservable,
            "sales_targets": targets,
            "strategy_coverage": coverage(self.strategy, arrivals, on_duty, first_offers),
            "today": day,
            # What the strategy asked for and did not get today (recorded, not forced; issue 15).
            "strategy_deviations_today": {
                name: day.get(name, 0.0) for name in ("handling_overruns", "sales_on_short_questions")
            },
        }


def _round2(x: float | None) -> float | None:
    return round(x, 2) if x is not None else None
