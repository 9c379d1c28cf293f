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
from services.intake.schemas import CallbackRequestAccepted, CallbackRequestIn, Problem, ValidationProblem
from services.intake.service import IntakeError, Prepared
from services.intake.store import Scope
from shared.business_hours import Interval, seconds_in
from shared.events import CallbackOrigin, CallbackRequested, Channel, Customer, TimeWindow, deterministic_id
from shared.promise import NoPromise, Promise

router = APIRouter(prefix="/v1", tags=["callbacks"], route_class=RequestOnlyRoute)


def honoured_window(promise: Promise, window: TimeWindow | None) -> tuple[Interval | None, bool]:
    """The preferred window as the promise can honour it (clipped to callable time), as the callback
    service's plan does, so the sentence intake says is the one the callback service stores."""
    if window is None:
        return None, False
    inside = [
        (max(s, window.start), min(e, window.end)) for s, e in promise.windows if e > window.start and s < window.end
    ]
    if seconds_in(inside) <= 0:
        return None, True
    return (inside[0][0], inside[-1][1]), True


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
        "and answers 202 once it is durable, with the time we will call by and the sentence to show the "
        "customer (`promise_text`), the very promise the callback service tracks. 422 for a site nobody "
        "configured, and (`no_callback_possible`) when no callable moment exists within the promise bound: "
        "the answer says when to call instead. Idempotent per `external_id`, `Idempotency-Key`, or else identical "
        "content on the same day."
    ),
    responses={
        **error_responses(400, 401, 413, 415, 422, 503),
        # field errors, or a promise nobody can keep (`reason`: no_callback_possible)
        422: {"description": "Invalid input, or no callback possible", "model": ValidationProblem | Problem},
    },
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
    ctx.require_site(site, ["body", "site"])
    tz_name = timezone_for(form.timezone, form.phone)
    promise = ctx.promise(site, now, tz_name)  # THE promise: the callback service tracks this very value

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

    if isinstance(promise, NoPromise) and await ctx.service.lookup(keys) is None:
        # No callable moment within the bound (e.g. the customer's hours never meet ours): promise
        # nothing we cannot keep, and say when to reach us instead. Nothing is published.
        raise IntakeError(422, "no_callback_possible", promise.sentence())

    def prepare() -> Prepared:
        request_id = deterministic_id("callback-request", ctx.tenant_id, form.source, primary.scope, primary.key)
        window = (
            TimeWindow(start=form.window_start, end=form.window_end)
            if form.window_start is not None and form.window_end is not None
            else None
        )
        kept = promise if isinstance(promise, Promise) else None
        text = kept.sentence(*honoured_window(kept, window)) if kept else None
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
            promised_deadline=kept.deadline if kept else None,
            promise_text=text,
        )
        answer = CallbackRequestAccepted(
            request_id=request_id,
            duplicate=False,
            expected_by=kept.deadline if kept else None,
            next_business_day=kept.next_business_day if kept else None,
            promise_text=text,
        )
        return Prepared(event, request_id, site, 202, JSON_MEDIA, answer.model_dump_json())

    result = await ctx.service.submit("callback_requests", keys, fingerprint(body), prepare)
    return replay_json(result)
