"""The router's rows as both sides read them: lookups by id, and their conversions.

Use cases and views share these, so a row means the same to both. Times are stored as epoch seconds;
languages are compared on their primary subtag.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import bindparam, exists, func, literal_column, select, true, update

from services.router.agent_work import routable_status
from services.router.auth import Principal
from services.router.errors import Forbidden, NotFound
from services.router.leeway import role_of
from services.router.matching import AgentState, WaitingContact
from services.router.store import ContactState, OfferState, agents, contacts, offers
from shared.db import SqlSession
from shared.events import AgentStatus, Channel, Intent, Role, Tier


def to_datetime(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


def to_ts(value: datetime) -> float:
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.timestamp()


def period_of(ts: float) -> str:
    return to_datetime(ts).strftime("%Y-%m-%d")


def language_key(tag: str) -> str:
    """Languages match on the primary subtag, case-insensitively: a customer tagged ``en-US`` is served
    by an agent who speaks ``en`` (an exact-tag match would leave the customer waiting forever)."""
    return tag.strip().replace("_", "-").split("-", 1)[0].lower() or "en"


def waiting_contact(row: Any) -> WaitingContact:
    """A contact row as the engine queues it."""
    customer = row.customer or {}
    return WaitingContact(
        contact_id=row.contact_id,
        site=row.site,
        channel=Channel(row.channel),
        intent=Intent(row.intent) if row.intent else None,
        tier=Tier(customer.get("tier", Tier.STANDARD)),
        language=language_key(customer.get("language") or "en"),
        enqueued_at=row.virtual_start,
        expected_handling_seconds=row.expected_handling_seconds,
        priority_boost=row.priority_boost,
        preferred_agent_id=row.preferred_agent_id,
        widen_roles=row.widen_roles,
        callback_id=row.callback_id,
    )


def agent_state(row: Any, load: dict[Channel, int], *, connected: bool) -> AgentState:
    """An agent row as the engine sees it (an available agent in wrap-up is not routed to yet)."""
    roles = [Role(row.primary_role)] + [Role(r) for r in row.roles if r != row.primary_role]
    return AgentState(
        agent_id=row.agent_id,
        site=row.site,
        roles=roles,
        skills=dict(row.skills),
        languages={language_key(lang) for lang in row.languages},
        capacity={Channel(k): int(v) for k, v in row.capacity.items()},
        status=routable_status(AgentStatus(row.status), wrapping=row.wrap_up_until is not None),
        load=dict(load),
        idle_since=row.status_since,
        connected=connected,
    )


# The lookups every lifecycle makes, built once: a construct reused keeps its cache key, so SQLAlchemy
# neither rebuilds nor re-keys it per execution (bench_lifecycle: 6.4 -> 5.1 ms of CPU per lifecycle).
AGENT_BY_ID = select(agents).where(agents.c.agent_id == bindparam("agent_id"))
CONTACT_BY_ID = select(contacts).where(contacts.c.contact_id == bindparam("contact_id"))
OFFER_BY_ID = select(offers).where(offers.c.offer_id == bindparam("offer_id"))


def _accepted_explanation(contact_id: Any, agent_id: Any) -> Any:
    """The explanation of the offer of ``contact_id`` that ``agent_id`` accepted last (its role)."""
    return (
        select(offers.c.explanation)
        .where(offers.c.contact_id == contact_id, offers.c.agent_id == agent_id, offers.c.state == OfferState.ACCEPTED)
        .order_by(offers.c.resolved_at.desc())
        .limit(1)
    )


ACCEPTED_OFFER_EXPLANATION = _accepted_explanation(bindparam("contact_id"), bindparam("agent_id"))
# A completion reads the contact and the explanation of the offer its agent accepted (the role whose
# leeway applies) in one statement, correlated to the contact's row.
CONTACT_WITH_ACCEPTED_EXPLANATION = select(
    *contacts.c,
    _accepted_explanation(contacts.c.contact_id, contacts.c.agent_id).scalar_subquery().label("accepted_explanation"),
).where(contacts.c.contact_id == bindparam("contact_id"))


async def agent_row(session: SqlSession, agent_id: str) -> Any:
    row = (await session.execute(AGENT_BY_ID, {"agent_id": agent_id})).first()
    if row is None:
        raise NotFound(f"agent {agent_id!r} not found")
    return row


async def contact_row(session: SqlSession, contact_id: str) -> Any:
    return (await session.execute(CONTACT_BY_ID, {"contact_id": contact_id})).first()


# A contact offered or assigned, changed and read back in one statement (``UPDATE .. RETURNING``, which
# SQLite has since 3.35): the use cases that change it also need its details. Built once, like the reads
# above: a statement built per call is keyed for SQLAlchemy's compiled cache on every execution.
_THIS_CONTACT = contacts.c.contact_id == bindparam("the_contact")
OFFER_CONTACT = (
    update(contacts)
    .where(_THIS_CONTACT)
    .values(state=ContactState.OFFERED, agent_id=bindparam("to_agent"), offers_made=contacts.c.offers_made + 1)
    .returning(*contacts.c)
)
ASSIGN_CONTACT = (
    update(contacts)
    .where(_THIS_CONTACT)
    .values(state=ContactState.ASSIGNED, agent_id=bindparam("to_agent"), answered_at=bindparam("at"))
    .returning(*contacts.c)
)

COMPLETE_CONTACT = (
    update(contacts)
    .where(_THIS_CONTACT)
    .values(
        state=ContactState.COMPLETED,
        ended_at=bindparam("at"),
        outcome=bindparam("outcome", type_=contacts.c.outcome.type),
    )
)


async def offer_contact(session: SqlSession, contact_id: str, agent_id: str) -> Any:
    """The contact is offered to the agent (one more offer made); its row as changed."""
    return (await session.execute(OFFER_CONTACT, {"the_contact": contact_id, "to_agent": agent_id})).first()


async def assign_contact(session: SqlSession, contact_id: str, agent_id: str, at: float) -> Any:
    """The contact is assigned to the agent, answered ``at``; its row as changed."""
    params = {"the_contact": contact_id, "to_agent": agent_id, "at": at}
    return (await session.execute(ASSIGN_CONTACT, params)).first()


async def complete_contact(session: SqlSession, contact_id: str, at: float, outcome: dict[str, Any]) -> None:
    """The contact is completed ``at`` with ``outcome`` (its JSON document)."""
    await session.execute(COMPLETE_CONTACT, {"the_contact": contact_id, "at": at, "outcome": outcome})


# An accept changes the offer and reads back what it needs of it and of its agent, in one statement: only
# an offer still pending whose agent still exists is taken (else nothing changes, and the caller reads
# why). On PostgreSQL every statement is a round trip the router's one writer waits for.
# The offer's side is written out: SQLAlchemy renders RETURNING's columns without their table on SQLite,
# which would turn a column comparison into ``agent_id = agent_id`` (true for every agent). Inside the
# subquery the bare ``agent_id`` is the agent's (the innermost table), the qualified one the offer's.
_OFFERS_AGENT = agents.c.agent_id == literal_column("router_offers.agent_id")
TAKE_OFFER = (
    update(offers)
    .where(
        offers.c.offer_id == bindparam("the_offer"),
        offers.c.state == OfferState.PENDING,
        select(agents.c.agent_id).where(_OFFERS_AGENT).exists(),
    )
    .values(state=OfferState.ACCEPTED, resolved_at=bindparam("at"))
    .returning(
        offers.c.explanation,
        select(agents.c.missed_offers).where(_OFFERS_AGENT).scalar_subquery().label("agent_missed_offers"),
        select(agents.c.contact_uris).where(_OFFERS_AGENT).scalar_subquery().label("agent_contact_uris"),
    )
)


# PostgreSQL: the accept's two changes in one statement (data-modifying CTEs; SQLite has none): the offer
# taken as above, and its contact assigned only if it was. One row with both, or none (nothing changed).
_TAKEN = TAKE_OFFER.cte("taken")
_ASSIGNED = (
    update(contacts)
    .where(_THIS_CONTACT, exists(select(_TAKEN.c.explanation)))
    .values(state=ContactState.ASSIGNED, agent_id=bindparam("to_agent"), answered_at=bindparam("at"))
    .returning(*contacts.c)
    .cte("assigned")
)
TAKE_OFFER_AND_ASSIGN = select(
    _TAKEN.c.explanation, _TAKEN.c.agent_missed_offers, _TAKEN.c.agent_contact_uris, *_ASSIGNED.c
).select_from(_TAKEN.outerjoin(_ASSIGNED, true()))


async def take_offer_and_assign(session: SqlSession, offer_id: str, contact_id: str, agent_id: str, at: float) -> Any:
    """PostgreSQL: :func:`take_offer`, then :func:`assign_contact` if it took the offer, in one round trip;
    the row has what each returns (the contact's columns beside the offer's three), or is None."""
    params = {"the_offer": offer_id, "the_contact": contact_id, "to_agent": agent_id, "at": at}
    return (await session.execute(TAKE_OFFER_AND_ASSIGN, params)).first()


async def take_offer(session: SqlSession, offer_id: str, at: float) -> Any:
    """Accept the offer if it is pending and its agent exists; returns its ``explanation`` with the
    agent's ``agent_missed_offers`` and ``agent_contact_uris``, or None (nothing changed)."""
    return (await session.execute(TAKE_OFFER, {"the_offer": offer_id, "at": at})).first()


