"""The website's "call me back today" form."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from fastapi import APIRouter, Request, Response

from services.intake.api.common import (
    JSON_MEDIA,
    RequestOnlyRoute,
    begin,
    body_schema,
    error_responses,
    replay_json,
)
from services.intake.context import context
from services.intake.edge import (
    FORM,
    fingerprint,
    idempotency_key,
    parse_form,
    parse_json,
    read_body,
    require_media_type,
    validate,
)
from services.intake.rate_limits import Family
from services.intake.rules import timezone_for
from services.intake.schemas import CallbackRequestAccepted, CallbackRequestIn
from services.intake.service import Prepared
from services.intake.store import Scope
from shared.business_hours import Deadline
from shared.events import CallbackOrigin, CallbackRequested, Channel, Customer, TimeWindow, deterministic_id

router = APIRouter(prefix="/v1", tags=["callbacks"], route_class=RequestOnlyRoute)


def form_fields(body: bytes) -> dict[str, Any]:
    """An HTML form's fields; empty inputs mean "not given", the first of repeated names wins."""
    out: dict[str, Any] = {}
    for name, value in parse_form(body):
        if value.strip() and name not in out:
            out[name] = value
    return out


@router.post(
    "/callback-requests",
    status_code=202,
    response_model=CallbackRequestAccepted,
    summary="Web form: call me back today",
    description=(
        "JSON or `application/x-www-form-urlencoded`. Publishes `callback.requested` (origin `web_form`) "
        "and answers 202 once it is durable, with the time we expect to call by (the site's calendar and "
        "the customer's clock). Idempotent per `external_id`, `Idempotency-Key`, or else identical "
        "content on the same day."
    ),
    responses=error_responses(400, 401, 413, 415, 422, 503),
    openapi_extra=body_schema((JSON_MEDIA, "CallbackRequestIn"), (FORM, "CallbackRequestIn")),
)
async def post_callback_request(request: Request) -> Response:
    begin(request, "callback_requests")
    ctx = context(request)
    mt = require_media_type(request, JSON_MEDIA, FORM)
    ctx.rate_limits.client(request, Family.WEB_FORM)
    body = await read_body(request, ctx.settings.max_body_bytes)
    data = form_fields(body) if mt == FORM else parse_json(body)
    claimed = data.get("source") if isinstance(data, dict) else None
    # Browsers cannot sign: a source is verified only when a secret is configured for it.
    ctx.check_generic_signature(
        request, claimed if isinstance(claimed, str) else "web", body, required_without_secret=False
    )
    form: CallbackRequestIn = validate(CallbackRequestIn, data)
    ctx.rate_limits.source(Family.WEB_FORM, form.source)
    ctx.rate_limits.phone(Family.WEB_FORM, form.phone)
    now = ctx.clock()
    site = form.site or ctx.settings.default_site
    tz_name = timezone_for(form.timezone, form.phone)

    idem = idempotency_key(request)
    if form.external_id is not None:
        primary = ctx.key(Scope.EXTERNAL, form.source, form.external_id)
    elif idem is not None:
        primary = ctx.key(Scope.IDEMPOTENCY_KEY, form.source, idem)
    else:
        # No id at all: the same content submitted again on the customer's same day is the same request.
        local_day = now.astimezone(ctx.calendar(site).tz).date().isoformat()
        canonical = json.dumps(form.model_dump(mode="json"), sort_keys=True) + local_day
        primary = ctx.key(Scope.CONTENT, form.source, hashlib.sha256(canonical.encode()).hexdigest())
    keys = [primary]
    if idem is not None and primary.scope != Scope.IDEMPOTENCY_KEY:
        keys.insert(0, ctx.key(Scope.IDEMPOTENCY_KEY, form.source, idem))

    def prepare() -> Prepared:
        request_id = deterministic_id("callback-request", ctx.tenant_id, form.source, primary.scope, primary.key)
        try:
            deadline: Deadline | None = ctx.calendar(site).same_day_deadline(
                now, ctx.settings.callback_cutoff_minutes, customer_tz=tz_name
            )
        except ValueError:
            deadline = None
        window = (
            TimeWindow(start=form.window_start, end=form.window_end)
            if form.window_start is not None and form.window_end is not None
            else None
        )
        event = CallbackRequested(
            tenant_id=ctx.tenant_id,
            request_id=request_id,
            customer=Customer(
                id=form.customer_id or f"tel:{form.phone}",
                phone=form.phone,
                name=form.name,
                language=form.language,
                timezone=tz_name,
            ),
            site=site,
            origin=CallbackOrigin.WEB_FORM,
            intent=form.intent or ctx.settings.rules.intent_from_text(form.message),
            channel=Channel.VOICE,
            preferred_window=window,
            reason=(form.message or "web_form")[:1000],
            virtual_start_time=now,
            requested_at=now,
        )
        answer = CallbackRequestAccepted(
            request_id=request_id,
            duplicate=False,
            expected_by=deadline.deadline if deadline else None,
            next_business_day=deadline.next_business_day if deadline else None,
        )
        return Prepared(event, request_id, site, 202, JSON_MEDIA, answer.model_dump_json())

    result = await ctx.service.submit("callback_requests", keys, fingerprint(body), prepare)
    return replay_json(result)
