"""Everything a request handler needs, built once in the lifespan and kept on ``app.state.intake``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

import structlog
from fastapi import Request

from services.intake.edge import field_error, public_url
from services.intake.rate_limits import NoRateLimits, RateLimits
from services.intake.rules import MinuteCachedHours, OpenHours
from services.intake.service import IntakeError, IntakeService
from services.intake.settings import IntakeSettings
from services.intake.signatures import (
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    TWILIO_SETTINGS_HEADER,
    TWILIO_SIGNATURE_HEADER,
    SignatureFailure,
    verify_generic,
    verify_twilio,
)
from services.intake.store import RequestKey
from services.intake.twiml import Voice
from shared.business_hours import BusinessCalendars, SiteCalendar
from shared.promise import NoPromise, Promise, PromisePolicy, decide_promise

log = structlog.get_logger(__name__)


@dataclass
class IntakeContext:
    settings: IntakeSettings
    service: IntakeService
    calendars: BusinessCalendars
    tenant_id: str
    clock: Callable[[], datetime]
    promise_policy: PromisePolicy = field(default_factory=PromisePolicy)
    rate_limits: RateLimits = field(default_factory=NoRateLimits)
    _hours: dict[str, OpenHours] = field(default_factory=dict)
    signatures_required: bool = True

    def __post_init__(self) -> None:
        self.signatures_required = self.settings.signatures_required()

    @property
    def voice(self) -> Voice:
        return Voice(self.settings.twilio_language, self.settings.twilio_voice)

    def calendar(self, site: str) -> SiteCalendar:
        return self.calendars.for_site(site)

    def promise(self, site: str, at: datetime, customer_tz: str | None) -> Promise | NoPromise:
        """THE callback promise (shared.promise): the callback service computes the same value."""
        return decide_promise(self.calendar(site), self.promise_policy, at, customer_tz)

    def require_site(self, site: str, loc: list[str | int]) -> None:
        """422 naming the configured sites for a site nobody configured."""
        if not self.calendars.is_configured(site, self.settings.default_site):
            raise field_error(loc, self.calendars.unknown_site_error(site, self.settings.default_site))

    def hours(self, site: str) -> OpenHours:
        """The site's open/closed answer, memoised per minute (hours are configured to the minute)."""
        cached = self._hours.get(site)
        if cached is None:
            cached = self._hours[site] = MinuteCachedHours(self.calendars.for_site(site))
        return cached

    def key(self, scope: str, source: str, key: str) -> RequestKey:
        return RequestKey(self.tenant_id, scope, source, key)

    def reject_signature(self, request: Request, source: str, failure: SignatureFailure, size: int) -> IntakeError:
        # Logged without the body: it may carry personal data, and a forger learns nothing from logs.
        log.warning(
            "intake.signature_rejected",
            source=source,
            reason=failure.value,
            path=request.url.path,
            client=request.client.host if request.client else None,
            body_bytes=size,
        )
        return IntakeError(401, failure.value, "missing, invalid or expired signature")

    def check_generic_signature(
        self, request: Request, source: str, body: bytes, *, required_without_secret: bool
    ) -> None:
        """401 unless ``body`` carries a valid, fresh signature for ``source`` (when one is due)."""
        secret = self.settings.secret_for(source)
        if secret is None:
            if required_without_secret and self.signatures_required:
                raise self.reject_signature(request, source, SignatureFailure.UNKNOWN_SOURCE, len(body))
            return
        failure = verify_generic(
            secret,
            body=body,
            timestamp_header=request.headers.get(TIMESTAMP_HEADER),
            signature_header=request.headers.get(SIGNATURE_HEADER),
            now=self.clock().timestamp(),
            tolerance_seconds=self.settings.signature_tolerance_seconds,
        )
        if failure is not None:
            raise self.reject_signature(request, source, failure, len(body))

    def check_twilio_signature(self, request: Request, params: list[tuple[str, str]], size: int) -> None:
        token = self.settings.twilio_auth_token
        shared = {k: v.get_secret_value().encode() for k, v in self.settings.twilio_shared_keys.items()}
        if token is None and not shared:
            if self.signatures_required:  # nothing to verify with, and unsigned is not allowed here
                raise self.reject_signature(request, self.settings.twilio_source, SignatureFailure.UNKNOWN_SOURCE, size)
            return  # loopback-only development without a Twilio token
        failure = verify_twilio(
            auth_token=token.get_secret_value().encode() if token is not None else None,
            shared_keys=shared,
            url=public_url(request, self.settings.public_base_url, self.settings.trust_forwarded_headers),
            params=params,
            signature=request.headers.get(TWILIO_SIGNATURE_HEADER),
            settings_header=request.headers.get(TWILIO_SETTINGS_HEADER),
        )
        if failure is not None:
            raise self.reject_signature(request, self.settings.twilio_source, failure, size)


def context(request: Request) -> IntakeContext:
    ctx: IntakeContext = request.app.state.intake
    return ctx
