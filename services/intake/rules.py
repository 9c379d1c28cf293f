"""Enrichment: what intake adds to a contact before the router sees it. Pure: no I/O, clock passed in.

* **Intent**: taken from the payload when the telephony system knows it; else from the IVR menu path
  (longest configured prefix wins, so ``2>1`` can refine ``2``); else from keywords in the free-text
  summary (first matching rule in configured order wins; a keyword matches at a word start, so
  ``cancel`` also matches ``cancelled``/``cancellation``).
* **Expected handling time** by intent and channel: an explicit ``intent/channel`` override, else the
  intent's base time scaled by the channel's factor, else the default.
* **Customer local time and business hours**: the customer's timezone from the payload, else the single
  timezone the phone number's region has (``phonenumbers``), else the site's clock (as the callback
  promise assumes); whether the site is open now comes from the site's business calendar
  (:mod:`shared.business_hours`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from functools import cached_property
from typing import Literal, Protocol
from zoneinfo import ZoneInfo

import phonenumbers
from phonenumbers import timezone as phone_timezone
from pydantic import BaseModel, ConfigDict, Field, field_validator

from services.intake.phones import parse_e164
from shared.events import Channel, Intent

IntentSource = Literal["payload", "ivr", "keywords", "none"]


class KeywordRule(BaseModel):
    """Words in the summary that reveal an intent. Rules are tried in order; the first match wins."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    intent: Intent
    keywords: tuple[str, ...] = Field(min_length=1)

    @field_validator("keywords")
    @classmethod
    def _non_blank(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        cleaned = tuple(k.strip().lower() for k in value if k.strip())
        if not cleaned:
            raise ValueError("at least one non-blank keyword")
        return cleaned


class HandlingTimes(BaseModel):
    """Expected handling seconds: feeds the router's queue estimates and the callback planner."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    default_seconds: int = Field(300, gt=0)
    by_intent: dict[Intent, int] = Field(
        default_factory=lambda: {
            Intent.QUESTION: 180,
            Intent.SUPPORT: 480,
            Intent.PURCHASE: 600,
            Intent.COMPLAINT: 720,
            Intent.CANCELLATION: 540,
            Intent.BILLING: 360,
            Intent.OTHER: 300,
        }
    )
    channel_factor: dict[Channel, float] = Field(
        default_factory=lambda: {
            Channel.VOICE: 1.0,
            Channel.CHAT: 1.3,  # chats interleave with others: longer wall-clock per contact
            Channel.EMAIL: 0.8,
            Channel.WEB_CALLBACK: 1.0,
        }
    )
    overrides: dict[str, int] = Field(
        default_factory=dict, description='"intent/channel" -> seconds, e.g. {"support/chat": 900}'
    )

    @field_validator("overrides")
    @classmethod
    def _valid_keys(cls, value: dict[str, int]) -> dict[str, int]:
        for key, seconds in value.items():
            intent, sep, channel = key.partition("/")
            if not sep:
                raise ValueError(f"override key {key!r} is not 'intent/channel'")
            Intent(intent)
            Channel(channel)
            if seconds <= 0:
                raise ValueError(f"override {key!r} must be positive")
        return value


class EnrichmentRules(BaseModel):
    """Configurable rules (``SWITCHBOARD_INTAKE_RULES`` as JSON, or a YAML file)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    ivr_intents: dict[str, Intent] = Field(
        default_factory=lambda: {
            "1": Intent.SUPPORT,
            "2": Intent.PURCHASE,
            "3": Intent.BILLING,
            "4": Intent.CANCELLATION,
            "5": Intent.COMPLAINT,
            "0": Intent.QUESTION,
        },
        description='IVR path (selections joined by ">", e.g. "2>1") -> intent; longest prefix wins',
    )
    callback_digit: str | None = Field("9", description="IVR digit meaning 'call me back instead'")
    keywords: tuple[KeywordRule, ...] = Field(
        default_factory=lambda: (
            KeywordRule(intent=Intent.CANCELLATION, keywords=("cancel", "terminate", "unsubscribe")),
            KeywordRule(intent=Intent.COMPLAINT, keywords=("complain", "unacceptable", "angry", "refund")),
            KeywordRule(intent=Intent.BILLING, keywords=("invoice", "bill", "charge", "payment")),
            KeywordRule(intent=Intent.PURCHASE, keywords=("buy", "order", "purchase", "upgrade", "price")),
            KeywordRule(intent=Intent.SUPPORT, keywords=("broken", "error", "not working", "help", "issue")),
            KeywordRule(intent=Intent.QUESTION, keywords=("question", "how do", "what is", "when")),
        )
    )
    handling: HandlingTimes = Field(default_factory=HandlingTimes)

    @cached_property
    def _keyword_patterns(self) -> tuple[tuple[Intent, re.Pattern[str]], ...]:
        return tuple(
            (
                rule.intent,
                re.compile(r"\b(?:" + "|".join(re.escape(k) for k in rule.keywords) + ")", re.IGNORECASE),
            )
            for rule in self.keywords
        )

    def intent_from_ivr(self, selections: list[str] | tuple[str, ...]) -> Intent | None:
        for n in range(len(selections), 0, -1):
            intent = self.ivr_intents.get(">".join(selections[:n]))
            if intent is not None:
                return intent
        return None

    def intent_from_text(self, text: str | None) -> Intent | None:
        if not text:
            return None
        for intent, pattern in self._keyword_patterns:
            if pattern.search(text):
                return intent
        return None

    def classify(
        self, explicit: Intent | None, selections: list[str] | tuple[str, ...], summary: str | None
    ) -> tuple[Intent | None, IntentSource]:
        """The intent and where it came from (kept in logs so rules can be tuned)."""
        if explicit is not None:
            return explicit, "payload"
        if (intent := self.intent_from_ivr(selections)) is not None:
            return intent, "ivr"
        if (intent := self.intent_from_text(summary)) is not None:
            return intent, "keywords"
        return None, "none"

    def expected_handling_seconds(self, intent: Intent | None, channel: Channel) -> int:
        handling = self.handling
        if intent is not None:
            override = handling.overrides.get(f"{intent.value}/{channel.value}")
            if override is not None:
                return override
        base = handling.by_intent.get(intent, handling.default_seconds) if intent else handling.default_seconds
        return max(1, round(base * handling.channel_factor.get(channel, 1.0)))

    def wants_callback(self, selections: list[str] | tuple[str, ...]) -> bool:
        return self.callback_digit is not None and bool(selections) and selections[-1] == self.callback_digit


class OpenHours(Protocol):
    """What enrichment needs from a site calendar (satisfied by ``shared.business_hours.SiteCalendar``)."""

    @property
    def tz(self) -> ZoneInfo: ...

    def is_open(self, at: datetime) -> bool: ...


def timezone_for(explicit: str | None, phone_e164: str | None) -> str | None:
    """The customer's IANA timezone: the payload's, else the only zone of the phone number's region."""
    if explicit:
        return explicit
    if not phone_e164:
        return None
    try:
        number = parse_e164(phone_e164)
    except phonenumbers.NumberParseException:
        return None
    zones = [z for z in phone_timezone.time_zones_for_number(number) if z != "Etc/Unknown"]
    return zones[0] if len(zones) == 1 else None


class MinuteCachedHours:
    """``is_open`` of a calendar, computed once per UTC minute: opening hours are set to the minute.

    A site calendar answers from timezone conversions and holiday tables, which is work to repeat for
    every one of thousands of requests arriving in the same minute.
    """

    def __init__(self, calendar: OpenHours) -> None:
        self._calendar = calendar
        self._minute: datetime | None = None
        self._open = False

    @property
    def tz(self) -> ZoneInfo:
        return self._calendar.tz

    def is_open(self, at: datetime) -> bool:
        minute = at.replace(second=0, microsecond=0)
        if minute != self._minute:
            self._open = self._calendar.is_open(minute)
            self._minute = minute
        return self._open


@dataclass(frozen=True, slots=True)
class Enrichment:
    intent: Intent | None
    intent_source: IntentSource
    expected_handling_seconds: int
    customer_timezone: str | None
    customer_local_time: datetime | None
    within_business_hours: bool | None


def enrich(
    rules: EnrichmentRules,
    *,
    now: datetime,
    channel: Channel,
    intent: Intent | None,
    ivr_selections: list[str] | tuple[str, ...],
    summary: str | None,
    customer_timezone: str | None,
    phone_e164: str | None,
    site_hours: OpenHours | None,
) -> Enrichment:
    resolved, source = rules.classify(intent, ivr_selections, summary)
    tz_name = timezone_for(customer_timezone, phone_e164)
    # Unknown customer timezone: the site's clock stands in, as SiteCalendar.customer_context and the
    # callback promise do, so every service means the same "local time" (Customer.timezone stays None).
    clock_tz = ZoneInfo(tz_name) if tz_name else (site_hours.tz if site_hours is not None else None)
    local = now.astimezone(clock_tz) if clock_tz is not None else None
    return Enrichment(
        intent=resolved,
        intent_source=source,
        expected_handling_seconds=rules.expected_handling_seconds(resolved, channel),
        customer_timezone=tz_name,
        customer_local_time=local,
        within_business_hours=site_hours.is_open(now) if site_hours is not None else None,
    )
