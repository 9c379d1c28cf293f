"""Twilio-compatible voice webhooks: the call comes in, the caller picks from the menu, waits or hangs up.

Flow of one call (every request signed with ``X-Twilio-Signature``):

1. ``POST /v1/webhooks/twilio/voice`` (no ``Digits``): while open, ask the one-digit menu (``<Gather>``);
   nothing is published yet. Without input Twilio follows the ``<Redirect>`` with ``?ivr=none``.
2. ``POST /v1/webhooks/twilio/voice`` with ``Digits`` (or ``?ivr=none``, or straight away when closed):
   the decision, published once per ``CallSid``:
   * callback digit pressed, or the site is closed -> ``callback.requested`` and an honest promise
     ("today by 17:00", or the next business day when today is not possible), then hang up;
   * otherwise -> ``contact.requested`` and ``<Enqueue>`` in the site's queue.
   A withheld number cannot be called back: it is queued when open, told our hours when closed.
3. ``POST /v1/webhooks/twilio/queue-result`` (the ``<Enqueue action>``): ``QueueResult=hangup`` means
   the caller gave up waiting -> ``contact.abandoned``. A queue that failed (``queue-full``, ``error``)
   turns the waiting caller into a callback instead of dropping them. Plain status callbacks
   (``CallStatus``) are accepted and ignored.

Twilio retries a webhook it got no answer for; the same ``CallSid`` gets the same TwiML back and
nothing new is published.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from services.intake import twiml
from services.intake.api.common import TWIML_OK, RequestOnlyRoute, begin, body_schema, error_responses
from services.intake.context import IntakeContext, context
from services.intake.edge import FORM, fingerprint, parse_form, public_url, read_body, require_media_type, validate
from services.intake.rate_limits import Family
from services.intake.rules import enrich, timezone_for
from services.intake.schemas import _e164
from services.intake.service import Prepared, Result
from services.intake.store import Scope
from shared.events import (
    CallbackOrigin,
    CallbackRequested,
    Channel,
    ContactAbandoned,
    ContactRequested,
    Customer,
    Intent,
    contact_id_for,
    deterministic_id,
)
from shared.promise import NoPromise, Promise

router = APIRouter(prefix="/v1/webhooks/twilio", tags=["twilio"], route_class=RequestOnlyRoute)

VOICE_PATH = "/v1/webhooks/twilio/voice"
QUEUE_RESULT_PATH = "/v1/webhooks/twilio/queue-result"
QUEUE_FAILURES = {"queue-full", "system-error", "error"}
TWIML_RESPONSES = {
    **TWIML_OK,
    **error_responses(400, 401, 413, 415, 422, 503),
}


class TwilioCall(BaseModel):
    """The Twilio parameters intake uses; Twilio sends many more (AccountSid, CallerCity...), ignored."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    call_sid: Annotated[str, Field(alias="CallSid", pattern=r"^[A-Za-z0-9]{1,64}$")]
    from_: Annotated[str, Field(alias="From", max_length=64)] = ""
    to: Annotated[str, Field(alias="To", max_length=64)] = ""
    digits: str | None = Field(None, alias="Digits", pattern=r"^[0-9*#]{0,32}$")
    call_status: str | None = Field(None, alias="CallStatus", max_length=32)
    queue_result: str | None = Field(None, alias="QueueResult", max_length=32)


def caller_phone(raw: str) -> str | None:
    """E.164 caller number, or None for withheld/anonymous/SIP/client callers."""
    try:
        return _e164(raw) if raw.startswith("+") else None
    except ValueError:
        return None


def spoken(promise: Promise) -> str:
    """The promise as the caller hears it: the callback service stores this same sentence."""
    return f"{promise.sentence()} Goodbye."


def closed_text(ctx: IntakeContext, site: str, now: datetime) -> str:
    cal = ctx.calendar(site)
    try:
        opens = cal.next_open(now).astimezone(cal.tz)
    except ValueError:
        return "We are closed at the moment. Goodbye."
    return f"We are closed at the moment. We open again on {opens:%A} at {opens:%H:%M}. Goodbye."


async def read_call(ctx: IntakeContext, request: Request) -> tuple[bytes, TwilioCall]:
    require_media_type(request, FORM)
    ctx.rate_limits.client(request, Family.WEBHOOK)
    body = await read_body(request, ctx.settings.max_body_bytes)
    params = parse_form(body)
    ctx.check_twilio_signature(request, params, len(body))
    ctx.rate_limits.source(Family.WEBHOOK, ctx.settings.twilio_source)
    first: dict[str, str] = {}
    for name, value in params:
        first.setdefault(name, value)
    return body, validate(TwilioCall, first)


def absolute(ctx: IntakeContext, request: Request, path: str) -> str:
    """An absolute URL of ours as Twilio must call it (so its signature matches on the way back)."""
    here = public_url(request, ctx.settings.public_base_url, ctx.settings.trust_forwarded_headers)
    base = here.split("/v1/", 1)[0]
    return base + path


