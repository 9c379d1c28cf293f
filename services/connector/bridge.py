"""The voice bridge: when an agent accepts a voice contact that came from Twilio, ring that agent.

Consumes ``routing``: ``offer.accepted`` carries the agent's ``contact_uri`` and the contact's ``source``
and ``external_id`` (for Twilio calls, the CallSid). ``contacts`` adds the caller's number (caller id)
and covers routers that predate those fields.
The dial's outcome comes back through intake's dial-result webhook; a call that cannot be redirected is
reported here as ``contact.agent_dialed`` so the router requeues or abandons the contact.

Deterministic event ids make a redelivered ``offer.accepted`` publish nothing new, and a redirect is made
once per accepted offer: ringing an agent again mid-conversation would drop the call.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import structlog

from services.connector.settings import ConnectorSettings
from services.connector.twilio_calls import TwilioCalls
from shared.events import (
    AgentDialed,
    AssignmentCompleted,
    Channel,
    ContactAbandoned,
    ContactRequested,
    DialResult,
    Envelope,
    OfferAccepted,
    deterministic_id,
)

log = structlog.get_logger(__name__)

Publish = Callable[[AgentDialed, str], Awaitable[None]]  # (event, deterministic event id)


@dataclass(slots=True)
class TwilioCall:
    call_sid: str
    caller: str | None  # the caller's E.164 number, when not withheld
    dialled_offer: str | None = None  # the accepted offer this call was last redirected for


class CallDirectory:
    """Which Twilio call each live voice contact is, and which offer it was last redirected for. In memory
    and bounded (the oldest go first): after a restart ``offer.accepted`` itself names the call."""

    def __init__(self, limit: int = 100_000) -> None:
        self._calls: OrderedDict[str, TwilioCall] = OrderedDict()
        self._limit = limit

    def remember(self, contact_id: str, call: TwilioCall) -> None:
        self._calls.setdefault(contact_id, call)
        while len(self._calls) > self._limit:
            self._calls.popitem(last=False)

    def get(self, contact_id: str) -> TwilioCall | None:
        return self._calls.get(contact_id)

    def forget(self, contact_id: str) -> None:
        self._calls.pop(contact_id, None)


class VoiceBridge:
    def __init__(
        self,
        settings: ConnectorSettings,
        calls: TwilioCalls,
        publish: Publish,
        directory: CallDirectory | None = None,
    ) -> None:
        self.settings = settings
        self.calls = calls
        self.publish = publish
        self.directory = directory or CallDirectory()

    async def __call__(self, env: Envelope, _record: object = None) -> None:
        await self.handle(env)

    async def handle(self, env: Envelope) -> DialResult | None:
        """Apply one event; for an accepted Twilio call, the redirect's failure (None: ringing, or n/a)."""
        data = env.payload
        if isinstance(data, ContactRequested):
            if data.source == self.settings.twilio_source and data.channel is Channel.VOICE:
                self.directory.remember(data.contact_id, TwilioCall(data.external_id, data.customer.phone))
        elif isinstance(data, (ContactAbandoned, AssignmentCompleted)):
            self.directory.forget(data.contact_id)
        elif isinstance(data, OfferAccepted) and data.channel is Channel.VOICE:
            return await self._ring(data)
        return None

    async def _ring(self, accepted: OfferAccepted) -> DialResult | None:
        call = self.directory.get(accepted.contact_id)
        if call is None and accepted.source == self.settings.twilio_source and accepted.external_id:
            # The router says which call it is: no need to have seen contact.requested (a restart).
            call = TwilioCall(accepted.external_id, None)
            self.directory.remember(accepted.contact_id, call)
        if call is None:
            return None  # not a Twilio call
        if call.dialled_offer == accepted.offer_id:
            return None  # a redelivery: the agent is already being rung
        call.dialled_offer = accepted.offer_id
        if accepted.contact_uri is None:
            # The agent accepted a call it cannot be rung for: back in line, counted against the agent
            # (after a few, the router puts it on break instead of bouncing callers through it).
            result, detail = DialResult.FAILED, "agent has no voice contact_uri"
        else:
            outcome = await self.calls.ring_agent(call.call_sid, accepted.agent_id, accepted.contact_uri, call.caller)
            if outcome.result is None:
                log.info("connector.ringing", contact_id=accepted.contact_id, agent_id=accepted.agent_id)
                return None
            result, detail = outcome.result, outcome.detail
        log.warning("connector.not_connected", contact_id=accepted.contact_id, result=result.value, detail=detail)
        event = AgentDialed(
            tenant_id=accepted.tenant_id,
            contact_id=accepted.contact_id,
            agent_id=accepted.agent_id,
            site=accepted.site,
            result=result,
            call_ref=call.call_sid,
            detail=detail,
        )
        await self.publish(event, deterministic_id("agent-dialed", accepted.offer_id))
        return result
