"""Twilio ``<Dial action>``: how ringing the agent who accepted the call ended.

The connector (services/connector) redirects a queued call to ``<Dial>`` the agent with this URL as the
``action`` (``?agent=<id>``). Twilio posts the outcome here, signed like every Twilio webhook:

* the agent answered (``DialCallStatus`` completed/answered): nothing to publish, the assignment is live
  and the agent completes it with an outcome; the conversation is over when Twilio calls us, so hang up;
* the caller is gone (the parent ``CallStatus`` is no longer in progress): ``contact.agent_dialed``
  ``caller_gone`` -> the router abandons the contact;
* busy / no answer / failed / canceled: ``contact.agent_dialed`` -> the router puts the contact back at
  its place in line and counts a missed offer; the caller goes back into the site's queue to wait.

Idempotent per (CallSid, agent, DialCallSid): Twilio's retries get the same TwiML and publish nothing new.

``/callback-result`` is the same for a callback the connector dials out (agent first, then the customer):
``leg=agent`` is the outbound call's status callback (the agent never answered: ``contact.agent_dialed``,
the callback goes back in line), ``leg=customer`` the ``<Dial action>`` of the customer's leg
(``contact.customer_dialed`` with the attempt result: reached, busy, no answer, wrong number).
"""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from services.intake import twiml
from services.intake.api.common import TWIML_OK, RequestOnlyRoute, begin, body_schema, error_responses
from services.intake.api.twilio import QUEUE_RESULT_PATH, absolute, read_call, replay_twiml, twiml_response
from services.intake.context import context
from services.intake.edge import FORM, fingerprint, parse_form, validate
from services.intake.service import Prepared
from services.intake.store import Scope
from shared.events import (
    AgentDialed,
    AttemptResult,
    CustomerDialed,
    DialResult,
    contact_id_for,
    deterministic_id,
)

router = APIRouter(prefix="/v1/webhooks/twilio", tags=["twilio"], route_class=RequestOnlyRoute)

DIAL_RESULT_PATH = "/v1/webhooks/twilio/dial-result"
ANSWERED = {"completed", "answered"}
CALLER_STILL_THERE = {"in-progress", "ringing", "queued"}
RESULTS = {"busy": DialResult.BUSY, "no-answer": DialResult.NO_ANSWER}  # failed, canceled: FAILED
STILL_TRYING = "We are sorry, the agent could not take your call. Please hold, you keep your place in line."


Id = Annotated[str, Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:@-]*$")]


class DialQuery(BaseModel):
    model_config = ConfigDict(extra="ignore")

    agent: Id


class CallbackDialQuery(BaseModel):
    model_config = ConfigDict(extra="ignore")

    callback: Id  # the router's work item id (= the callback id)
    agent: Id
    site: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")]
    leg: Literal["agent", "customer"]


AGENT_LEG_FAILED = {
    "busy": DialResult.BUSY,
    "no-answer": DialResult.NO_ANSWER,
    "failed": DialResult.FAILED,
    "canceled": DialResult.FAILED,
}
CUSTOMER_RESULT = {
    "completed": AttemptResult.REACHED,
    "answered": AttemptResult.REACHED,
    "busy": AttemptResult.BUSY,
    "no-answer": AttemptResult.NO_ANSWER,
    "canceled": AttemptResult.NO_ANSWER,
    "failed": AttemptResult.WRONG_NUMBER,  # Twilio could not place it: typically a number that does not exist
}


