"""Callback service settings (``SWITCHBOARD_CALLBACK_*``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.business_hours import BusinessCalendars, SitesConfig, load_sites_file
from shared.settings import CommonSettings


class CallbackSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SWITCHBOARD_CALLBACK_", env_file=".env", extra="ignore")

    database_url: str | None = Field(None, description="Own database; default: SQLite in the data dir.")
    sites_file: Path | None = Field(None, description="YAML/JSON business calendars (see business_hours).")
    sites_json: str | None = Field(None, description="The same sites config inline as JSON.")

    # The promise's own settings (cut-off, customer calling hours, the bound) are shared with intake:
    # shared.settings.PromiseSettings, SWITCHBOARD_PROMISE_* (SWITCHBOARD_CALLBACK_CUTOFF_MINUTES and
    # SWITCHBOARD_CALLBACK_CUSTOMER_CALLING_HOURS still read there, deprecated).
    retry_spacing_minutes: float = Field(30, gt=0, description="Wait between unsuccessful attempts.")
    min_retry_spacing_minutes: float = Field(
        5, gt=0, description="Shortest spacing when the deadline compresses the last retry."
    )
    max_attempts: int = Field(3, ge=1, description="Unsuccessful attempts before the promise is closed.")
    attempt_reserve_minutes: float = Field(
        10, ge=0, description="Callable time one attempt needs; slack = callable time left - this."
    )
    at_risk_slack_minutes: float = Field(60, ge=0, description="Slack under this: at risk (escalate).")
    preferred_agent_share: float = Field(
        0.5, ge=0, le=1, description="Share of the slack during which a promising agent has it first."
    )
    max_priority_boost: float = Field(100.0, ge=0, description="Boost right at the deadline.")
    at_risk_priority_boost: float = Field(50.0, ge=0, description="Minimum boost once at risk.")
    in_progress_grace_minutes: float = Field(
        30, ge=0, description="A call accepted before the deadline may finish this long after it."
    )
    release_hold_minutes: float = Field(
        5,
        gt=0,
        description="A released callback not accepted within this stops holding a free agent: it waits in the "
        "router's line like any contact, and another callback may be released.",
    )
    consume_gather_seconds: float = Field(
        0.2,
        ge=0,
        le=5,
        description="How long the events the service consumes may wait for more before they are handled: "
        "fewer, larger transactions under a steady flow (its view of agents and promises is then up to this "
        "much later); 0: each fetch at once.",
    )
    poll_interval_seconds: float = Field(1.0, gt=0, description="Scheduler polling interval.")
    batch_size: int = Field(200, ge=1, description="Commitments handled per scheduler transaction.")
    release_without_presence: bool = Field(
        False,
        description="Release due callbacks without agent presence (only if no agent.status_changed flows).",
    )
    scheduler_enabled: bool = Field(True, description="Run the scheduler loop in this process.")
    sqlite_inline_writes: bool = Field(
        True,
        description="SQLite: run each unit of work's statements on the event loop's thread once the write "
        "lock is held (lock and commit on a worker thread); false: every statement through aiosqlite's thread.",
    )

    def calendars(self, common: CommonSettings | None = None) -> BusinessCalendars:
        """Callback's own sites config if set, else the deployment's (``SWITCHBOARD_SITES_FILE``/``_JSON``)."""
        if self.sites_file is not None:
            return load_sites_file(self.sites_file)
        if self.sites_json:
            raw: dict[str, Any] = json.loads(self.sites_json)
            return BusinessCalendars.from_config(SitesConfig.model_validate(raw))
        return (common or CommonSettings()).calendars()
