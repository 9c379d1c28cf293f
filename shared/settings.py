"""Settings common to every service, read from ``SWITCHBOARD_*`` environment variables.

Each service adds its own settings class with a narrower prefix (``SWITCHBOARD_ROUTER_*``...).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.business_hours import BusinessCalendars, load_sites_file, parse_periods
from shared.promise import PromisePolicy, WhenNoOverlap


class CommonSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SWITCHBOARD_", env_file=".env", extra="ignore")

    data_dir: Path = Field(Path(".switchboard"), description="Where the embedded bus and databases live.")
    bus: Literal["embedded", "kafka"] = Field("embedded", description="Which event bus to use.")
    kafka_bootstrap_servers: str = Field("127.0.0.1:9092", description="Kafka brokers (bus=kafka).")
    kafka_partitions: int = Field(6, description="Partitions per topic when the bus creates topics.")
    kafka_replication_factor: int = Field(1, description="Replication factor for created topics.")
    kafka_publish_timeout: float = Field(
        5.0, description="Seconds a Kafka publish may take before it fails (intake then answers 503)."
    )
    kafka_session_timeout_ms: int = Field(
        6_000,
        ge=1,
        description="Kafka consumer session timeout: how long a killed consumer keeps its partitions before the "
        "group moves them (the broker's group.min.session.timeout.ms, 6 s by default, is the floor).",
    )
    kafka_heartbeat_interval_ms: int = Field(
        1_000, ge=1, description="Kafka consumer heartbeat interval (keep it at most a third of the session timeout)."
    )
    kafka_rebalance_timeout_ms: int = Field(
        30_000, ge=1, description="How long a Kafka rebalance waits for members to rejoin."
    )
    kafka_group_instance_id: str | None = Field(
        None,
        description="Static group membership (KIP-345): a stable id per replica (e.g. the pod name). A restarted "
        "consumer with the same id takes its partitions back at once, without a rebalance. Must be unique per "
        "replica; a stopped static member's partitions move only after the session timeout.",
    )
    embedded_partitions: int = Field(4, description="Partitions per topic on the embedded bus.")
    embedded_session_timeout: float = Field(
        6.0, gt=0, description="Embedded bus: seconds a dead consumer's partition leases last before others take them."
    )
    embedded_heartbeat_interval: float = Field(
        0.5, gt=0, description="Embedded bus: how often a consumer renews its leases and rebalances."
    )
    topic_prefix: str = Field("", description="Prefix of every topic name (isolates environments).")
    max_delivery_attempts: int = Field(
        5,
        ge=1,
        description="Attempts of a handler failing for a reason that is not transient before the event goes to "
        "the DLQ. Transient failures (own database or bus unavailable) are retried until they pass.",
    )
    transient_backoff_max: float = Field(
        5.0,
        gt=0,
        description="Longest wait (seconds, jittered) between retries of an event while a dependency is down; "
        "also how late, at most, a consumer resumes after it is back.",
    )
    sqlite_busy_timeout: float = Field(
        10.0,
        gt=0,
        description="SQLite databases of router and callback: seconds a write waits for another connection's "
        "lock before it fails as transient (the API then answers 503 + Retry-After, consumers retry).",
    )
    readiness_timeout: float = Field(
        1.5, gt=0, description="Seconds each /readyz check may take before it counts as failed."
    )
    migrate_on_start: bool = Field(
        True,
        description="Each stateful service brings its database to the newest schema when it starts. Set false where "
        "a one-off job runs `switchboard migrate` first (Kubernetes, docker compose): the service then waits for "
        "that and refuses to start on an older schema.",
    )
    migration_wait_seconds: float = Field(
        120.0,
        ge=0,
        description="With migrate_on_start=false: how long a starting service waits for `switchboard migrate` "
        "to bring its database to the newest schema before it gives up (exits).",
    )
    tenant_id: str = Field("default", description="Tenant of this deployment.")
    inbox_retention_days: float = Field(
        8.0, gt=0, description="How long consumers remember handled event ids; keep it above the bus retention."
    )
    outbox_gather_seconds: float = Field(
        0.05,
        ge=0,
        le=5,
        description="After the outbox relay published, how long the next rows may wait so that the commits "
        "of that time go to the bus together (one transaction, one bus round trip); 0: each commit at once. "
        "An agent hears of an offer on its stream directly, not through this.",
    )
    log_level: str = Field("INFO", description="Log level.")
    log_json: bool = Field(True, description="JSON logs (false: human-readable console logs).")
    docs_enabled: bool = Field(True, description="Serve /docs, /redoc and /openapi.json.")
    sites_file: Path | None = Field(
        None, description="Business calendars of the sites (YAML/JSON, see shared.business_hours), for every service."
    )
    sites_json: str | None = Field(None, description="The same sites config inline as JSON.")

    def calendars(self) -> BusinessCalendars:
        """The deployment's business calendars: one source, so intake and callback agree on opening hours."""
        if self.sites_file is not None:
            return load_sites_file(self.sites_file)
        return BusinessCalendars.from_config(json.loads(self.sites_json) if self.sites_json else {})

    @property
    def embedded_bus_path(self) -> Path:
        return self.data_dir / "bus.sqlite3"

    def database_url_for(self, service: str, override: str | None) -> str:
        """The service's own database: explicit URL if given, else an SQLite file in the data dir."""
        if override:
            return override
        return f"sqlite+aiosqlite:///{(self.data_dir / f'{service}.sqlite3').resolve()}"


