"""Helpers the endpoint modules share: OpenAPI body declarations, error docs, answer replay."""

from __future__ import annotations

import json
from typing import Any

from fastapi import Request, Response

from services.intake import metrics
from services.intake.schemas import Problem
from services.intake.service import Result

JSON_MEDIA = "application/json"


def body_schema(*content: tuple[str, str]) -> dict[str, Any]:
    """``openapi_extra`` documenting a body we read by hand: (media type, component schema name)."""
    return {
        "requestBody": {
            "required": True,
            "content": {mt: {"schema": {"$ref": f"#/components/schemas/{name}"}} for mt, name in content},
        }
    }


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    descriptions = {
        400: "Malformed request framing (e.g. a non-numeric Content-Length)",
        401: "Missing, invalid or expired signature (replay)",
        404: "Unknown contact",
        413: "Body larger than the configured limit",
        415: "Wrong Content-Type",
        422: "Invalid input: field-level messages",
        503: "Event bus or idempotency store unavailable: nothing was accepted, retry after Retry-After",
    }
    out: dict[int | str, dict[str, Any]] = {}
    for code in codes:
        out[code] = {"description": descriptions[code]}
        if code != 422:
            out[code]["model"] = Problem
    return out


def begin(request: Request, endpoint: str) -> None:
    """Label the request for metrics (the error handlers read it back)."""
    request.state.endpoint = endpoint
    metrics.received(endpoint).inc()


def replay_json(result: Result) -> Response:
    """The stored first answer; for a duplicate the same body with ``duplicate: true``."""
    stored = result.stored
    if not result.duplicate:
        return Response(stored.response, status_code=stored.status_code, media_type=stored.media_type)
    body = json.loads(stored.response)
    body["duplicate"] = True
    return Response(json.dumps(body), status_code=stored.status_code, media_type=stored.media_type)
