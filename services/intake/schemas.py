"""Request and response bodies of the intake API: strict at the edge, so downstream can trust events.

Unknown fields are refused (a misspelt field would otherwise vanish silently); phone numbers must be
valid E.164 (normalised by ``phonenumbers``); timezones must be IANA names; windows must be aware and
ordered.
"""

from __future__ import annotations

from datetime import datetime
from functools import lru_cache
from typing import Annotated
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from services.intake.phones import normalise_e164
from shared.events import Channel, Intent, Tier

SOURCE_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,99}$"


@lru_cache(maxsize=16384)
def _e164(value: str) -> str:
    """The number in E.164, or ValueError. Cached: callers retry and call again from the same numbers.
    Only valid numbers are cached (an exception is never cached), so junk cannot evict them wholesale."""
    return normalise_e164(value)


def _iana(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError, OSError):  # OSError: a directory (America), a name too long
        raise ValueError(f"unknown IANA timezone {value!r} (e.g. Europe/Berlin)") from None
    return value


def _aware(value: datetime) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError("must include a UTC offset, e.g. 2026-11-25T14:00:00+01:00")
    return value


PhoneE164 = Annotated[str, Field(min_length=2, max_length=32, examples=["+4930123456"]), AfterValidator(_e164)]
IanaTimezone = Annotated[str, Field(max_length=64, examples=["Europe/Berlin"]), AfterValidator(_iana)]
AwareDatetime = Annotated[datetime, AfterValidator(_aware)]
Source = Annotated[str, Field(pattern=SOURCE_PATTERN, examples=["acme-ivr"])]
ExternalId = Annotated[str, Field(min_length=1, max_length=200)]
Site = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")]
Language = Annotated[str, Field(pattern=r"^[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8})*$", examples=["en", "de-AT"])]
IvrSelection = Annotated[str, Field(pattern=r"^[0-9*#A-Za-z_-]{1,32}$")]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class WindowIn(_Strict):
    start: AwareDatetime
    end: AwareDatetime

    @model_validator(mode="after")
    def _ordered(self) -> WindowIn:
        if self.end <= self.start:
            raise ValueError("window end must be after its start")
        return self


class CustomerIn(_Strict):
    id: Annotated[str, Field(min_length=1, max_length=200)]
    phone: PhoneE164 | None = None
    name: Annotated[str, Field(max_length=200)] | None = None
    tier: Tier = Tier.STANDARD
    language: Language = "en"
    timezone: IanaTimezone | None = None


class ContactIn(_Strict):
    """A contact handed over by a telephony/chat system (``POST /v1/contacts``)."""

    external_id: ExternalId = Field(description="The sender's id (call/chat id): the idempotency key.")
    source: Source = Field(description="The sending system; signatures and idempotency are per source.")
    channel: Channel
    customer: CustomerIn
    site: Site | None = Field(None, description="Routing site; default: the configured default site.")
    intent: Intent | None = Field(None, description="If known; else derived from IVR selections/summary.")
    summary: Annotated[str, Field(max_length=4000)] | None = None
    ivr_selections: list[IvrSelection] = Field(default_factory=list, max_length=20)
    callback_requested: bool = False
    preferred_window: WindowIn | None = None


class ContactAccepted(BaseModel):
    contact_id: str
    duplicate: bool = Field(description="True when this request was seen before: nothing new published.")
    intent: Intent | None = None
    expected_handling_seconds: int | None = None
    within_business_hours: bool | None = None


class AbandonIn(_Strict):
    """The caller hung up while waiting (``POST /v1/contacts/abandoned``)."""

    external_id: ExternalId
    source: Source
    reason: Annotated[str, Field(min_length=1, max_length=100)] = "caller_hung_up"


class AbandonAccepted(BaseModel):
    contact_id: str
    duplicate: bool


class CallbackRequestIn(_Strict):
    """A website's "call me back today" form (``POST /v1/callback-requests``, JSON or form-encoded).

    Flat on purpose: an HTML form posts exactly these field names. Unlike the machine-to-machine
    webhooks, unknown fields are ignored: real forms also post submit buttons, CSRF tokens, honeypots.
    """

    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True)

    phone: PhoneE164
    name: Annotated[str, Field(max_length=200)] | None = None
    customer_id: Annotated[str, Field(min_length=1, max_length=200)] | None = Field(
        None, description="Known customer id; default: derived from the phone number."
    )
    language: Language = "en"
    timezone: IanaTimezone | None = None
    intent: Intent | None = None
    message: Annotated[str, Field(max_length=4000)] | None = None
    window_start: AwareDatetime | None = None
    window_end: AwareDatetime | None = None
    site: Site | None = None
    source: Source = "web"
    external_id: ExternalId | None = Field(
        None, description="The form submission's id, if the site has one (idempotency key)."
    )

    @model_validator(mode="after")
    def _window(self) -> CallbackRequestIn:
        if (self.window_start is None) != (self.window_end is None):
            raise ValueError("window_start and window_end go together")
        if self.window_start and self.window_end and self.window_end <= self.window_start:
            raise ValueError("window_end must be after window_start")
        return self


class CallbackRequestAccepted(BaseModel):
    request_id: str
    duplicate: bool
    expected_by: datetime | None = Field(
        None,
        description="The promised deadline (site calendar, customer's clock and calling hours, cut-off, bound): "
        "the deadline the callback service tracks.",
    )
    next_business_day: bool | None = None
    promise_text: str | None = Field(None, description="What to tell the customer (show it on the page).")


class Problem(BaseModel):
    """Error body of 401/413/415/503 answers."""

    detail: str
    reason: str


class FieldError(BaseModel):
    loc: list[str | int]
    msg: str
    type: str


class ValidationProblem(BaseModel):
    """Error body of 422 answers: field-level messages (the input is never echoed)."""

    detail: list[FieldError]
