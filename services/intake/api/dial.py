"""Generic dial outcome webhook: any PBX reports how ringing the accepting agent ended.

The PBX counterpart of the Twilio ``<Dial action>`` (:mod:`.twilio_dial`): a telephone system that
bridges calls itself (from the connector's signed ``offer.accepted`` webhook) tells Switchboard when the
agent's phone was busy, not answered, failed, or the caller left, so the router can requeue or abandon.
Signed like every generic webhook (``X-Switchboard-Signature``, the source's secret).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, Field

from services.intake.api.common import JSON_MEDIA, RequestOnlyRoute, begin, body_schema, error_responses, replay_json
from services.intake.api.contacts import read_signed
from services.intake.context import context
from services.intake.edge import fingerprint
from services.intake.schemas import ExternalId, Source, _Strict
from services.intake.service import IntakeError, Prepared
from services.intake.store import Scope
from shared.events import AgentDialed, DialResult, contact_id_for, deterministic_id

router = APIRouter(prefix="/v1", tags=["contacts"], route_class=RequestOnlyRoute)

AgentId = Annotated[str, Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:@-]*$")]


class DialResultIn(_Strict):
    """How ringing the agent for a queued contact ended (``POST /v1/contacts/dial-result``)."""

    source: Source
    external_id: ExternalId
    agent_id: AgentId
    result: DialResult
    attempt_id: Annotated[str, Field(min_length=1, max_length=100)] | None = Field(
        None, description="The PBX's id of this dial attempt (its agent leg): one outcome per attempt"
    )
    detail: Annotated[str, Field(max_length=300)] | None = None


class DialResultAccepted(BaseModel):
    contact_id: str
    duplicate: bool


@router.post(
    "/contacts/dial-result",
    status_code=202,
    response_model=DialResultAccepted,
    summary="How ringing the accepting agent ended (generic PBX webhook)",
    description=(
        "Publishes `contact.agent_dialed`: busy / no_answer / failed put the contact back at its place in "
        "line with a missed offer for the agent, not_connected without one, caller_gone abandons it, "
        "answered is recorded. Idempotent per (source, external_id, agent_id, attempt_id)."
    ),
    responses=error_responses(400, 401, 404, 413, 415, 422, 503),
    openapi_extra=body_schema((JSON_MEDIA, "DialResultIn")),
)
async def post_dial_result(request: Request) -> Response:
    begin(request, "dial_result")
    ctx = context(request)
    body, notice = await read_signed(ctx, request, DialResultIn, required_without_secret=True)
    contact_id = contact_id_for(ctx.tenant_id, notice.source, notice.external_id)
    known = await ctx.service.lookup([ctx.key(Scope.EXTERNAL, notice.source, notice.external_id)])
    if known is None or known.resource_id != contact_id:
        raise IntakeError(404, "unknown_contact", "no queued contact with this source and external_id")

    attempt = notice.attempt_id or notice.result.value

    def prepare() -> Prepared:
        event = AgentDialed(
            tenant_id=ctx.tenant_id,
            contact_id=contact_id,
            agent_id=notice.agent_id,
            site=known.site,
            result=notice.result,
            call_ref=notice.external_id[:100],
            detail=notice.detail,
            at=ctx.clock(),
        )
        answer = DialResultAccepted(contact_id=contact_id, duplicate=False)
        # The event id derives from it: one per attempt, so a second attempt is not taken for a duplicate.
        resource = deterministic_id("agent-dialed", contact_id, notice.agent_id, attempt)
        return Prepared(event, resource, known.site, 202, JSON_MEDIA, answer.model_dump_json())

    keys = [ctx.key(Scope.DIAL_RESULT, notice.source, f"{notice.external_id}/{notice.agent_id}/{attempt}")]
    result = await ctx.service.submit("dial_result", keys, fingerprint(body), prepare)
    return replay_json(result)
