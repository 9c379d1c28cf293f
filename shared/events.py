"""Event contracts exchanged between the services.

Every event travels as a CloudEvents 1.0 JSON envelope in *structured content mode*: the record's value
is the whole event, and the record carries the header ``content-type: application/cloudevents+json`` (the
Kafka protocol binding's way to say so; the embedded bus stores the same header). The schema version lives
in the ``type`` (``switchboard.contact.requested.v1``); within a version only additive changes are allowed.
Every payload carries ``tenant_id`` so tenants can come later without breaking contracts; the envelope
mirrors it in the ``tenantid`` extension so a consumer can route without parsing the payload.

The published contract: ``docs/asyncapi.yaml`` (channels, keys, messages) and ``schemas/<type>.json`` (each
payload's JSON Schema, the file the envelope's ``dataschema`` names), both generated from this module and
:mod:`shared.topics` by ``switchboard asyncapi`` (:mod:`shared.asyncapi`).
"""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from enum import StrEnum
from functools import cached_property
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
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
    """The agent's own choice: ready for work, on a break, or gone. What they are doing is apart from
    it: :class:`AgentActivity`, the router's view of their work.

    ``busy`` and ``wrap_up`` are kept only so that ``agent.status_changed`` events recorded before the two
    were separated still read; nothing emits them any more. A reader treats them as ``available`` with
    the activity ``on_contact`` or ``wrap_up`` (:func:`legacy_activity`)."""

    AVAILABLE = "available"
    BUSY = "busy"  # legacy: see the docstring
    WRAP_UP = "wrap_up"  # legacy: see the docstring
    BREAK = "break"
    OFFLINE = "offline"


CHOSEN_STATUSES = (AgentStatus.AVAILABLE, AgentStatus.BREAK, AgentStatus.OFFLINE)


class AgentActivity(StrEnum):
    """The router's view of an agent's work, never chosen: it follows offers, assignments and wrap-up.
    ``on_contact`` wins over ``wrap_up`` (a contact still open), which wins over ``offered``."""

    IDLE = "idle"
    OFFERED = "offered"
    ON_CONTACT = "on_contact"
    WRAP_UP = "wrap_up"


def legacy_activity(status: AgentStatus) -> tuple[AgentStatus, AgentActivity | None]:
    """An ``agent.status_changed`` from before status and work were apart, as the two of them."""
    if status is AgentStatus.BUSY:
        return AgentStatus.AVAILABLE, AgentActivity.ON_CONTACT
    if status is AgentStatus.WRAP_UP:
        return AgentStatus.AVAILABLE, AgentActivity.WRAP_UP
    return status, None


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
    # Added within v1: whether the contact is a released callback (its id is the callback's), so the
    # callback service skips every other acceptance without a lookup; absent from older routers' events.
    is_callback: bool | None = None


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


class AgentWorkChanged(EventData):
    """The router's view of an agent's work changed (offered, on a contact, wrap-up, idle). Apart from
    ``agent.status_changed``, the agent's own choice: a consumer that wants free agents needs both
    (``available`` and ``idle``)."""

    event_type: ClassVar[str] = "switchboard.agent.work_changed.v1"
    subject_field: ClassVar[str] = "agent_id"
    agent_id: str
    site: str = DEFAULT_SITE
    activity: AgentActivity
    previous: AgentActivity | None = None
    load: dict[Channel, int] = Field(default_factory=dict, description="Offered + assigned contacts per channel")
    wrap_up_until: datetime | None = None
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
        AgentWorkChanged,
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


# The CloudEvents JSON event format's media type, and the record header that announces structured mode
# (CloudEvents Kafka protocol binding: "content-type", the value prefixed "application/cloudevents").
CONTENT_TYPE_HEADER = "content-type"
STRUCTURED_CONTENT_TYPE = "application/cloudevents+json"
STRUCTURED_HEADERS: tuple[tuple[str, bytes], ...] = ((CONTENT_TYPE_HEADER, STRUCTURED_CONTENT_TYPE.encode()),)
DATA_CONTENT_TYPE = "application/json"
_BINARY_MODE_PREFIX = "ce_"

# RFC 3339 ``date-time`` (section 5.6): "T" between date and time, seconds required, fraction optional, and an
# offset ("Z" or +hh:mm) required. A naive time, a unix number or "+0100" is not a CloudEvents ``time``.
_RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})", re.ASCII)


def media_type(value: str) -> str:
    """A media type as compared: parameters dropped, lower case (``Application/JSON; charset=utf-8`` ->
    ``application/json``; RFC 2045: type and subtype are case-insensitive)."""
    return value.split(";", 1)[0].strip().lower()


