"""Twilio call control: redirect a waiting call to the agent who accepted it (REST call update + <Dial>).

Uses the official ``twilio`` library. Its client is synchronous (``requests``), so each call update runs
in a worker thread; there are few of them (one per accepted voice contact).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlencode

from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_exponential
from twilio.base.exceptions import TwilioRestException
from twilio.http.http_client import TwilioHttpClient
from twilio.rest import Client
from twilio.twiml.voice_response import Dial, VoiceResponse

from services.connector.settings import ConnectorSettings
from shared.contact_uri import UriKind, kind_of
from shared.events import DialResult

DIAL_RESULT_PATH = "/v1/webhooks/twilio/dial-result"
CALLBACK_RESULT_PATH = "/v1/webhooks/twilio/callback-result"
# Twilio's answer when the call already ended: 21220 "Call is not in-progress. Cannot redirect."
CALL_NOT_IN_PROGRESS = 21220


@dataclass(frozen=True, slots=True)
class RedirectOutcome:
    """What the call update achieved: ``None`` result means the call now rings the agent."""

    result: DialResult | None
    detail: str | None = None


def dial_twiml(contact_uri: str, *, action_url: str, timeout: int, caller_id: str | None) -> str:
    """TwiML that rings the agent; Twilio posts the outcome to ``action_url``."""
    response = VoiceResponse()
    dial = Dial(action=action_url, method="POST", timeout=timeout, caller_id=caller_id)
    kind = kind_of(contact_uri)
    if kind is UriKind.CLIENT:
        dial.client(contact_uri.removeprefix("client:"))
    elif kind is UriKind.SIP:
        dial.sip(contact_uri)
    else:
        dial.number(contact_uri)
    response.append(dial)
    return str(response)


def dial_action_url(intake_base: str, agent_id: str) -> str:
    """Intake's dial-outcome webhook; the contact is derived there from the CallSid Twilio sends."""
    return f"{intake_base.rstrip('/')}{DIAL_RESULT_PATH}?{urlencode({'agent': agent_id})}"


def callback_result_url(intake_base: str, callback_id: str, agent_id: str, site: str, leg: str) -> str:
    query = urlencode({"callback": callback_id, "agent": agent_id, "site": site, "leg": leg})
    return f"{intake_base.rstrip('/')}{CALLBACK_RESULT_PATH}?{query}"


def customer_dial_twiml(phone: str, *, action_url: str, timeout: int, caller_id: str) -> str:
    """What the agent's leg runs once answered: ring the customer, report the outcome to ``action_url``."""
    response = VoiceResponse()
    dial = Dial(action=action_url, method="POST", timeout=timeout, caller_id=caller_id)
    dial.number(phone)
    response.append(dial)
    return str(response)


def _transient(exc: BaseException) -> bool:
    if isinstance(exc, TwilioRestException):
        status: int = exc.status  # twilio ships no types: TwilioRestException.status is the HTTP status
        return status >= 500 or status == 429
    return isinstance(exc, OSError)  # connection refused/reset, timeouts (requests' errors are OSErrors)


class TwilioCalls:
    """Updates live calls through Twilio's REST API."""

    def __init__(self, settings: ConnectorSettings, client: Client | None = None) -> None:
        self.settings = settings
        self.client = client or self._client(settings)

    @staticmethod
    def _client(settings: ConnectorSettings) -> Client:
        if not settings.twilio_account_sid or settings.twilio_auth_token is None:
            raise ValueError("SWITCHBOARD_CONNECTOR_TWILIO_ACCOUNT_SID and _AUTH_TOKEN are required")
        token = settings.twilio_auth_token.get_secret_value()
        # A bounded wait: a hung API call would hold up every event behind it on the partition.
        http = TwilioHttpClient(timeout=settings.twilio_timeout_seconds)
        if settings.twilio_api_key_sid:
            client = Client(settings.twilio_api_key_sid, token, settings.twilio_account_sid, http_client=http)
        else:
            client = Client(settings.twilio_account_sid, token, http_client=http)
        if settings.twilio_api_base_url:
            client.api.base_url = settings.twilio_api_base_url.rstrip("/")
        return client

    async def ring_agent(self, call_sid: str, agent_id: str, contact_uri: str, caller: str | None) -> RedirectOutcome:
        """Redirect the waiting call to ``<Dial>`` the agent. Transient errors are retried; a call that
        already ended is ``caller_gone``; any other refusal is ``not_connected`` (not the agent's fault)."""
        s = self.settings
        twiml = dial_twiml(
            contact_uri,
            action_url=dial_action_url(s.intake_public_url, agent_id),
            timeout=s.dial_timeout_seconds,
            caller_id=s.dial_caller_id or caller,
        )
        return await self._with_retries(lambda: self.client.calls(call_sid).update(twiml=twiml))

    async def call_out(
        self, *, callback_id: str, agent_id: str, site: str, contact_uri: str, customer_phone: str, caller_id: str
    ) -> RedirectOutcome:
        """Place a callback for the agent: ring the agent first; once answered, the TwiML rings the
        customer. The agent leg's end and the customer leg's outcome come back to intake."""
        s = self.settings
        base = s.intake_public_url
        twiml = customer_dial_twiml(
            customer_phone,
            action_url=callback_result_url(base, callback_id, agent_id, site, "customer"),
            timeout=s.dial_timeout_seconds,
            caller_id=caller_id,
        )

        def create() -> object:
            return self.client.calls.create(
                to=contact_uri,
                from_=caller_id,
                twiml=twiml,
                timeout=s.dial_timeout_seconds,
                status_callback=callback_result_url(base, callback_id, agent_id, site, "agent"),
                status_callback_event=["completed"],
                status_callback_method="POST",
            )

        return await self._with_retries(create)

    async def _with_retries(self, request: Callable[[], object]) -> RedirectOutcome:
        """Run one REST request in a worker thread; transient errors are retried."""
        s = self.settings
        try:
            async for attempt in AsyncRetrying(
                stop=stop_after_attempt(s.redirect_attempts),
                wait=wait_exponential(multiplier=0.2, max=2),
                retry=retry_if_exception(_transient),
                reraise=True,
            ):
                with attempt:
                    await asyncio.to_thread(request)
        except TwilioRestException as exc:
            if exc.status == 404 or exc.code == CALL_NOT_IN_PROGRESS:
                return RedirectOutcome(DialResult.CALLER_GONE, f"twilio {exc.status}/{exc.code}: {exc.msg}"[:300])
            return RedirectOutcome(DialResult.NOT_CONNECTED, f"twilio {exc.status}/{exc.code}: {exc.msg}"[:300])
        except OSError as exc:
            return RedirectOutcome(DialResult.NOT_CONNECTED, f"twilio unreachable: {exc}"[:300])
        return RedirectOutcome(None)
