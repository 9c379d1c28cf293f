"""Request and response bodies of the callback API (``api.py``), and its error answers.

Every route declares its answer with one of these, so the OpenAPI document says what a client gets:
the commitment (``CallbackOut``, with its attempts in ``CallbackDetail``), today's summary
(``SummaryOut``), and the error bodies (``Problem``, ``AttemptConflict``, ``ValidationProblem``).
"""

from __future__ import annotations

import datetime as dt
from datetime import date, datetime
from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator, model_validator

from services.callback.lifecycle import Status
from services.callback.store import Attempt, Commitment
from services.callback.views import SiteSummary
from shared.business_hours import zone
from shared.events import DEFAULT_SITE, DEFAULT_TENANT, AttemptResult, CallbackOrigin, Channel, Customer, Intent, Tier

# --------------------------------------------------------------------------------------------------
# Requests and answers
# --------------------------------------------------------------------------------------------------


class CustomerIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1, max_length=200)
    phone: str | None = Field(None, max_length=32, description="E.164")
    name: str | None = Field(None, max_length=200)
    tier: Tier = Tier.STANDARD
    language: str = "en"
    timezone: str | None = Field(None, description="IANA name; default: the site's timezone")

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str | None) -> str | None:
        if value is not None:
            zone(value)
        return value

    def to_customer(self) -> Customer:
        return Customer.model_validate(self.model_dump())


class WindowIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    start: AwareDatetime
    end: AwareDatetime

    @model_validator(mode="after")
    def _ordered(self) -> WindowIn:
        if self.end <= self.start:
            raise ValueError("end must be after start")
        return self


class CallbackCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    customer: CustomerIn
    site: str = Field(DEFAULT_SITE, min_length=1, max_length=100)
    tenant_id: str = Field(DEFAULT_TENANT, min_length=1, max_length=100)
    request_id: str | None = Field(None, max_length=200, description="dedupes retries (or Idempotency-Key)")
    origin: CallbackOrigin = CallbackOrigin.API
    contact_id: str | None = Field(None, max_length=100)
    intent: Intent | None = None
    channel: Channel = Channel.VOICE
    reason: str | None = Field(None, max_length=2000)
    preferred_window: WindowIn | None = None
    promised_by_agent_id: str | None = Field(None, max_length=100)
    virtual_start_time: AwareDatetime | None = Field(None, description="the customer's place in line")


class AttemptCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    result: AttemptResult
    agent_id: str | None = Field(None, max_length=100)
    notes: str | None = Field(None, max_length=2000)
    at: AwareDatetime | None = Field(None, description="when the call was made; default now")


class CustomerOut(BaseModel):
    """The customer as stored with the commitment (``shared.events.Customer``)."""

    model_config = ConfigDict(extra="allow")  # a field a later event version adds is passed on, not dropped

    id: str
    phone: str | None = Field(None, description="E.164")
    name: str | None = None
    tier: Tier = Tier.STANDARD
    language: str = "en"
    timezone: str | None = Field(None, description="IANA name")


class WindowOut(BaseModel):
    start: datetime
    end: datetime


class AttemptOut(BaseModel):
    number: int
    result: str
    agent_id: str | None
    notes: str | None
    at: datetime
    source: str
    late: bool

    @classmethod
    def of(cls, a: Attempt) -> AttemptOut:
        return cls(
            number=a.number,
            result=a.result,
            agent_id=a.agent_id,
            notes=a.notes,
            at=a.at,
            source=a.source,
            late=a.late,
        )


class CallbackOut(BaseModel):
    id: str
    tenant_id: str
    site: str
    customer: CustomerOut
    status: Status
    origin: str
    contact_id: str | None
    intent: str | None
    channel: str
    requested_at: datetime
    virtual_start_time: datetime
    deadline: datetime = Field(description="UTC; the last callable moment (site open, customer callable)")
    deadline_day: date = Field(description="site-local date of the deadline")
    promise_day: date = Field(description="customer-local date the promise is for")
    next_business_day: bool
    promise_text: str
    window: WindowOut | None
    not_before: datetime
    at_risk: bool
    at_risk_at: datetime | None
    promised_by_agent_id: str | None
    preferred_until: datetime | None
    released_at: datetime | None
    released_to_agent_id: str | None
    accepted_by_agent_id: str | None
    attempts: int
    last_result: str | None
    merged_requests: int
    fulfilled_at: datetime | None
    fulfilled_by_agent_id: str | None
    ended_at: datetime | None
    close_reason: str | None
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, c: Commitment) -> CallbackOut:
        window = WindowOut(start=c.window_start, end=c.window_end) if c.window_start and c.window_end else None
        fields = {name: getattr(c, name) for name in cls.model_fields if name != "window"}
        return cls(window=window, **fields)


class CallbackDetail(CallbackOut):
    attempt_history: list[AttemptOut]


class SummaryCounts(BaseModel):
    site: str | None = None
    date: dt.date | None = None
    promised: int
    fulfilled: int
    open: int
    at_risk: int
    breached: int
    breached_unflagged: int = Field(
        description="of the breached, those not flagged at risk first (the scheduler was not running through "
        "their at-risk point): promises neither kept nor flagged before they broke; should be 0"
    )
    closed: int = Field(description="ended unfulfilled before the deadline: wrong number, attempts exhausted")
    exhausted: int = Field(0, description="of the closed, those closed after max_attempts without reaching anyone")
    same_day_fulfilment_rate: float | None = Field(description="fulfilled / promised; null if none")

    @classmethod
    def of(cls, s: SiteSummary) -> SummaryCounts:
        return cls(
            site=s.site,
            date=s.date,
            promised=s.promised,
            fulfilled=s.fulfilled,
            open=s.open,
            at_risk=s.at_risk,
            breached=s.breached,
            breached_unflagged=s.breached_unflagged,
            closed=s.closed,
            exhausted=s.exhausted,
            same_day_fulfilment_rate=s.same_day_fulfilment_rate,
        )


class SummaryOut(BaseModel):
    at: datetime
    overall: SummaryCounts
    sites: list[SummaryCounts]


# --------------------------------------------------------------------------------------------------
# Error answers (documentation of what the routes raise; the bodies are FastAPI's ``{"detail": ...}``)
# --------------------------------------------------------------------------------------------------


class Problem(BaseModel):
    """401 (no valid token), 403 (the token may not do this), 404 (no such callback), 503 (a dependency
    is unavailable right now, with ``Retry-After``)."""

    detail: str


class AttemptConflictDetail(BaseModel):
    msg: str
    reason: Literal["callback_closed", "retry_spacing"]
    status: str | None = Field(None, description="callback_closed: the status the callback ended in")
    close_reason: str | None = Field(None, description="callback_closed: why it was closed, if it was")
    retry_at: datetime | None = Field(None, description="retry_spacing: the next attempt is allowed from here")


class AttemptConflict(BaseModel):
    """409 on an attempt: the callback has ended, or the attempt is inside the retry spacing (then with
    ``Retry-After``)."""

    detail: AttemptConflictDetail


class FieldProblem(BaseModel):
    model_config = ConfigDict(extra="allow")

    loc: list[str | int]
    msg: str
    type: str
    next_open: str | None = Field(None, description="no_callback_possible: when the site next opens")


class ValidationProblem(BaseModel):
    """422: field-level messages (``loc``, ``msg``, ``type``)."""

    detail: list[FieldProblem]


COMMON_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": Problem, "description": "missing, invalid, expired or replaced token"},
    403: {"model": Problem, "description": "the token's scope does not allow this"},
    503: {"model": Problem, "description": "a dependency is unavailable right now; retry after Retry-After"},
}