def twiml_response(text: str, status_code: int = 200) -> Response:
    return Response(text, status_code=status_code, media_type=twiml.TWIML_MEDIA_TYPE)


def replay_twiml(result: Result) -> Response:
    return Response(result.stored.response, status_code=result.stored.status_code, media_type=result.stored.media_type)


def callback_event(
    ctx: IntakeContext,
    call: TwilioCall,
    *,
    site: str,
    phone: str,
    tz_name: str | None,
    promise: Promise,
    intent: Intent | None,
    origin: CallbackOrigin,
    reason: str,
    now: datetime,
) -> tuple[CallbackRequested, str]:
    """The callback promise for a caller: the event and the TwiML that tells them, from one value."""
    source = ctx.settings.twilio_source
    event = CallbackRequested(
        tenant_id=ctx.tenant_id,
        request_id=deterministic_id("callback-request", ctx.tenant_id, source, call.call_sid),
        customer=Customer(id=f"tel:{phone}", phone=phone, timezone=tz_name),
        site=site,
        origin=origin,
        contact_id=contact_id_for(ctx.tenant_id, source, call.call_sid),
        intent=intent,
        channel=Channel.VOICE,
        reason=reason,
        virtual_start_time=now,  # keeps the caller's place in line
        requested_at=now,
        promised_deadline=promise.deadline,
        promise_text=promise.sentence(),
    )
    return event, twiml.say_and_hang_up(spoken(promise), voice=ctx.voice)


NO_CALLBACK_QUEUED = (
    "We cannot call you back at a time that suits you in the next days, so we are keeping your place in line instead."
)


@router.post(
    "/voice",
    summary="Twilio voice webhook (incoming call / menu choice): answers TwiML",
    description=(
        "Form-encoded with Twilio's parameter names, verified with `X-Twilio-Signature`. Answers TwiML "
        "(`text/xml`): the menu, a hold in the site's queue (`contact.requested`), or a callback promise "
        "(`callback.requested`). Idempotent per `CallSid`."
    ),
    response_class=Response,
    responses={
        **TWIML_OK,
        **error_responses(400, 401, 413, 415, 422, 503),
    },
    openapi_extra=body_schema((FORM, "TwilioCall")),
)
async def twilio_voice(request: Request) -> Response:
    begin(request, "twilio_voice")
    ctx = context(request)
    body, call = await read_call(ctx, request)
    source = ctx.settings.twilio_source
    site = ctx.settings.twilio_sites.get(call.to, ctx.settings.default_site)
    now = ctx.clock()
    cal = ctx.calendar(site)
    is_open = cal.is_open(now)
    ivr_step = request.query_params.get("ivr")
    if ctx.settings.twilio_gather and is_open and call.digits is None and ivr_step is None:
        voice_url = absolute(ctx, request, VOICE_PATH)
        return twiml_response(
            twiml.gather_menu(
                ctx.settings.twilio_menu_prompt,
                action_url=f"{voice_url}?ivr=menu",
                no_input_url=f"{voice_url}?ivr=none",
                voice=ctx.voice,
            )
        )

    phone = caller_phone(call.from_)
    rules = ctx.settings.rules
    selections = [call.digits] if call.digits else []
    wants_callback = rules.wants_callback(selections)
    if not is_open and phone is None:
        return twiml_response(twiml.say_and_hang_up(closed_text(ctx, site, now), voice=ctx.voice))
    tz_name = timezone_for(None, phone)  # what enrich() derives for the caller, before the decision
    promise = ctx.promise(site, now, tz_name) if phone is not None and (wants_callback or not is_open) else None
    if isinstance(promise, NoPromise):
        if not is_open:
            # Closed, and no callback we could keep within the bound: say when we are open instead.
            return twiml_response(twiml.say_and_hang_up(closed_text(ctx, site, now), voice=ctx.voice))
        wants_callback = False  # open: the caller keeps a place in line rather than a promise we would break

    def prepare() -> Prepared:
        e = enrich(
            rules,
            now=now,
            channel=Channel.VOICE,
            intent=None,
            ivr_selections=[] if wants_callback else selections,
            summary=None,
            customer_timezone=None,
            phone_e164=phone,
            site_hours=cal,
        )
        if phone is not None and isinstance(promise, Promise) and (wants_callback or not is_open):
            event, text = callback_event(
                ctx,
                call,
                site=site,
                phone=phone,
                tz_name=e.customer_timezone,
                promise=promise,
                intent=e.intent,
                origin=CallbackOrigin.CUSTOMER_REQUEST if wants_callback else CallbackOrigin.ROUTER_POLICY,
                reason="ivr_callback_digit" if wants_callback else "outside_business_hours",
                now=now,
            )
            return Prepared(event, event.request_id, site, 200, twiml.TWIML_MEDIA_TYPE, text)
        contact_id = contact_id_for(ctx.tenant_id, source, call.call_sid)
        event_c = ContactRequested(
            tenant_id=ctx.tenant_id,
            contact_id=contact_id,
            site=site,
            source=source,
            external_id=call.call_sid,
            channel=Channel.VOICE,
            customer=Customer(
                id=f"tel:{phone}" if phone else f"anonymous:{call.call_sid}", phone=phone, timezone=e.customer_timezone
            ),
            intent=e.intent,
            ivr_selections=selections,
            callback_requested=wants_callback,  # asked, but we cannot call a withheld number back
            expected_handling_seconds=e.expected_handling_seconds,
            customer_local_time=e.customer_local_time,
            within_business_hours=e.within_business_hours,
            received_at=now,
        )
        hold = ctx.settings.twilio_hold_message
        if isinstance(promise, NoPromise):
            hold = f"{NO_CALLBACK_QUEUED} {hold}"
        text = twiml.enqueue(
            hold,
            queue=f"{ctx.settings.twilio_queue_prefix}-{site}",
            action_url=absolute(ctx, request, QUEUE_RESULT_PATH),
            wait_url=ctx.settings.twilio_wait_url,
            voice=ctx.voice,
        )
        return Prepared(event_c, contact_id, site, 200, twiml.TWIML_MEDIA_TYPE, text)

    keys = [ctx.key(Scope.EXTERNAL, source, call.call_sid)]
    return replay_twiml(await ctx.service.submit("twilio_voice", keys, fingerprint(body), prepare))


