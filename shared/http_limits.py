"""Input limits at the HTTP edge, the same on every service: body size, body sanity, short 422s.

What a hostile or broken client could do without them (issue 13): a 100 MB body accepted and echoed back
in a 210 MB 422 (FastAPI's validation errors carry the whole ``input``); ``1e400`` in JSON parsed as
``inf``, which the 422 renderer cannot encode (500); invalid UTF-8 in a form body (500).

* :class:`BodyGuard` (ASGI middleware): a body larger than ``max_body_bytes`` is refused with ``413``
  before it is buffered (declared ``Content-Length`` first, then counted while streaming); a JSON body
  that is not UTF-8 or holds a non-finite number (``1e400``, ``NaN``, ``Infinity``), or a form body that
  is not UTF-8, is refused with ``422`` in the usual field-error shape before any endpoint sees it.
* :func:`install_validation_errors`: FastAPI's ``422`` without the echo: each error keeps ``loc``,
  ``msg`` and ``type`` and at most a short excerpt of a scalar ``input``.
* :class:`HttpServerSettings`: uvicorn's idle (keep-alive) and header-read timeouts and header size cap,
  applied by ``services/cli.py`` where uvicorn runs.
"""

from __future__ import annotations

import json
import math
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import unquote_to_bytes

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

EXCERPT_CHARS = 64  # what a 422 may quote of a rejected value
DEFAULT_MAX_BODY_BYTES = 256 * 1024


class HttpServerSettings(BaseSettings):
    """``SWITCHBOARD_HTTP_*``: limits of the HTTP server itself, for every service."""

    model_config = SettingsConfigDict(env_prefix="SWITCHBOARD_HTTP_", env_file=".env", extra="ignore")

    max_body_bytes: int = Field(
        DEFAULT_MAX_BODY_BYTES,
        gt=0,
        description="Router and callback: larger request bodies are refused with 413 (intake has its own, "
        "SWITCHBOARD_INTAKE_MAX_BODY_BYTES).",
    )
    keep_alive_timeout_seconds: float = Field(
        5.0, gt=0, description="An idle keep-alive connection is closed after this long."
    )
    header_timeout_seconds: float = Field(
        10.0, gt=0, description="A connection that has not sent a complete request head within this is closed."
    )
    max_header_bytes: int = Field(
        16 * 1024,
        ge=1024,
        description="A request head (request line + headers) still incomplete after this many bytes: 431.",
    )
    graceful_shutdown_seconds: float = Field(
        10.0,
        ge=0,
        description="On SIGTERM the server stops accepting, lets requests in flight finish for at most this long "
        "(open agent streams are closed), then the service stops consuming and flushes its outbox. Keep the "
        "orchestrator's grace period (Kubernetes terminationGracePeriodSeconds) above this plus that drain.",
    )


# ------------------------------------------------------------------------------------------ body guard


class _TooLarge(Exception):
    pass


class BodyGuard:
    """413 for bodies over the limit; 422 for JSON/form bodies no parser downstream handles safely.

    Only requests that carry a body are touched (a declared ``Content-Length`` > 0 or chunked transfer),
    so streaming GETs (server-sent events) keep their own ``receive`` for the disconnect notice.
    """

    def __init__(self, app: ASGIApp, *, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared: bytes | None = None
        chunked = False
        content_type = b""
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                declared = value
            elif name == b"transfer-encoding":
                chunked = b"chunked" in value.lower()
            elif name == b"content-type":
                content_type = value.lower()
        if declared is not None:
            if not declared.strip().isdigit():
                await _problem(send, 400, "Content-Length is not a number")
                return
            if int(declared) > self.max_body_bytes:
                await _too_large(send, self.max_body_bytes)
                return
            if int(declared) == 0 and not chunked:
                await self.app(scope, receive, send)
                return
        elif not chunked:
            await self.app(scope, receive, send)
            return
        try:
            body = await self._read(receive)
        except _TooLarge:
            await _too_large(send, self.max_body_bytes)
            return
        except _Disconnected:
            return
        error = body_error(content_type, body)
        if error is not None:
            await _invalid(send, *error)
            return
        await self.app(scope, replay_body(body, receive), send)

    async def _read(self, receive: Receive) -> bytes:
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise _Disconnected
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                raise _TooLarge
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)


class _Disconnected(Exception):
    pass


def _reject_constant(name: str) -> Any:
    raise _NonFinite(name)


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _NonFinite(text[:EXCERPT_CHARS])
    return value


class _NonFinite(ValueError):
    pass


def body_error(content_type: bytes, body: bytes) -> tuple[str, str] | None:
    """``(msg, type)`` when the body must be refused before the app parses it, else ``None``.

    Malformed JSON is left to the framework (it answers its own 422); only what it mishandles is caught.
    """
    if b"json" in content_type:
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            return "JSON body is not valid UTF-8", "json_invalid"
        try:
            json.loads(text, parse_constant=_reject_constant, parse_float=_finite_float)
        except _NonFinite as exc:
            return f"numbers must be finite (got {exc})", "finite_number"
        except RecursionError:
            return "JSON nested too deeply", "json_invalid"
        except ValueError:
            return None  # malformed JSON, or an integer beyond Python's digit limit: the framework answers 4xx
        return None
    if b"x-www-form-urlencoded" in content_type:
        try:
            unquote_to_bytes(body.replace(b"+", b" ")).decode("utf-8")
        except UnicodeDecodeError:
            return "form body is not valid UTF-8", "form_invalid"
    return None


def replay_body(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that gives the app a body already read, then the server's own messages: for a
    middleware that had to read the body first (size limits here, the router's request forwarding)."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()  # after the body: the server's own messages (disconnect)

    return replay


async def _send_json(send: Send, status: int, payload: Any) -> None:
    body = json.dumps(payload).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def _problem(send: Send, status: int, detail: str) -> None:
    await _send_json(send, status, {"detail": detail})


async def _too_large(send: Send, limit: int) -> None:
    await _problem(send, 413, f"body larger than {limit} bytes")


async def _invalid(send: Send, msg: str, type_: str) -> None:
    await _send_json(send, 422, {"detail": [{"loc": ["body"], "msg": msg, "type": type_}]})


# ------------------------------------------------------------------------------------ validation errors


def excerpt(value: Any) -> Any:
    """A short, JSON-safe quote of a rejected scalar; containers are not echoed at all."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value if abs(value) < 10**18 else None
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if isinstance(value, str):
        return value if len(value) <= EXCERPT_CHARS else value[:EXCERPT_CHARS] + "..."
    return None


def trimmed_errors(errors: Any) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for err in errors:
        item: dict[str, Any] = {
            "loc": [p if isinstance(p, int | str) else str(p) for p in err.get("loc", ())],
            "msg": str(err.get("msg", ""))[:500],
            "type": str(err.get("type", "")),
        }
        quoted = excerpt(err.get("input"))
        if quoted is not None:
            item["input"] = quoted
        out.append(item)
    return out


async def _validation_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return JSONResponse({"detail": trimmed_errors(exc.errors())}, status_code=422)


def install_validation_errors(app: FastAPI) -> None:
    """FastAPI's 422 for request validation, without echoing the request beyond a short excerpt."""
    app.add_exception_handler(RequestValidationError, _validation_error)


def install_input_limits(app: FastAPI, max_body_bytes: int) -> None:
    """The body guard and the trimmed 422s on ``app`` (router, callback: their bodies go through FastAPI)."""
    app.add_middleware(BodyGuard, max_body_bytes=max_body_bytes)
    install_validation_errors(app)
