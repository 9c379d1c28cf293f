"""Generic JSON webhooks: a new contact, and a contact abandoned while it waited."""

from __future__ import annotations

from typing import Any, TypeVar, cast

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, ValidationError

from services.intake.api.common import (
    JSON_MEDIA,
    RequestOnlyRoute,
    begin,
    body_schema,
    error_responses,
    replay_json,
)
from services.intake.context import IntakeContext, context
from services.intake.edge import (
    fingerprint,
    idempotency_key,
    parse_json,
    read_body,
    require_media_type,
    validate,
)
from services.intake.rate_limits import Family
from services.intake.rules import enrich
from services.intake.schemas import AbandonAccepted, AbandonIn, ContactAccepted, ContactIn
from services.intake.service import IntakeError, Prepared
from services.intake.signatures import SOURCE_HEADER, SignatureFailure
from services.intake.store import Scope
from shared.events import ContactAbandoned, ContactRequested, contact_id_for

router = APIRouter(prefix="/v1", tags=["contacts"], route_class=RequestOnlyRoute)
M = TypeVar("M", bound=BaseModel)


async def read_signed(
    ctx: IntakeContext, request: Request, model: type[M], *, required_without_secret: bool
) -> tuple[bytes, M]:
    """Body bytes and the validated model, signature checked for the sending source.

    The source is named by ``X-Switchboard-Source`` (checked before parsing anything) or, failing that,
    by the body's ``source`` field. Both present and different: refused, a source signs only for itself.
    A body that does not validate is still authenticated first when it names a source with a secret,
    so an unauthenticated sender learns nothing from field-level errors.
    """
    require_media_type(request, JSON_MEDIA)
    ctx.rate_limits.client(request, Family.WEBHOOK)
    body = await read_body(request, ctx.settings.max_body_bytes)
    header_source = request.headers.get(SOURCE_HEADER)
    if header_source is not None:
        ctx.check_generic_signature(request, header_source, body, required_without_secret=required_without_secret)
    try:
        parsed = model.model_validate_json(body)  # the common case: JSON parsed and validated in one pass
    except ValidationError:
        parsed = None
    data: Any = parsed if parsed is not None else parse_json(body)
    body_source = (
        getattr(data, "source", None)
        if parsed is not None
        else (data.get("source") if isinstance(data, dict) else None)
    )
    if header_source is None:
        if isinstance(body_source, str):
            ctx.check_generic_signature(request, body_source, body, required_without_secret=required_without_secret)
        elif required_without_secret and ctx.signatures_required:
            raise ctx.reject_signature(request, "?", SignatureFailure.UNKNOWN_SOURCE, len(body))
    elif body_source is not None and body_source != header_source:
        raise ctx.reject_signature(request, header_source, SignatureFailure.MISMATCH, len(body))
    if parsed is None:
        validate(model, data)  # raises the field-level 422
    ctx.rate_limits.source(Family.WEBHOOK, header_source if header_source is not None else str(body_source))
    return body, cast(M, parsed)