@router.post(
    "/status",
    operation_id="twilio_status_callback",
    summary="Twilio status callback (same handling as /queue-result)",
    description="For a StatusCallback URL configured on the number: `QueueResult=hangup` -> `contact.abandoned`.",
    response_class=Response,
    responses=TWIML_RESPONSES,
    openapi_extra=body_schema((FORM, "TwilioCall")),
)
@router.post(
    "/queue-result",
    operation_id="twilio_queue_result",
    summary="Twilio <Enqueue action> / status callback: the caller left the queue",
    description=(
        "`QueueResult=hangup` publishes `contact.abandoned` (once per call). A failed queue "
        "(`queue-full`, `error`, `system-error`) turns the waiting caller into a callback. Anything else "
        "(plain `CallStatus` callbacks, `bridged`...) is acknowledged with empty TwiML."
    ),
    response_class=Response,
    responses={
        **TWIML_OK,
        **error_responses(400, 401, 413, 415, 422, 503),
    },
    openapi_extra=body_schema((FORM, "TwilioCall")),
)
async def twilio_queue_result(request: Request) -> Response:
    begin(request, "twilio_queue_result")
    ctx = context(request)
    body, call = await read_call(ctx, request)
    source = ctx.settings.twilio_source
    contact_id = contact_id_for(ctx.tenant_id, source, call.call_sid)
    result = (call.queue_result or "").lower()
    if result != "hangup" and result not in QUEUE_FAILURES:
        return twiml_response(twiml.empty())
    known = await ctx.service.lookup([ctx.key(Scope.EXTERNAL, source, call.call_sid)])
    if known is None or known.resource_id != contact_id:
        return twiml_response(twiml.empty())  # not a call we queued: nothing to abandon
    now = ctx.clock()

    if result == "hangup":

        def abandoned() -> Prepared:
            event = ContactAbandoned(
                tenant_id=ctx.tenant_id, contact_id=contact_id, site=known.site, reason="caller_hung_up", at=now
            )
            return Prepared(event, contact_id, known.site, 200, twiml.TWIML_MEDIA_TYPE, twiml.empty())

        keys = [ctx.key(Scope.ABANDON, source, call.call_sid)]
        return replay_twiml(await ctx.service.submit("twilio_queue_result", keys, fingerprint(body), abandoned))

    phone = caller_phone(call.from_)
    if phone is None:
        text = "We are sorry, we cannot take your call right now. Please call again later. Goodbye."
        return twiml_response(twiml.say_and_hang_up(text, voice=ctx.voice))

    tz_name = timezone_for(None, phone)
    promise = ctx.promise(known.site, now, tz_name)
    if isinstance(promise, NoPromise):
        text = f"We are sorry, we cannot take your call right now. {promise.sentence()} Goodbye."
        return twiml_response(twiml.say_and_hang_up(text, voice=ctx.voice))

    def fallback() -> Prepared:
        assert isinstance(promise, Promise)
        event, text = callback_event(
            ctx,
            call,
            site=known.site,
            phone=phone,
            tz_name=tz_name,
            promise=promise,
            intent=None,
            origin=CallbackOrigin.ROUTER_POLICY,
            reason=f"queue_{result}",
            now=now,
        )
        return Prepared(event, event.request_id, known.site, 200, twiml.TWIML_MEDIA_TYPE, text)

    keys = [ctx.key(Scope.QUEUE_FALLBACK, source, call.call_sid)]
    return replay_twiml(await ctx.service.submit("twilio_queue_result", keys, fingerprint(body), fallback))
