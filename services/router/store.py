"""The router's durable state: agents, contacts (the queue), offers (leases), timeline, counters, goodwill.

The database is the truth; the in-memory matching engine is an index rebuilt from it on start. Every
change is written in the same transaction as the events it emits (outbox), so a crash at any instant
leaves either the old state with no event, or the new state with its events queued for publishing.

Times are float seconds since the epoch (the matching core's clock), stored as double precision: exact,
dialect-neutral and free of the SQLite naive-datetime trap.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Double,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    false,
)

ROUTER_METADATA = MetaData()


class ContactState:
    """Where a contact is in its life. Only WAITING and OFFERED contacts are in the matching engine."""

    WAITING = "waiting"  # in the queue, no outstanding offer
    OFFERED = "offered"  # an offer (lease) is outstanding to one agent
    ASSIGNED = "assigned"  # an agent accepted; it is working on it
    COMPLETED = "completed"
    ABANDONED = "abandoned"  # the caller hung up before being served
    DIVERTED = "diverted"  # the strategy offered a callback instead of queueing
    CANCELLED = "cancelled"  # a queued callback closed elsewhere (attempted, fulfilled or breached)

    OPEN = (WAITING, OFFERED)
    LIVE = (WAITING, OFFERED, ASSIGNED)


class OfferState:
    PENDING = "pending"
    ACCEPTED = "accepted"
    DECLINED = "declined"
    TIMED_OUT = "timed_out"
    WITHDRAWN = "withdrawn"  # the contact left (abandoned) while the offer was open


agents = Table(
    "router_agents",
    ROUTER_METADATA,
    Column("agent_id", String(100), primary_key=True),
    Column("tenant_id", String(100), nullable=False),
    Column("site", String(100), nullable=False),
    Column("team", String(100), nullable=True),
    Column("name", String(200), nullable=False),
    Column("roles", JSON, nullable=False),
    Column("primary_role", String(50), nullable=False),
    Column("skills", JSON, nullable=False),
    Column("languages", JSON, nullable=False),
    Column("capacity", JSON, nullable=False),
    # The agent's own choice (available, break, offline) and, apart from it, the router's view of their
    # work (idle, offered, on_contact, wrap_up): see use_cases/agent_status.py and agent_work.py.
    Column("status", String(20), nullable=False),
    Column("status_since", Double, nullable=False),
    Column("status_reason", String(200), nullable=True),
    Column("activity", String(20), nullable=False, default="idle", server_default="idle"),
    Column("activity_since", Double, nullable=True),
    Column("wrap_up_until", Double, nullable=True),
    Column("missed_offers", Integer, nullable=False, default=0),
    # The agent's stream as its domain's owner last saw it: read by the other routers sharing the
    # domains, which answer lists and the dashboard too (shared_presence.py); unused by a lone router.
    Column("stream_open", Boolean, nullable=False, default=False, server_default=false()),
    Column("stream_changed_at", Double, nullable=True),
    # {channel: contact URI} (shared.contact_uri); null for agents registered before it existed.
    Column("contact_uris", JSON, nullable=True),
    Column("token_hash", String(128), nullable=False),
    Column("created_at", Double, nullable=False),
    Column("updated_at", Double, nullable=False),
    Index("ix_router_agents_token_hash", "token_hash", unique=True),
)

contacts = Table(
    "router_contacts",
    ROUTER_METADATA,
    Column("contact_id", String(100), primary_key=True),
    Column("tenant_id", String(100), nullable=False),
    Column("site", String(100), nullable=False),
    Column("channel", String(20), nullable=False),
    Column("state", String(20), nullable=False),
    Column("customer", JSON, nullable=False),
    Column("intent", String(30), nullable=True),
    Column("summary", Text, nullable=True),
    Column("expected_handling_seconds", Integer, nullable=True),
    Column("within_business_hours", Boolean, nullable=True),
    Column("received_at", Double, nullable=False),
    # The place in line: a callback keeps the customer's original start time.
    Column("virtual_start", Double, nullable=False),
    Column("priority_boost", Double, nullable=False, default=0.0),
    Column("preferred_agent_id", String(100), nullable=True),
    Column("widen_roles", Boolean, nullable=False, default=False),
    Column("callback_id", String(100), nullable=True),
    Column("callback_attempt", Integer, nullable=True),
    Column("agent_id", String(100), nullable=True),
    Column("offers_made", Integer, nullable=False, default=0),
    Column("answered_at", Double, nullable=True),
    Column("ended_at", Double, nullable=True),
    Column("outcome", JSON, nullable=True),
    # Where it came from (contact.requested's source/external_id): a connector's handle on the call.
    Column("source", String(100), nullable=True),
    Column("external_id", String(200), nullable=True),
    Index("ix_router_contacts_state", "state"),
    Index("ix_router_contacts_agent_state", "agent_id", "state"),
    Index("ix_router_contacts_ended_at", "ended_at"),
    Index("ix_router_contacts_received_at", "received_at"),
)

offers = Table(
    "router_offers",
    ROUTER_METADATA,
    Column("offer_id", String(100), primary_key=True),
    Column("contact_id", String(100), nullable=False),
    Column("agent_id", String(100), nullable=False),
    Column("state", String(20), nullable=False),
    Column("made_at", Double, nullable=False),
    Column("expires_at", Double, nullable=False),
    Column("resolved_at", Double, nullable=True),
    Column("rule", String(200), nullable=False),
    Column("score", Double, nullable=False),
    Column("explanation", JSON, nullable=False),
    Column("reason", String(200), nullable=True),
    Index("ix_router_offers_state_expires", "state", "expires_at"),
    Index("ix_router_offers_agent_state", "agent_id", "state"),
    Index("ix_router_offers_contact", "contact_id"),
    Index("ix_router_offers_made_at", "made_at"),
)

timeline = Table(
    "router_timeline",
    ROUTER_METADATA,
    Column("seq", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("contact_id", String(100), nullable=False),
    Column("at", Double, nullable=False),
    Column("kind", String(40), nullable=False),
    Column("agent_id", String(100), nullable=True),
    Column("detail", JSON, nullable=False),
    Index("ix_router_timeline_contact", "contact_id", "seq"),
)

# Strategy counters per period (UTC day): offered/offered_to_sales/completed/sold/goodwill_spent...
counters = Table(
    "router_counters",
    ROUTER_METADATA,
    Column("period", String(20), primary_key=True),
    Column("name", String(60), primary_key=True),
    Column("value", Double, nullable=False),
)

# Goodwill granted, one row per completion that granted any: the goodwill period budget is tenant-wide,
# so routers sharing the domains check it against every router's grants, not only their own.
goodwill_grants = Table(
    "router_goodwill_grants",
    ROUTER_METADATA,
    Column("seq", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("contact_id", String(100), nullable=False),
    Column("granted_at", Double, nullable=False),
    Column("amount", Double, nullable=False),
    Column("role", String(40), nullable=True),  # the role the contact was offered under (role budgets)
    Index("ix_router_goodwill_grants_granted_at", "granted_at"),
)

# Who owns (may change) this router state: one lease row per routing state, renewed in every transaction.
leases = Table(
    "router_leases",
    ROUTER_METADATA,
    Column("name", String(200), primary_key=True),
    Column("owner", String(100), nullable=False),
    Column("expires_at", Double, nullable=False),
    Column("acquired_at", Double, nullable=False),
    # Where the holder answers (several active routers: a request for a domain owned elsewhere is
    # forwarded there); None for a router that owns its whole database.
    Column("address", String(300), nullable=True),
)