@router.post(
    "/contacts",
    status_code=202,
    response_model=ContactAccepted,
    summary="A contact from a telephony/chat system (generic JSON webhook)",
    description=(
        "Answers 202 once `contact.requested` is durably on the bus. The same (source, external_id) or "
        "`Idempotency-Key` again returns the first answer with `duplicate: true` and publishes nothing. "
        "Signed webhooks carry `X-Switchboard-Timestamp` and "
        "`X-Switchboard-Signature: v1=hex(HMAC-SHA256(secret, timestamp + '.' + body))`."
    ),
    responses=error_responses(400, 401, 413, 415, 422, 503),
    openapi_extra=body_schema((JSON_MEDIA, "ContactIn")),
)
async def post_contact(request: Request) -> Response:
    begin(request, "contacts")
    ctx = context(request)
    body, contact = await read_signed(ctx, request, ContactIn, required_without_secret=True)
    ctx.require_site(contact.site or ctx.settings.default_site, ["body", "site"])
    idem = idempotency_key(request)
    keys = [ctx.key(Scope.EXTERNAL, contact.source, contact.external_id)]
    if idem is not None:
        keys.insert(0, ctx.key(Scope.IDEMPOTENCY_KEY, contact.source, idem))

    def prepare() -> Prepared:
        now = ctx.clock()
        site = contact.site or ctx.settings.default_site
        e = enrich(
            ctx.settings.rules,
            now=now,
            channel=contact.channel,
            intent=contact.intent,
            ivr_selections=contact.ivr_selections,
            summary=contact.summary,
            customer_timezone=contact.customer.timezone,
            phone_e164=contact.customer.phone,
            site_hours=ctx.hours(site),
        )
        contact_id = contact_id_for(ctx.tenant_id, contact.source, contact.external_id)
        c = contact.customer
        window = contact.preferred_window
        # Validated from plain values by pydantic-core in one call: cheaper than model_construct's
        # Python loop over the fields, and the contract is checked too.
        event = ContactRequested.model_validate(
            {
                "tenant_id": ctx.tenant_id,
                "contact_id": contact_id,
                "site": site,
                "source": contact.source,
                "external_id": contact.external_id,
                "channel": contact.channel,
                "customer": {
                    "id": c.id,
                    "phone": c.phone,
                    "name": c.name,
                    "tier": c.tier,
                    "language": c.language,
                    "timezone": e.customer_timezone,
                },
                "intent": e.intent,
                "summary": contact.summary,
                "ivr_selections": contact.ivr_selections,
                "callback_requested": contact.callback_requested,
                "preferred_window": {"start": window.start, "end": window.end} if window else None,
                "expected_handling_seconds": e.expected_handling_seconds,
                "customer_local_time": e.customer_local_time,
                "within_business_hours": e.within_business_hours,
                "received_at": now,
            }
        )
        answer = ContactAccepted(
            contact_id=contact_id,
            duplicate=False,
            intent=e.intent,
            expected_handling_seconds=e.expected_handling_seconds,
            within_business_hours=e.within_business_hours,
        )
        return Prepared(event, contact_id, site, 202, JSON_MEDIA, answer.model_dump_json())

    result = await ctx.service.submit("contacts", keys, fingerprint(body), prepare)
    return replay_json(result)


@router.post(
    "/contacts/abandoned",
    status_code=202,
    response_model=AbandonAccepted,
    summary="The caller hung up while queued (generic abandon webhook)",
    description="Publishes `contact.abandoned` for a contact intake accepted before; idempotent per contact.",
    responses=error_responses(400, 401, 404, 413, 415, 422, 503),
    openapi_extra=body_schema((JSON_MEDIA, "AbandonIn")),
)
async def post_abandoned(request: Request) -> Response:
    begin(request, "abandon")
    ctx = context(request)
    body, notice = await read_signed(ctx, request, AbandonIn, required_without_secret=True)
    contact_id = contact_id_for(ctx.tenant_id, notice.source, notice.external_id)
    known = await ctx.service.lookup([ctx.key(Scope.EXTERNAL, notice.source, notice.external_id)])
    if known is None or known.resource_id != contact_id:
        # Never accepted as a queued contact (or it became a callback): nothing waits to be abandoned.
        raise IntakeError(404, "unknown_contact", "no queued contact with this source and external_id")

    def prepare() -> Prepared:
        event = ContactAbandoned(
            tenant_id=ctx.tenant_id, contact_id=contact_id, site=known.site, reason=notice.reason, at=ctx.clock()
        )
        answer = AbandonAccepted(contact_id=contact_id, duplicate=False)
        return Prepared(event, contact_id, known.site, 202, JSON_MEDIA, answer.model_dump_json())

    keys = [ctx.key(Scope.ABANDON, notice.source, notice.external_id)]
    result = await ctx.service.submit("abandon", keys, fingerprint(body), prepare)
    return replay_json(result)