class PromiseSettings(BaseSettings):
    """The callback promise (``SWITCHBOARD_PROMISE_*``): ONE source read by intake and callback alike, so
    what intake tells the customer is what the callback service tracks (see :mod:`shared.promise`).

    Deprecated aliases still read (first match wins, in this order): ``SWITCHBOARD_CALLBACK_CUTOFF_MINUTES``,
    ``SWITCHBOARD_INTAKE_CALLBACK_CUTOFF_MINUTES``, ``SWITCHBOARD_CALLBACK_CUSTOMER_CALLING_HOURS``."""

    model_config = SettingsConfigDict(env_prefix="SWITCHBOARD_PROMISE_", env_file=".env", extra="ignore")

    # The pydantic mypy plugin refuses AliasChoices (it cannot derive __init__'s keywords from them) unless
    # validate_by_name is on, which would also make pydantic-settings read more environment variables.
    # Each field's own name is one of its choices, so __init__(field_name=...) works as written.
    cutoff_minutes: int = Field(  # type: ignore[pydantic-alias]  # env names; field name among them
        30,
        ge=0,
        validation_alias=AliasChoices(
            "SWITCHBOARD_PROMISE_CUTOFF_MINUTES",
            "SWITCHBOARD_CALLBACK_CUTOFF_MINUTES",
            "SWITCHBOARD_INTAKE_CALLBACK_CUTOFF_MINUTES",
            "cutoff_minutes",
        ),
        description="Less callable time than this left today: the promise is for the next day with callable time.",
    )
    customer_calling_hours: str | None = Field(  # type: ignore[pydantic-alias]  # env names; field name among them
        "08:00-21:00",
        validation_alias=AliasChoices(
            "SWITCHBOARD_PROMISE_CUSTOMER_CALLING_HOURS",
            "SWITCHBOARD_CALLBACK_CUSTOMER_CALLING_HOURS",
            "customer_calling_hours",
        ),
        description="Customer-local hours we may call in (HH:MM-HH:MM); empty: any time.",
    )
    max_business_days: int = Field(  # type: ignore[pydantic-alias]  # env names; field name among them
        2,
        ge=0,
        validation_alias=AliasChoices("SWITCHBOARD_PROMISE_MAX_BUSINESS_DAYS", "max_business_days"),
        description="No deadline after the end of the site's N-th business day after today.",
    )
    when_no_overlap: WhenNoOverlap = Field(  # type: ignore[pydantic-alias]  # env names; field name among them
        WhenNoOverlap.DECLINE,
        validation_alias=AliasChoices("SWITCHBOARD_PROMISE_WHEN_NO_OVERLAP", "when_no_overlap"),
        description="No callable moment within the bound: `decline` (no promise: the web form says when to "
        "call, the caller stays queued) or `site_hours` (promise within the site's hours, customer's local "
        "time said plainly).",
    )

    @field_validator("customer_calling_hours")
    @classmethod
    def _valid_hours(cls, value: str | None) -> str | None:
        if value:
            if len(parse_periods([value])) != 1:
                raise ValueError("one period HH:MM-HH:MM")
        return value or None

    def policy(self) -> PromisePolicy:
        hours = parse_periods([self.customer_calling_hours])[0] if self.customer_calling_hours else None
        return PromisePolicy(
            cutoff_minutes=self.cutoff_minutes,
            customer_hours=hours,
            max_business_days=self.max_business_days,
            when_no_overlap=self.when_no_overlap,
        )