class DialCallback(BaseModel):
    """The ``<Dial action>`` parameters used here (Twilio sends the call's usual ones too)."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    dial_call_status: str = Field(alias="DialCallStatus", min_length=1, max_length=32)
    dial_call_sid: str | None = Field(None, alias="DialCallSid", pattern=r"^[A-Za-z0-9]{0,64}$")
    call_status: str | None = Field(None, alias="CallStatus", max_length=32)


@router.post(
    "/dial-result",
    summary="Twilio <Dial action>: the outcome of ringing the agent who accepted the call",
    description=(
        "Form-encoded, verified with `X-Twilio-Signature`; `?agent=` names the agent that was rung. Busy, "
        "no answer or failed publish `contact.agent_dialed` and put the caller back in the queue; a caller "
        "who left publishes `caller_gone`; an answered dial publishes nothing."
    ),
    response_class=Response,
    responses={**TWIML_OK, **error_responses(401, 415, 422, 503)},
    openapi_extra=body_schema((FORM, "TwilioCall")),
)
async def twilio_dial_result(request: Request) -> Response:
    begin(request, "twilio_dial_result")
    ctx = context(request)
    body, call = await read_call(ctx, request)  # authenticated before anything is validated or said
    query = validate(DialQuery, dict(request.query_params))
    first: dict[str, str] = {}
    for name, value in parse_form(body):
        first.setdefault(name, value)
    dial = validate(DialCallback, first)
    status = dial.dial_call_status.lower()
    if status in ANSWERED:
        return twiml_response(twiml.hang_up())
    source = ctx.settings.twilio_source
    contact_id = contact_id_for(ctx.tenant_id, source, call.call_sid)
    known = await ctx.service.lookup([ctx.key(Scope.EXTERNAL, source, call.call_sid)])
    if known is None or known.resource_id != contact_id:
        return twiml_response(twiml.empty())  # not a call we queued
    gone = (dial.call_status or "in-progress").lower() not in CALLER_STILL_THERE
    result = DialResult.CALLER_GONE if gone else RESULTS.get(status, DialResult.FAILED)
    now = ctx.clock()

    def prepare() -> Prepared:
        event = AgentDialed(
            tenant_id=ctx.tenant_id,
            contact_id=contact_id,
            agent_id=query.agent,
            site=known.site,
            result=result,
            call_ref=call.call_sid,
            detail=f"DialCallStatus={status}",
            at=now,
        )
        if gone:
            text = twiml.empty()
        else:
            text = twiml.enqueue(
                STILL_TRYING,
                queue=f"{ctx.settings.twilio_queue_prefix}-{known.site}",
                action_url=absolute(ctx, request, QUEUE_RESULT_PATH),
                wait_url=ctx.settings.twilio_wait_url,
                voice=ctx.voice,
            )
        resource = deterministic_id("agent-dialed", contact_id, query.agent, dial.dial_call_sid or "")
        return Prepared(event, resource, known.site, 200, twiml.TWIML_MEDIA_TYPE, text)

    keys = [ctx.key(Scope.DIAL_RESULT, source, f"{call.call_sid}/{query.agent}/{dial.dial_call_sid or ''}")]
    return replay_twiml(await ctx.service.submit("twilio_dial_result", keys, fingerprint(body), prepare))


@router.post(
    "/callback-result",
    summary="Twilio: how a callback dialled out for the agent ended (agent leg status, customer leg dial)",
    description=(
        "Form-encoded, verified with `X-Twilio-Signature`; `?callback=&agent=&site=&leg=agent|customer`. "
        "An agent leg that was never answered publishes `contact.agent_dialed` (the callback is requeued); "
        "the customer leg's outcome publishes `contact.customer_dialed` (the attempt's result)."
    ),
    response_class=Response,
    responses={**TWIML_OK, **error_responses(401, 415, 422, 503)},
    openapi_extra=body_schema((FORM, "TwilioCall")),
)
async def twilio_callback_result(request: Request) -> Response:
    begin(request, "twilio_callback_result")
    ctx = context(request)
    body, call = await read_call(ctx, request)
    query = validate(CallbackDialQuery, dict(request.query_params))
    first: dict[str, str] = {}
    for name, value in parse_form(body):
        first.setdefault(name, value)
    now = ctx.clock()
    if query.leg == "agent":
        failed = AGENT_LEG_FAILED.get((call.call_status or "").lower())
        if failed is None:
            return twiml_response(twiml.empty())  # answered (or not final): the customer leg tells the rest
        event: AgentDialed | CustomerDialed = AgentDialed(
            tenant_id=ctx.tenant_id,
            contact_id=query.callback,
            agent_id=query.agent,
            site=query.site,
            result=failed,
            call_ref=call.call_sid,
            detail=f"CallStatus={call.call_status}",
            at=now,
        )
        text = twiml.empty()
    else:
        dial = validate(DialCallback, first)
        status = dial.dial_call_status.lower()
        event = CustomerDialed(
            tenant_id=ctx.tenant_id,
            contact_id=query.callback,
            agent_id=query.agent,
            site=query.site,
            result=CUSTOMER_RESULT.get(status, AttemptResult.NO_ANSWER),
            call_ref=call.call_sid,
            detail=f"DialCallStatus={status}",
            at=now,
        )
        text = twiml.hang_up()

    def prepare() -> Prepared:
        resource = deterministic_id("callback-dialled", call.call_sid, query.leg)
        return Prepared(event, resource, query.site, 200, twiml.TWIML_MEDIA_TYPE, text)

    source = ctx.settings.twilio_source
    keys = [ctx.key(Scope.DIAL_RESULT, source, f"{call.call_sid}/{query.leg}")]
    return replay_twiml(await ctx.service.submit("twilio_callback_result", keys, fingerprint(body), prepare))
