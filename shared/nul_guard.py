"""Reject NUL characters at the HTTP edge, before they reach a database.

PostgreSQL text cannot hold ``\\x00`` (SQLite can), so a NUL in a path, query, JSON or form body would pass
every test on the embedded default and answer 500 in production. This ASGI middleware answers 422 with
the usual field-error shape instead, for every service, whatever the endpoint.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import unquote_to_bytes

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

# A NUL in JSON text can only be the escape \u0000 (a raw NUL is not valid JSON).
_JSON_NUL = (b"\\u0000", b"\x00")


class RejectNulBytes:
    def __init__(self, app: ASGIApp, *, max_scanned_body: int = 1 << 20) -> None:
        self.app = app
        self.max_scanned_body = max_scanned_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("raw_path") or scope.get("path", "").encode()
        if _has_nul_encoded(path):
            await _reject(send, "path")
            return
        if _has_nul_encoded(scope.get("query_string", b"")):
            await _reject(send, "query")
            return
        kind = _body_kind(scope)
        if kind is None:
            await self.app(scope, receive, send)
            return
        # Buffer the body (services' bodies are small; beyond the cap the rest passes unscanned) and replay it.
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                await self.app(scope, _replay([message]), send)
                return
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            more = message.get("more_body", False)
            if size > self.max_scanned_body:
                break
        body = b"".join(chunks)
        if _has_nul(kind, body):
            await _reject(send, "body")
            return
        first = {"type": "http.request", "body": body, "more_body": more}
        # After the body, the server's own messages: a disconnect only when the client really left (a
        # replay that made one up at once cut off anything that waits for it, like a forwarded request).
        await self.app(scope, _replay([first], then=receive), send)


def _has_nul_encoded(raw: bytes) -> bool:
    """A NUL in a URL part, raw or percent-encoded; decoded only when there is a ``%`` (every request
    passes here, and most paths and queries have none)."""
    return b"\x00" in raw or (b"%" in raw and b"\x00" in unquote_to_bytes(raw))


def _body_kind(scope: Scope) -> str | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-type":
            value = value.lower()
            if b"json" in value:
                return "json"
            if b"x-www-form-urlencoded" in value:
                return "form"
    return None


def _has_nul(kind: str, body: bytes) -> bool:
    if kind == "json":
        return any(marker in body for marker in _JSON_NUL)
    return b"\x00" in unquote_to_bytes(body)


def _replay(messages: list[Message], then: Receive | None = None) -> Receive:
    pending = list(messages)

    async def receive() -> Message:
        if pending:
            return pending.pop(0)
        if then is not None:
            return await then()
        return {"type": "http.disconnect"}

    return receive


async def _reject(send: Send, where: str) -> None:
    body = json.dumps(
        {"detail": [{"loc": [where], "msg": "NUL characters (\\u0000) are not allowed", "type": "value_error"}]}
    ).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 422,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})