async def offer_for(session: SqlSession, offer_id: str, who: Principal, *, read: bool = False) -> Any:
    """The offer row, if ``who`` may act on it (or, with ``read``, see it)."""
    row = (await session.execute(OFFER_BY_ID, {"offer_id": offer_id})).first()
    if row is None:
        raise NotFound(f"offer {offer_id!r} not found")
    if not (who.may_see(row.agent_id) if read else who.may_act_for(row.agent_id)):
        raise Forbidden("this offer belongs to another agent")
    return row


async def contact_to_complete(session: SqlSession, contact_id: str) -> Any:
    """The contact row with ``accepted_explanation``: that of the offer its agent accepted, if any."""
    return (await session.execute(CONTACT_WITH_ACCEPTED_EXPLANATION, {"contact_id": contact_id})).first()


async def offered_role(session: SqlSession, contact_id: str, agent_id: str) -> Role | None:
    """The role under which the agent was offered (and accepted) the contact: its leeway's source."""
    params = {"contact_id": contact_id, "agent_id": agent_id}
    explanation = (await session.execute(ACCEPTED_OFFER_EXPLANATION, params)).scalar_one_or_none()
    return role_of(explanation)


async def loads_by_agent(session: SqlSession, agent_id: str | None = None) -> dict[str, dict[Channel, int]]:
    """Reserved + assigned contacts per agent and channel, as the database knows them."""
    stmt = (
        select(contacts.c.agent_id, contacts.c.channel, func.count())
        .where(contacts.c.state.in_((ContactState.OFFERED, ContactState.ASSIGNED)))
        .group_by(contacts.c.agent_id, contacts.c.channel)
    )
    if agent_id is not None:
        stmt = stmt.where(contacts.c.agent_id == agent_id)
    out: dict[str, dict[Channel, int]] = {}
    for aid, channel, count in (await session.execute(stmt)).all():
        if aid is not None:
            out.setdefault(aid, {})[Channel(channel)] = int(count)
    return out


async def has_assignment(session: SqlSession, agent_id: str) -> bool:
    """Whether the agent is on a contact now. An open offer is not work yet: it may time out."""
    n = (
        await session.execute(
            select(func.count())
            .select_from(contacts)
            .where(contacts.c.agent_id == agent_id, contacts.c.state == ContactState.ASSIGNED)
        )
    ).scalar_one()
    return n > 0


async def has_work(session: SqlSession, agent_id: str) -> bool:
    """Whether the agent has offers or assignments."""
    n = (
        await session.execute(
            select(func.count())
            .select_from(contacts)
            .where(
                contacts.c.agent_id == agent_id,
                contacts.c.state.in_((ContactState.OFFERED, ContactState.ASSIGNED)),
            )
        )
    ).scalar_one()
    return n > 0
