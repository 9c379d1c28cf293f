"""Event contracts exchanged between the services.

Every event travels as a CloudEvents 1.0 structured JSON envelope. The schema version lives in the
``type`` (``switchboard.contact.requested.v1``); within a version only additive changes are allowed.
Every payload carries ``tenant_id`` so tenants can come later without breaking contracts; the envelope
mirrors it in the ``tenantid`` extension so a consumer can route without parsing the payload.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from datetime import UTC, datetime
from enum import StrEnum
from functools import cached_property
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic_core import to_json

DEFAULT_TENANT = "default"
DEFAULT_SITE = "main"
SCHEMA_BASE = "https://switchboard.dev/schemas"
# Namespace for deterministic ids (UUIDv5): a retried request maps to the same id everywhere.
ID_NAMESPACE = uuid.UUID("6f1c2a52-8d5e-4f43-9a53-5b7f0c6a1e01")


def utcnow() -> datetime:
    return datetime.now(UTC)


_ID_NAMESPACE_BYTES = ID_NAMESPACE.bytes


def deterministic_id(*parts: str) -> str:
    """UUIDv5 over the parts: the same inputs always give the same id (idempotency across retries).

    Exactly ``str(uuid.uuid5(ID_NAMESPACE, "\x1f".join(parts)))`` (tests/shared/test_events.py checks it),
    computed without building a ``UUID`` object: intake derives two ids per request.
    """
    raw = bytearray(hashlib.sha1(_ID_NAMESPACE_BYTES + "\x1f".join(parts).encode()).digest()[:16])
    raw[6] = (raw[6] & 0x0F) | 0x50  # version 5
    raw[8] = (raw[8] & 0x3F) | 0x80  # RFC 4122 variant
    h = raw.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def contact_id_for(tenant_id: str, source: str, external_id: str) -> str:
    return deterministic_id("contact", tenant_id, source, external_id)


class Channel(StrEnum):
    VOICE = "voice"
    CHAT = "chat"
    EMAIL = "email"
    WEB_CALLBACK = "web_callback"


class Tier(StrEnum):
    STANDARD = "standard"
    PREMIUM = "premium"
    VIP = "vip"


class Intent(StrEnum):
    QUESTION = "question"
    SUPPORT = "support"
    PURCHASE = "purchase"
    COMPLAINT = "complaint"
    CANCELLATION = "cancellation"
    BILLING = "billing"
    OTHER = "other"


class Role(StrEnum):
    SERVICE = "service"
    SALES = "sales"
    BRAND_AMBASSADOR = "brand_ambassador"


class AgentStatus(StrEnum):
    AVAILABLE = "available"
    BUSY = "busy"
    WRAP_UP = "wrap_up"
    BREAK = "break"
    OFFLINE = "offline"


class AttemptResult(StrEnum):
    REACHED = "reached"
    NO_ANSWER = "no_answer"
    BUSY = "busy"
    VOICEMAIL = "voicemail"
    WRONG_NUMBER = "wrong_number"


class DialResult(StrEnum):
    """How ringing the accepting agent ended (a connector's or telephone system's report)."""

    ANSWERED = "answered"
    BUSY = "busy"
    NO_ANSWER = "no_answer"
    FAILED = "failed"  # the agent's leg failed
    NOT_CONNECTED = "not_connected"  # the call could not be redirected to the agent (provider error)
    CALLER_GONE = "caller_gone"  # the caller hung up before the agent answered


class CallbackOrigin(StrEnum):
    ROUTER_POLICY = "router_policy"
    WEB_FORM = "web_form"
    AGENT_PROMISE = "agent_promise"
    API = "api"
    CUSTOMER_REQUEST = "customer_request"


# --------------------------------------------------------------------------------------------------
# Value objects shared by several events
# --------------------------------------------------------------------------------------------------


class _Model(BaseModel):
    # Unknown fields are ignored, not rejected: within a schema version producers may add fields, and
    # an older consumer must keep working (forward compatibility) instead of dead-lettering them.
    model_config = ConfigDict(extra="ignore", frozen=True)


class Customer(_Model):
    id: str
    phone: str | None = None  # E.164, validated at the edge (intake)
    name: str | None = None
    tier: Tier = Tier.STANDARD
    language: str = "en"
    timezone: str | None = None  # IANA name, e.g. "Europe/Berlin"


class TimeWindow(_Model):
    start: datetime
    end: datetime


class Outcome(_Model):
    resolved: bool = False
    sold: bool = False
    goodwill_amount: float = 0.0
    callback_promised: bool = False
    callback_window: TimeWindow | None = None
    notes: str | None = None


# --------------------------------------------------------------------------------------------------
# Event payloads
# --------------------------------------------------------------------------------------------------


class EventData(_Model):
    """Base of every payload. ``event_type`` is the CloudEvents type, schema version included."""

    event_type: ClassVar[str]
    # The CloudEvents subject: the entity the event is about (a dotted path into the payload).
    subject_field: ClassVar[str | None] = None
    tenant_id: str = DEFAULT_TENANT

    def subject(self) -> str | None:
        value: object = self
        if self.subject_field is None:
            return None
        for part in self.subject_field.split("."):
            value = getattr(value, part)
        return str(value)


class ContactRequested(EventData):
    event_type: ClassVar[str] = "switchboard.contact.requested.v1"
    subject_field: ClassVar[str] = "contact_id"
    contact_id: str
    site: str = DEFAULT_SITE
    source: str
    external_id: str
    channel: Channel
    customer: Customer
    intent: Intent | None = None
    summary: str | None = None
    ivr_selections: list[str] = Field(default_factory=list)
    callback_requested: bool = False
    preferred_window: TimeWindow | None = None
    expected_handling_seconds: int | None = None
    customer_local_time: datetime | None = None
    within_business_hours: bool | None = None
    received_at: datetime = Field(default_factory=utcnow)


class ContactAbandoned(EventData):
    event_type: ClassVar[str] = "switchboard.contact.abandoned.v1"
    subject_field: ClassVar[str] = "contact_id"
    contact_id: str
    site: str = DEFAULT_SITE
    reason: str = "caller_hung_up"
    at: datetime = Field(default_factory=utcnow)


class OfferMade(EventData):
    event_type: ClassVar[str] = "switchboard.offer.made.v1"
    subject_field: ClassVar[str] = "contact_id"
    offer_id: str
    contact_id: str
    agent_id: str
    site: str = DEFAULT_SITE
    expires_at: datetime
    rule: str  # which strategy rule made this agent eligible
    score: float  # why this agent: the fit score that won
    explanation: dict[str, Any] = Field(default_factory=dict)
    at: datetime = Field(default_factory=utcnow)


class OfferAccepted(EventData):
    event_type: ClassVar[str] = "switchboard.offer.accepted.v1"
    subject_field: ClassVar[str] = "contact_id"
    offer_id: str
    contact_id: str
    agent_id: str
    site: str = DEFAULT_SITE
    at: datetime = Field(default_factory=utcnow)
    # Added within v1 (optional): what a connector needs to ring the agent without asking the router.
    channel: Channel | None = None
    contact_uri: str | None = None  # the agent's address on that channel (shared.contact_uri), if any
    source: str | None = None  # contact.requested's source and external_id: the caller's call to bridge
    external_id: str | None = None


class OfferDeclined(EventData):
    event_type: ClassVar[str] = "switchboard.offer.declined.v1"
    subject_field: ClassVar[str] = "contact_id"
    offer_id: str
    contact_id: str
    agent_id: str
    site: str = DEFAULT_SITE
    reason: str | None = None
    at: datetime = Field(default_factory=utcnow)


class OfferTimedOut(EventData):
    event_type: ClassVar[str] = "switchboard.offer.timed_out.v1"
    subject_field: ClassVar[str] = "contact_id"
    offer_id: str
    contact_id: str
    agent_id: str
    site: str = DEFAULT_SITE
    at: datetime = Field(default_factory=utcnow)


class AgentDialed(EventData):
    """The outcome of connecting a voice contact to the agent who accepted it.

    ``busy``/``no_answer``/``failed``: the contact goes back to its place in line and the agent is counted
    a missed offer; ``not_connected``: back in line, no miss (not the agent's doing); ``caller_gone``: the
    contact is abandoned; ``answered``: recorded only. Published by whatever places the call (intake's
    Twilio dial callback, a PBX connector)."""

    event_type: ClassVar[str] = "switchboard.contact.agent_dialed.v1"
    subject_field: ClassVar[str] = "contact_id"
    contact_id: str
    agent_id: str
    site: str = DEFAULT_SITE
    result: DialResult
    call_ref: str | None = Field(None, max_length=100)  # the telephone system's call id (Twilio CallSid)
    detail: str | None = Field(None, max_length=300)  # e.g. the provider's status or error
    at: datetime = Field(default_factory=utcnow)


class CustomerDialed(EventData):
    """How the outbound call to a callback's customer ended, placed for the agent who accepted it.

    The router keeps it as the attempt's result, used when the agent completes without giving one."""

    event_type: ClassVar[str] = "switchboard.contact.customer_dialed.v1"
    subject_field: ClassVar[str] = "contact_id"
    contact_id: str  # the router's work item (for a callback: the callback_id)
    agent_id: str
    site: str = DEFAULT_SITE
    result: AttemptResult
    call_ref: str | None = Field(None, max_length=100)
    detail: str | None = Field(None, max_length=300)
    at: datetime = Field(default_factory=utcnow)


class AssignmentCompleted(EventData):
    event_type: ClassVar[str] = "switchboard.assignment.completed.v1"
    subject_field: ClassVar[str] = "contact_id"
    contact_id: str
    agent_id: str
    site: str = DEFAULT_SITE
    customer: Customer | None = None
    callback_id: str | None = None  # set when the completed work was a callback
    outcome: Outcome = Field(default_factory=Outcome)
    handled_seconds: float | None = None
    at: datetime = Field(default_factory=utcnow)


class AgentStatusChanged(EventData):
    event_type: ClassVar[str] = "switchboard.agent.status_changed.v1"
    subject_field: ClassVar[str] = "agent_id"
    agent_id: str
    site: str = DEFAULT_SITE
    status: AgentStatus
    previous: AgentStatus | None = None
    reason: str | None = None
    at: datetime = Field(default_factory=utcnow)


class AgentTokenIssued(EventData):
    """The router issued an agent a new bearer token: every older token of that agent is revoked.

    Carries only the token's id (its ``jti``), never the token. Services other than the router refuse an
    agent token whose id is not the latest one they heard of (see ``shared.auth``)."""

    event_type: ClassVar[str] = "switchboard.agent.token_issued.v1"
    subject_field: ClassVar[str] = "agent_id"
    agent_id: str
    site: str = DEFAULT_SITE
    token_id: str = Field(min_length=1, max_length=100)
    at: datetime = Field(default_factory=utcnow)


class CallbackRequested(EventData):
    event_type: ClassVar[str] = "switchboard.callback.requested.v1"
    subject_field: ClassVar[str] = "customer.id"
    request_id: str  # deterministic per origin, so a redelivered request merges
    customer: Customer
    site: str = DEFAULT_SITE
    origin: CallbackOrigin
    contact_id: str | None = None
    intent: Intent | None = None
    channel: Channel = Channel.VOICE
    preferred_window: TimeWindow | None = None
    promised_by_agent_id: str | None = None
    reason: str | None = None
    # The customer's original place in line: a callback neither jumps the queue nor loses its place.
    virtual_start_time: datetime | None = None
    requested_at: datetime = Field(default_factory=utcnow)
    # What the requester already told the customer (intake's answer; shared.promise): the callback
    # service tracks exactly this deadline, and flags it when its own calendar would have said otherwise.
    promised_deadline: datetime | None = None
    promise_text: str | None = None


class CallbackScheduled(EventData):
    event_type: ClassVar[str] = "switchboard.callback.scheduled.v1"
    subject_field: ClassVar[str] = "callback_id"
    callback_id: str
    customer: Customer
    site: str = DEFAULT_SITE
    deadline: datetime
    window: TimeWindow | None = None
    next_business_day: bool = False
    promise_text: str | None = None  # what we honestly told the customer
    at: datetime = Field(default_factory=utcnow)


class CallbackDue(EventData):
    event_type: ClassVar[str] = "switchboard.callback.due.v1"
    subject_field: ClassVar[str] = "callback_id"
    callback_id: str
    customer: Customer
    site: str = DEFAULT_SITE
    contact_id: str | None = None
    intent: Intent | None = None
    channel: Channel = Channel.VOICE
    deadline: datetime
    attempt: int = 1
    priority_boost: float = 0.0  # rises as the deadline approaches
    at_risk: bool = False
    widen_roles: bool = False
    preferred_agent_id: str | None = None
    virtual_start_time: datetime | None = None
    at: datetime = Field(default_factory=utcnow)


class CallbackAtRisk(EventData):
    event_type: ClassVar[str] = "switchboard.callback.at_risk.v1"
    subject_field: ClassVar[str] = "callback_id"
    callback_id: str
    customer: Customer
    site: str = DEFAULT_SITE
    deadline: datetime
    slack_seconds: float
    at: datetime = Field(default_factory=utcnow)


class CallbackAttempted(EventData):
    event_type: ClassVar[str] = "switchboard.callback.attempted.v1"
    subject_field: ClassVar[str] = "callback_id"
    callback_id: str
    customer: Customer
    site: str = DEFAULT_SITE
    agent_id: str | None = None
    result: AttemptResult
    notes: str | None = None
    at: datetime = Field(default_factory=utcnow)


class CallbackFulfilled(EventData):
    event_type: ClassVar[str] = "switchboard.callback.fulfilled.v1"
    subject_field: ClassVar[str] = "callback_id"
    callback_id: str
    customer: Customer
    site: str = DEFAULT_SITE
    agent_id: str | None = None
    at: datetime = Field(default_factory=utcnow)


class CallbackBreached(EventData):
    event_type: ClassVar[str] = "switchboard.callback.breached.v1"
    subject_field: ClassVar[str] = "callback_id"
    callback_id: str
    customer: Customer
    site: str = DEFAULT_SITE
    deadline: datetime
    attempts: int = 0
    reason: str = "deadline_passed"
    # When it was flagged at risk. A deadline breach without it broke unflagged: nothing ran the
    # scheduler through its at-risk point (downtime), so ops heard of it only now.
    at_risk_at: datetime | None = None
    at: datetime = Field(default_factory=utcnow)


EVENT_TYPES: dict[str, type[EventData]] = {
    cls.event_type: cls
    for cls in (
        ContactRequested,
        ContactAbandoned,
        OfferMade,
        OfferAccepted,
        OfferDeclined,
        OfferTimedOut,
        AgentDialed,
        CustomerDialed,
        AssignmentCompleted,
        AgentStatusChanged,
        AgentTokenIssued,
        CallbackRequested,
        CallbackScheduled,
        CallbackDue,
        CallbackAtRisk,
        CallbackAttempted,
        CallbackFulfilled,
        CallbackBreached,
    )
}


# --------------------------------------------------------------------------------------------------
# The envelope
# --------------------------------------------------------------------------------------------------


class MalformedEvent(ValueError):
    """Bytes that are not a valid Switchboard CloudEvent. Such events go to the dead-letter topic."""


class Envelope(BaseModel):
    """CloudEvents 1.0 structured-mode envelope (JSON)."""

    model_config = ConfigDict(extra="allow")

    specversion: Literal["1.0"] = "1.0"
    id: str
    source: str
    type: str
    time: datetime
    subject: str | None = None
    datacontenttype: Literal["application/json"] = "application/json"
    dataschema: str | None = None
    tenantid: str = DEFAULT_TENANT
    data: dict[str, Any]

    # Cached by ``functools.cached_property`` (pydantic leaves it out of fields, dumps and equality), not
    # a ``PrivateAttr``: resolving a private attribute's default on every construction cost more than
    # validating the whole envelope, on the hot publish path.
    @cached_property
    def payload(self) -> EventData:
        """The typed payload, validated against the registered contract for ``type``."""
        cls = EVENT_TYPES.get(self.type)
        if cls is None:
            raise MalformedEvent(f"unknown event type {self.type!r}")
        try:
            return cls.model_validate(self.data)
        except ValidationError as exc:
            raise MalformedEvent(f"invalid {self.type} payload: {exc}") from exc

    def to_bytes(self) -> bytes:
        return self.model_dump_json(exclude_none=True).encode()


def make_event(data: EventData, *, source: str, event_id: str | None = None, time: datetime | None = None) -> Envelope:
    """Wrap a payload in an envelope. Pass ``event_id`` to make a re-emitted event deduplicable."""
    env = Envelope(
        id=event_id or str(uuid.uuid4()),
        source=source,
        type=data.event_type,
        time=time or utcnow(),
        subject=data.subject(),
        dataschema=f"{SCHEMA_BASE}/{data.event_type}.json",
        tenantid=data.tenant_id,
        data=data.model_dump(mode="json"),
    )
    env.__dict__["payload"] = data  # the typed payload we already have: what ``payload`` would compute
    return env


def encode_event(data: EventData, *, source: str, event_id: str | None = None, time: datetime | None = None) -> bytes:
    """``make_event(...).to_bytes()``, byte for byte, without building the envelope model.

    The publish hot path: the payload is serialised once, straight to JSON, instead of to a dict that
    the envelope then serialises again (tests/shared/test_events.py checks the bytes are identical).
    """
    subject = data.subject()
    head: dict[str, Any] = {
        "specversion": "1.0",
        "id": event_id or str(uuid.uuid4()),
        "source": source,
        "type": data.event_type,
        "time": time or utcnow(),
    }
    if subject is not None:
        head["subject"] = subject
    head["datacontenttype"] = "application/json"
    head["dataschema"] = f"{SCHEMA_BASE}/{data.event_type}.json"
    head["tenantid"] = data.tenant_id
    return b"".join((to_json(head)[:-1], b',"data":', data.model_dump_json().encode(), b"}"))


def decode_event(raw: bytes) -> Envelope:
    """Parse and fully validate an event; raise :class:`MalformedEvent` with the reason otherwise."""
    try:
        obj = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise MalformedEvent(f"not JSON: {exc}") from exc
    if not isinstance(obj, dict):
        raise MalformedEvent("event is not a JSON object")
    try:
        env = Envelope.model_validate(obj)
    except ValidationError as exc:
        raise MalformedEvent(f"not a CloudEvents 1.0 envelope: {exc}") from exc
    _ = env.payload  # validate the payload against its contract now, not deep inside a handler
    return env
