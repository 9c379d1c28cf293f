"""Connector settings (``SWITCHBOARD_CONNECTOR_*``): Twilio credentials and how the agent is dialled."""

from __future__ import annotations

from typing import Any

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.connector.webhooks import WebhookSubscription


class ConnectorSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SWITCHBOARD_CONNECTOR_", env_file=".env", extra="ignore")

    twilio_account_sid: str | None = Field(None, description="Account SID (AC...): the REST API's account.")
    twilio_auth_token: SecretStr | None = Field(None, description="Auth token (or an API key secret).")
    twilio_api_key_sid: str | None = Field(None, description="API key SID (SK...), used instead of the account SID.")
    twilio_api_base_url: str | None = Field(
        None, description="Override of https://api.twilio.com (a proxy, or a local fake in tests)."
    )
    twilio_timeout_seconds: float = Field(10.0, gt=0, le=60, description="Timeout of one REST API request.")
    twilio_source: str = Field("twilio", description="Source name intake gives Twilio calls (same as intake's).")
    intake_public_url: str = Field(
        "http://127.0.0.1:8001", description="Intake's public base URL: Twilio posts the dial outcome there."
    )
    dial_timeout_seconds: int = Field(20, ge=5, le=600, description="How long the agent's phone rings.")
    dial_caller_id: str | None = Field(
        None,
        description="<Dial callerId>: one of your Twilio numbers (required to ring an E.164 agent). Default: the "
        "caller's number, which Twilio allows for client: and sip: agents.",
    )
    callback_dial_out: bool = Field(
        False,
        description="Place accepted voice callbacks: ring the agent, then the customer (needs DIAL_CALLER_ID).",
    )
    redirect_attempts: int = Field(3, ge=1, le=10, description="Tries of the call update on 5xx/network errors.")
    webhooks: list[WebhookSubscription] = Field(
        default_factory=list,
        description="Signed outbound webhooks, one per source (JSON list): "
        '[{"source": "asterisk", "url": "https://pbx/hook", "secret": "...", "events": ["offer.accepted"]}]',
    )

    @field_validator(
        "twilio_account_sid",
        "twilio_auth_token",
        "twilio_api_key_sid",
        "twilio_api_base_url",
        "dial_caller_id",
        mode="before",
    )
    @classmethod
    def _blank_is_unset(cls, value: Any) -> Any:
        return None if isinstance(value, str) and not value.strip() else value  # compose's `${VAR:-}`

    @field_validator("webhooks")
    @classmethod
    def _one_per_source(cls, webhooks: list[WebhookSubscription]) -> list[WebhookSubscription]:
        sources = [w.source for w in webhooks]
        if len(set(sources)) != len(sources):
            raise ValueError("one webhook subscription per source")
        return webhooks
