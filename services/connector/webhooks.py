"""Signed outbound webhooks: routing events for any telephone system (Asterisk, FreeSWITCH, a custom PBX).

One subscription per source (the PBX's name, as in intake's source secrets): a URL, a secret, the events
it wants. Each event is POSTed as its CloudEvents JSON envelope, signed with the scheme intake verifies
on inbound webhooks (``X-Switchboard-Timestamp`` and ``X-Switchboard-Signature: v1=<HMAC-SHA256(secret,
"<timestamp>." + body)>``), so a PBX needs one verifier for both directions.

Delivery: retried with exponential backoff on 5xx, 429, timeouts and connection errors (re-signed each
time, so a late retry is still fresh); a 4xx other than 429 is not retried. An event that still cannot be
delivered goes to the bus DLQ (``<topic>.dlq``, tagged with the subscription's consumer group); replay it
with ``switchboard dlq replay``. Receivers dedupe on ``X-Switchboard-Event-Id`` (the CloudEvents id): a
replay, or a retry whose answer was lost, delivers the same id again.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Annotated

import httpx
import structlog
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt, wait_exponential
from tenacity.wait import WaitBaseT

from services.connector.metrics import WEBHOOK_ATTEMPTS, WEBHOOK_DELIVERIES
from services.intake.signatures import SIGNATURE_HEADER, SOURCE_HEADER, TIMESTAMP_HEADER, sign_generic
from shared.events import EVENT_TYPES, Envelope
from shared.topics import topic_for

log = structlog.get_logger(__name__)

EVENT_ID_HEADER = "X-Switchboard-Event-Id"
EVENT_TYPE_HEADER = "X-Switchboard-Event"
CONTENT_TYPE = "application/cloudevents+json"


def short_name(event_type: str) -> str:
    """``switchboard.offer.accepted.v1`` -> ``offer.accepted`` (how subscriptions name events)."""
    return event_type.removeprefix("switchboard.").rsplit(".", 1)[0]


SHORT_NAMES = {short_name(t): cls for t, cls in EVENT_TYPES.items()}


class WebhookSubscription(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    source: Annotated[str, Field(min_length=1, max_length=60, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")]
    url: Annotated[str, Field(pattern=r"^https?://[^\s]+$", max_length=2000)]
    secret: SecretStr = Field(min_length=16, description="Shared HMAC secret (at least 16 characters)")
    events: list[str] = Field(
        default_factory=lambda: ["offer.accepted", "assignment.completed", "contact.abandoned"], min_length=1
    )
    sites: list[str] | None = Field(None, description="Only these sites; default: all")
    attempts: int = Field(5, ge=1, le=20, description="Delivery attempts before the DLQ")
    timeout_seconds: float = Field(5.0, gt=0, le=60)

    @field_validator("events")
    @classmethod
    def _known_events(cls, events: list[str]) -> list[str]:
        unknown = sorted(set(events) - SHORT_NAMES.keys())
        if unknown:
            raise ValueError(f"unknown events {unknown}; known: {sorted(SHORT_NAMES)}")
        return events

    @property
    def topics(self) -> list[str]:
        return sorted({topic_for(SHORT_NAMES[e].model_construct()) for e in self.events})

    @property
    def group(self) -> str:
        """Its own consumer group: a slow or failing PBX never holds up another one."""
        return f"connector-webhook-{self.source}"


class _Retry(Exception):
    """A delivery attempt that may succeed later (5xx, 429, timeout, connection error)."""


class WebhookUndeliverable(Exception):
    """Every attempt failed, or the receiver refused the event (4xx): the bus dead-letters it."""


class WebhookSender:
    def __init__(
        self,
        subscription: WebhookSubscription,
        client: httpx.AsyncClient,
        *,
        clock: Callable[[], float] = time.time,
        wait: WaitBaseT | None = None,
    ) -> None:
        self.sub = subscription
        self.client = client
        self.clock = clock
        self.wait = wait or wait_exponential(multiplier=0.5, max=30)
        self._wanted = {SHORT_NAMES[e].event_type for e in subscription.events}

    async def __call__(self, env: Envelope, _record: object = None) -> None:
        if self.wants(env):
            await self.deliver(env)

    def wants(self, env: Envelope) -> bool:
        if env.type not in self._wanted:
            return False
        site = env.data.get("site")
        return self.sub.sites is None or site in self.sub.sites

    def headers(self, env: Envelope, body: bytes) -> dict[str, str]:
        ts = int(self.clock())
        return {
            "Content-Type": CONTENT_TYPE,
            TIMESTAMP_HEADER: str(ts),
            SIGNATURE_HEADER: sign_generic(self.sub.secret.get_secret_value().encode(), ts, body),
            SOURCE_HEADER: "switchboard",
            EVENT_ID_HEADER: env.id,
            EVENT_TYPE_HEADER: short_name(env.type),
        }

    async def deliver(self, env: Envelope) -> int:
        """POST the event until the receiver takes it (2xx); returns the attempts it took."""
        body = env.to_bytes()
        attempts = 0
        try:
            async for attempt in AsyncRetrying(
                stop=stop_after_attempt(self.sub.attempts),
                wait=self.wait,
                retry=retry_if_exception_type(_Retry),
                reraise=True,
            ):
                with attempt:
                    attempts += 1
                    await self._post(env, body)
        except _Retry as exc:
            WEBHOOK_DELIVERIES.labels(self.sub.source, "undeliverable").inc()
            raise WebhookUndeliverable(f"{self.sub.source}: {exc} after {attempts} attempts") from None
        except WebhookUndeliverable:
            WEBHOOK_DELIVERIES.labels(self.sub.source, "undeliverable").inc()
            raise
        WEBHOOK_DELIVERIES.labels(self.sub.source, "delivered").inc()
        log.info("connector.webhook_delivered", source=self.sub.source, event_type=env.type, attempts=attempts)
        return attempts

    async def _post(self, env: Envelope, body: bytes) -> None:
        try:
            r = await self.client.post(
                self.sub.url, content=body, headers=self.headers(env, body), timeout=self.sub.timeout_seconds
            )
        except httpx.HTTPError as exc:  # timeouts, refused or reset connections
            WEBHOOK_ATTEMPTS.labels(self.sub.source, "error").inc()
            raise _Retry(f"{type(exc).__name__}") from None
        WEBHOOK_ATTEMPTS.labels(self.sub.source, "429" if r.status_code == 429 else f"{r.status_code // 100}xx").inc()
        if r.status_code >= 500 or r.status_code == 429:
            raise _Retry(f"HTTP {r.status_code}")
        if r.status_code >= 300:
            raise WebhookUndeliverable(f"{self.sub.source}: refused with HTTP {r.status_code}")
