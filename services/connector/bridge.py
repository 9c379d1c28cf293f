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
from typing import Any

import structlog

from services.connector.metrics import DIALS
from services.connector.settings import ConnectorSettings
from services.connector.twilio_calls import TwilioCalls
from shared.events import (
    AgentDialed,
    AssignmentCompleted,
    CallbackDue,
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
        # Callbacks the router may offer (work item id = callback id) -> the customer's number.
        self.callbacks: OrderedDict[str, str] = OrderedDict()
        self._placed: OrderedDict[str, None] = OrderedDict()  # accepted offers a callback was placed for

    async def __call__(self, env: Envelope, _record: object = None) -> None:
        await self.handle(env)

    async def handle(self, env: Envelope) -> DialResult | None:
        """Apply one event; for an accepted Twilio call, the redirect's failure (None: ringing, or n/a)."""
        data = env.payload
        if isinstance(data, ContactRequested):
            if data.source == self.settings.twilio_source and data.channel is Channel.VOICE:
                self.directory.remember(data.contact_id, TwilioCall(data.external_id, data.customer.phone))
        elif isinstance(data, CallbackDue):
            if data.channel is Channel.VOICE and data.customer.phone:
                self.callbacks[data.callback_id] = data.customer.phone
                _bound(self.callbacks)
        elif isinstance(data, (ContactAbandoned, AssignmentCompleted)):
            self.directory.forget(data.contact_id)
            self.callbacks.pop(data.contact_id, None)
        elif isinstance(data, OfferAccepted) and data.channel is Channel.VOICE:
            if data.contact_id in self.callbacks and data.source is None:
                return await self._call_out(data)
            return await self._ring(data)
        return None

    async def _call_out(self, accepted: OfferAccepted) -> DialResult | None:
        """An accepted voice callback: ring the agent, then the customer (when enabled and possible)."""
        s = self.settings
        caller_id = s.dial_caller_id
        if not s.callback_dial_out or caller_id is None or accepted.offer_id in self._placed:
            return None  # the agent dials by hand, or this acceptance was already placed
        self._placed[accepted.offer_id] = None
        _bound(self._placed)
        detail: str | None
        if accepted.contact_uri is None:
            result, detail = DialResult.FAILED, "agent has no voice contact_uri"
        else:
            outcome = await self.calls.call_out(
                callback_id=accepted.contact_id,
                agent_id=accepted.agent_id,
                site=accepted.site,
                contact_uri=accepted.contact_uri,
                customer_phone=self.callbacks[accepted.contact_id],
                caller_id=caller_id,
            )
            if outcome.result is None:
                DIALS.labels("call_out", "placed").inc()
                log.info("connector.callback_placed", callback_id=accepted.contact_id, agent_id=accepted.agent_id)
                return None
            result, detail = DialResult.NOT_CONNECTED, outcome.detail  # no call was placed: not the agent's doing
        DIALS.labels("call_out", result.value).inc()
        return await self._report(accepted, result, None, detail)

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
        detail: str | None
        if accepted.contact_uri is None:
            # The agent accepted a call it cannot be rung for: back in line, counted against the agent
            # (after a few, the router puts it on break instead of bouncing callers through it).
            result, detail = DialResult.FAILED, "agent has no voice contact_uri"
        else:
            outcome = await self.calls.ring_agent(call.call_sid, accepted.agent_id, accepted.contact_uri, call.caller)
            if outcome.result is None:
                DIALS.labels("ring", "placed").inc()
                log.info("connector.ringing", contact_id=accepted.contact_id, agent_id=accepted.agent_id)
                return None
            result, detail = outcome.result, outcome.detail
        DIALS.labels("ring", result.value).inc()
        return await self._report(accepted, result, call.call_sid, detail)

    async def _report(
        self, accepted: OfferAccepted, result: DialResult, call_ref: str | None, detail: str | None
    ) -> DialResult:
        log.warning("connector.not_connected", contact_id=accepted.contact_id, result=result.value, detail=detail)
        event = AgentDialed(
            tenant_id=accepted.tenant_id,
            contact_id=accepted.contact_id,
            agent_id=accepted.agent_id,
            site=accepted.site,
            result=result,
            call_ref=call_ref,
            detail=detail,
        )
        await self.publish(event, deterministic_id("agent-dialed", accepted.offer_id))
        return result


def _bound(d: OrderedDict[str, Any], limit: int = 100_000) -> None:
    while len(d) > limit:
        d.popitem(last=False)