class Envelope(BaseModel):
    """CloudEvents 1.0 structured-mode envelope (JSON).

    Strict where the spec is: ``id``, ``source`` and ``type`` are non-empty, ``time`` is an RFC 3339 timestamp
    with an offset, ``datacontenttype`` (optional; JSON when absent) names JSON data, whatever its parameters
    or case. Lenient where old records need it: an empty ``subject`` reads as none (the spec wants it absent).
    """

    model_config = ConfigDict(extra="allow")

    specversion: Literal["1.0"] = "1.0"
    id: str = Field(min_length=1, description="Unique per source; consumers deduplicate by it (at-least-once).")
    source: str = Field(min_length=1, description="The producing service, e.g. switchboard/intake.")
    type: str = Field(min_length=1, description="The event type, schema version included: switchboard.<...>.v1.")
    time: datetime = Field(description="When it happened: RFC 3339 with an offset (a naive time is refused).")
    subject: str | None = Field(None, description="The entity the event is about (contact, agent, callback...).")
    datacontenttype: str = Field(
        DATA_CONTENT_TYPE, description="application/json (parameters such as charset allowed, any case)."
    )
    dataschema: str | None = Field(None, description="URL of the JSON Schema of data: schemas/<type>.json.")
    tenantid: str = Field(DEFAULT_TENANT, description="Extension attribute: data.tenant_id, for routing.")
    data: dict[str, Any] = Field(description="The payload, valid against the type's schema.")

    @field_validator("time", mode="before")
    @classmethod
    def _rfc3339(cls, value: Any) -> Any:
        if isinstance(value, str):
            if not _RFC3339.fullmatch(value):
                raise ValueError("time must be an RFC 3339 timestamp with an offset, e.g. 2026-01-31T09:30:00Z")
        elif isinstance(value, datetime):
            if value.tzinfo is None or value.utcoffset() is None:
                raise ValueError("time must be timezone-aware")
        else:
            raise ValueError("time must be an RFC 3339 timestamp string")
        return value

    @field_validator("subject", mode="before")
    @classmethod
    def _empty_subject_is_none(cls, value: Any) -> Any:
        return None if value == "" else value

    @field_validator("datacontenttype")
    @classmethod
    def _json_data(cls, value: str) -> str:
        if media_type(value) != DATA_CONTENT_TYPE:
            raise ValueError(f"datacontenttype must be {DATA_CONTENT_TYPE} (parameters allowed), not {value!r}")
        return value

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
        id=event_id if event_id is not None else str(uuid.uuid4()),
        source=source,
        type=data.event_type,
        time=time or utcnow(),
        subject=data.subject() or None,
        dataschema=schema_url(data.event_type),
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
    if event_id is not None and not event_id:
        raise ValueError("a CloudEvents id must not be empty")
    if not source:
        raise ValueError("a CloudEvents source must not be empty")
    if time is not None and (time.tzinfo is None or time.utcoffset() is None):
        raise ValueError("a CloudEvents time must be timezone-aware")
    subject = data.subject()
    head: dict[str, Any] = {
        "specversion": "1.0",
        "id": event_id if event_id is not None else str(uuid.uuid4()),
        "source": source,
        "type": data.event_type,
        "time": time or utcnow(),
    }
    if subject:  # the spec wants an empty subject absent
        head["subject"] = subject
    head["datacontenttype"] = DATA_CONTENT_TYPE
    head["dataschema"] = schema_url(data.event_type)
    head["tenantid"] = data.tenant_id
    return b"".join((to_json(head)[:-1], b',"data":', data.model_dump_json().encode(), b"}"))


def decode_record(value: bytes, headers: Sequence[tuple[str, bytes]] = ()) -> Envelope:
    """A bus record (value and headers) -> a validated envelope, or :class:`MalformedEvent`.

    Structured content mode only. As the CloudEvents Kafka binding decides the mode: a ``content-type`` header
    must be ``application/cloudevents+json`` (parameters and case aside; anything else is binary mode or
    another format). Without one, ``ce_*`` headers mean binary mode (the value would be the bare data), and
    a record with neither is read as structured: records written before the header existed. Binary mode is
    refused with that reason (it goes to the DLQ).
    """
    content_type: str | None = None
    binary_header: str | None = None
    for name, raw in headers:
        lowered = name.lower()
        if lowered == CONTENT_TYPE_HEADER:
            content_type = raw.decode("utf-8", "replace")
        elif binary_header is None and lowered.startswith(_BINARY_MODE_PREFIX):
            binary_header = name
    if content_type is not None:
        if media_type(content_type) != STRUCTURED_CONTENT_TYPE:
            raise MalformedEvent(
                f"content-type {content_type!r} is not a structured-mode CloudEvent ({STRUCTURED_CONTENT_TYPE}); "
                "binary content mode is not accepted"
            )
    elif binary_header is not None:
        raise MalformedEvent(
            f"binary-mode CloudEvent (header {binary_header!r}): publish in structured mode ({STRUCTURED_CONTENT_TYPE})"
        )
    return decode_event(value)


def schema_url(event_type: str) -> str:
    """The ``dataschema`` of an event type: ``schemas/<type>.json`` in the repository, published there."""
    return f"{SCHEMA_BASE}/{event_type}.json"


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
