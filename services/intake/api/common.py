"""Helpers the endpoint modules share: OpenAPI body declarations, error docs, answer replay."""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.routing import APIRoute

from services.intake import metrics
from services.intake.schemas import Problem, ValidationProblem
from services.intake.service import Result

JSON_MEDIA = "application/json"


class RequestOnlyRoute(APIRoute):
    """An ``APIRoute`` for endpoints that take only the ``Request`` and return a finished ``Response``.

    FastAPI's generic handler resolves dependencies, reads and validates a body parameter and serialises
    a response model on every call. Intake's endpoints read the raw body themselves (signatures cover
    the exact bytes) and answer pre-serialised bytes, so for them that machinery did nothing but cost
    ~15 us a request. Everything else stays FastAPI's: routing, OpenAPI metadata, exception handlers,
    the body-size limit. Any other endpoint shape gets the generic handler.
    """

    @property
    def takes_request_only(self) -> bool:
        """``async def endpoint(request: Request) -> Response``: the shape this route serves itself."""
        endpoint = self.endpoint
        params = list(inspect.signature(endpoint, eval_str=True).parameters.values())
        return (
            inspect.iscoroutinefunction(endpoint)
            and len(params) == 1
            and params[0].annotation is Request
            and params[0].kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
        )

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        endpoint = self.endpoint
        if not self.takes_request_only:
            return super().get_route_handler()

        async def handler(request: Request) -> Response:
            response: Response = await endpoint(request)
            return response

        return handler


def body_schema(*content: tuple[str, str]) -> dict[str, Any]:
    """``openapi_extra`` documenting a body we read by hand: (media type, component schema name)."""
    return {
        "requestBody": {
            "required": True,
            "content": {mt: {"schema": {"$ref": f"#/components/schemas/{name}"}} for mt, name in content},
        }
    }


# TwiML answers: an XML document Twilio executes (``twiml.py``); declared as such, not as an empty schema.
TWIML_OK: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "TwiML",
        "content": {
            "text/xml": {
                "schema": {
                    "type": "string",
                    "title": "TwiML",
                    "description": "a TwiML document: <Response>...</Response>",
                }
            }
        },
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
        out[code] = {"description": descriptions[code], "model": ValidationProblem if code == 422 else Problem}
    return out


def begin(request: Request, endpoint: str) -> None:
    """Label the request for metrics (the error handlers read it back)."""
    request.state.endpoint = endpoint
    request.scope[metrics.LABELLED] = endpoint  # CountEdgeRejections: counted here, not at the edge
    metrics.received(endpoint).inc()


def replay_json(result: Result) -> Response:
    """The stored first answer; for a duplicate the same body with ``duplicate: true``."""
    stored = result.stored
    if not result.duplicate:
        return Response(stored.response, status_code=stored.status_code, media_type=stored.media_type)
    body = json.loads(stored.response)
    body["duplicate"] = True
    return Response(json.dumps(body), status_code=stored.status_code, media_type=stored.media_type)
