"""Intake settings, read from ``SWITCHBOARD_INTAKE_*`` (dicts and nested models as JSON)."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any

import yaml
from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.intake.rate_limits import NoRateLimits, RateLimits, RateLimitSpecs, parse_limits
from services.intake.rules import EnrichmentRules
from shared.business_hours import BusinessCalendars, SitesConfig, load_sites_file
from shared.events import DEFAULT_SITE
from shared.settings import CommonSettings


def is_loopback(host: str | None) -> bool:
    """Whether listening on ``host`` reaches this machine only (unknown: no)."""
    if not host:
        return False
    if host.strip("[]").lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class IntakeSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SWITCHBOARD_INTAKE_", env_file=".env", extra="ignore")

    database_url: str | None = Field(
        None, description="Idempotency store; default: SQLite file intake.sqlite3 in the data dir."
    )
    source_secrets: dict[str, SecretStr] = Field(
        default_factory=dict,
        description='Per-source HMAC-SHA256 secrets for signed JSON webhooks, e.g. {"acme-ivr": "..."}.',
    )
    require_signatures: bool | None = Field(
        None,
        description="Reject unsigned webhooks (JSON from sources without a secret; Twilio without its token). "
        "Default (unset): required unless intake listens on loopback only and no source secret is configured; "
        "`false` is an explicit opt-out, logged loudly. The web callback form is exempt unless its source "
        "has a secret (browsers cannot sign).",
    )
    listen_host: str | None = Field(
        None,
        description="The interface intake listens on; `switchboard intake/run --host` set it. Unknown (unset): "
        "treated as public, so signatures are required unless require_signatures is false.",
    )
    signature_tolerance_seconds: int = Field(
        300, gt=0, description="Max clock skew of X-Switchboard-Timestamp; older requests are replays."
    )
    twilio_auth_token: SecretStr | None = Field(
        None, description="Twilio account auth token: when set, X-Twilio-Signature is required."
    )
    twilio_shared_keys: dict[str, SecretStr] = Field(
        default_factory=dict,
        description="Twilio webhook SharedKeys by key id (X-Twilio-Webhooks-Signature-Settings: key=...).",
    )
    twilio_source: str = Field("twilio", description="Source name of Twilio webhooks (idempotency scope).")
    public_base_url: str | None = Field(
        None,
        description="Scheme+host(+prefix) Twilio calls, e.g. https://cc.example.com. Behind a proxy the "
        "URL we see differs from the one Twilio signed; set this so signatures verify.",
    )
    trust_forwarded_headers: bool = Field(
        False, description="Without public_base_url: rebuild the URL from X-Forwarded-Proto/Host."
    )
    max_body_bytes: int = Field(64 * 1024, gt=0, description="Larger bodies are refused with 413.")
    rate_limits_enabled: bool = Field(
        True, description="429 + Retry-After beyond the rate limits below (off: benchmarks, load tests)."
    )
    webhook_rate_limit_per_client: str = Field(
        "6000/minute",
        description='JSON and Twilio webhooks, per client address; "N/second|minute|hour|day", several '
        'separated by ";" (all must hold), "" for none.',
    )
    webhook_rate_limit_per_source: str = Field(
        "6000/minute", description="JSON and Twilio webhooks, per (signing) source."
    )
    web_form_rate_limit_per_client: str = Field(
        "5/minute;20/hour",
        description="Web callback form, per client address: each request schedules a call to a number of "
        "the client's choosing.",
    )
    web_form_rate_limit_per_source: str = Field(
        "300/minute", description="Web callback form, per source (all browsers of a website together)."
    )
    web_form_rate_limit_per_phone: str = Field(
        "3/hour", description="Web callback form, per phone number to call (a flood from many addresses)."
    )
    default_site: str = Field(DEFAULT_SITE, description="Site of contacts that name none.")
    twilio_sites: dict[str, str] = Field(
        default_factory=dict, description="Called number (Twilio `To`, E.164) -> site."
    )
    rules: EnrichmentRules = Field(default_factory=EnrichmentRules, description="Enrichment rules.")
    rules_file: Path | None = Field(None, description="YAML/JSON file with the enrichment rules.")
    sites: SitesConfig | None = Field(None, description="Business calendars (see shared.business_hours).")
    sites_file: Path | None = Field(None, description="YAML/JSON business calendars file.")
    # The callback promise's cut-off, customer calling hours and bound are shared with the callback
    # service: shared.settings.PromiseSettings, SWITCHBOARD_PROMISE_* (SWITCHBOARD_INTAKE_CALLBACK_CUTOFF_MINUTES
    # is still read there, deprecated).
    twilio_gather: bool = Field(True, description="Ask the IVR menu (one digit) before deciding.")
    twilio_language: str = Field("en-US", description="<Say> language.")
    twilio_voice: str | None = Field(None, description="<Say> voice, e.g. Polly.Joanna.")
    twilio_menu_prompt: str = Field(
        "Welcome. For support press 1, to buy press 2, for billing press 3, to cancel press 4. "
        "To be called back today instead of waiting, press 9.",
    )
    twilio_hold_message: str = Field("Thank you for calling. The next available agent will be with you shortly.")
    twilio_queue_prefix: str = Field("switchboard", description="Twilio queue name = prefix-site.")
    twilio_wait_url: str | None = Field(None, description="<Enqueue waitUrl> (hold music), optional.")
    publish_timeout_seconds: float = Field(
        5.0, gt=0, description="Longer than this without the bus's ack: 503 (the client retries)."
    )
    retry_after_seconds: int = Field(5, ge=1, description="Retry-After of 503 answers.")
    readiness_timeout_seconds: float = Field(
        1.0, gt=0, description="Each /readyz probe (bus, store, disk) not answering within this: not ready."
    )
    readiness_failure_window_seconds: float = Field(
        10.0,
        gt=0,
        description="A request that failed to persist keeps /readyz false this long (or until one succeeds).",
    )
    idempotency_retention_hours: float = Field(
        168, gt=0, description="How long a request is remembered (telephony retries come within hours)."
    )
    prune_interval_seconds: float = Field(600, gt=0, description="How often expired requests are purged.")
    gc_freeze: bool = Field(True, description="gc.freeze() after start-up: long-lived objects skip GC passes.")
    fast_path: bool = Field(
        False,
        description="Throughput shortcuts that depend on private internals of FastAPI/Starlette and phonenumbers "
        "(docs/decisions/0001-intake-fast-path.md): webhooks served past FastAPI's middleware stack and routing "
        "(services/intake/api/direct.py), strict E.164 numbers parsed with phonenumbers' private helpers "
        "(services/intake/phones.py). Same answers. Off (default): FastAPI's routing and public APIs only.",
    )

    @field_validator("twilio_auth_token", mode="before")
    @classmethod
    def _blank_is_unset(cls, value: Any) -> Any:
        return None if isinstance(value, str) and not value.strip() else value  # compose's `${VAR:-}`

    @field_validator(
        "webhook_rate_limit_per_client",
        "webhook_rate_limit_per_source",
        "web_form_rate_limit_per_client",
        "web_form_rate_limit_per_source",
        "web_form_rate_limit_per_phone",
    )
    @classmethod
    def _rate_limit(cls, value: str) -> str:
        parse_limits(value)  # a typo stops the start, not the first request
        return value

    def rate_limits(self) -> RateLimits:
        if not self.rate_limits_enabled:
            return NoRateLimits()
        return RateLimits(
            RateLimitSpecs(
                webhook_per_client=self.webhook_rate_limit_per_client,
                webhook_per_source=self.webhook_rate_limit_per_source,
                web_form_per_client=self.web_form_rate_limit_per_client,
                web_form_per_source=self.web_form_rate_limit_per_source,
                web_form_per_phone=self.web_form_rate_limit_per_phone,
            )
        )

    @field_validator("public_base_url")
    @classmethod
    def _strip_slash(cls, value: str | None) -> str | None:
        return value.rstrip("/") if value else value

    @model_validator(mode="after")
    def _load_files(self) -> IntakeSettings:
        if self.rules_file is not None:
            raw: Any = yaml.safe_load(self.rules_file.read_text(encoding="utf-8")) or {}
            object.__setattr__(self, "rules", EnrichmentRules.model_validate(raw))
        return self

    def calendars(self, common: CommonSettings | None = None) -> BusinessCalendars:
        """Business calendars: intake's own sites file or inline sites if set, else the deployment's
        (``SWITCHBOARD_SITES_FILE``/``_JSON``), else the default (Mon-Fri 08-18 UTC)."""
        if self.sites_file is not None:
            return load_sites_file(self.sites_file)
        if self.sites is not None:
            return BusinessCalendars.from_config(self.sites)
        return (common or CommonSettings()).calendars()

    def listens_on_loopback_only(self) -> bool:
        return is_loopback(self.listen_host)

    def signatures_required(self) -> bool:
        """Secure by default: unsigned webhooks only on a loopback-only intake with no secrets configured
        (a developer's machine), or where the operator explicitly opted out."""
        if self.require_signatures is not None:
            return self.require_signatures
        return bool(self.source_secrets) or not self.listens_on_loopback_only()

    def secret_for(self, source: str) -> bytes | None:
        secret = self.source_secrets.get(source)
        return secret.get_secret_value().encode() if secret is not None else None
