"""Serve a request here, or proxy it to the router instance that owns its routing domain.

Several routers are active at once, each owning some routing domains; an agent's client (REST calls and
its long-lived SSE stream) reaches whichever instance the Service or load balancer picks. An instance that
does not own the domain proxies the request to the owner instead of redirecting: a redirect to a pod
address breaks behind a Service or ingress, and clients drop ``Authorization`` on cross-origin redirects.

:class:`DomainForwarding` is a plain ASGI middleware (like ``standby.py``): a local request costs one call
of the resolver and, for requests with a body, a buffered replay of that (small) body. Install it inside
the body-size guard (``shared/http_limits.py``), so what it buffers is bounded, and outside the standby
guard (a standby still forwards to the owner).

A forwarded request makes one hop at most: the proxy marks it with ``x-switchboard-forwarded-by``, and an
instance that would forward a marked request again answers 503 instead (ownership moved while the request
travelled; the client retries and lands right). The response streams back chunk by chunk as it arrives,
so an agent stream flows event by event; a client that goes away closes the upstream stream at once.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
from collections.abc import Awaitable, Callable
from http.cookiejar import CookieJar, DefaultCookiePolicy

import anyio
import httpx
import structlog
from starlette.types import ASGIApp, Receive, Scope, Send

from services.router import metrics
from shared.http_limits import replay_body

log = structlog.get_logger(__name__)

Resolve = Callable[[Scope, bytes], Awaitable[str | None]]
"""``resolve(scope, body)``: ``None`` to serve the request here, else the base URL of the owner."""

FORWARDED_BY = b"x-switchboard-forwarded-by"
LOOP_DETAIL = "the owner of this routing domain moved; retry"
RETRY_AFTER = b"2"

# Hop-by-hop headers (RFC 9110 7.6.1) and those the proxy sets itself: never copied to the other side.
# Content-length of a request is recomputed from the buffered body; ``expect`` is answered by the buffering.
_REQUEST_DROPPED = frozenset(
    {b"connection", b"keep-alive", b"transfer-encoding", b"te", b"trailer", b"upgrade", b"host", b"content-length"}
    | {b"expect", FORWARDED_BY}
)
# ``date`` and ``server``: this instance's server adds its own, a copy would duplicate them. A response's
# content-length is kept: the raw (still encoded) bytes are relayed unchanged.
_RESPONSE_DROPPED = frozenset(
    {b"connection", b"keep-alive", b"transfer-encoding", b"te", b"trailer", b"upgrade", b"date", b"server"}
)


class ForwardingUnavailable(Exception):
    """Raised by a resolver that cannot tell who owns the request's domain now: the client gets 503 and
    retries (``Retry-After``), rather than a request served by an instance that does not own the state."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class UpstreamLost(Exception):
    """The owner died in the middle of a response with a declared length: raised so that the server aborts
    the connection and the client sees a truncated response, not a complete-looking short one."""


class DomainForwarding:
    """ASGI middleware: requests under ``prefix`` (but not ``exempt``) are resolved; those another instance
    owns are proxied there, the rest pass to ``app`` untouched (their body replayed)."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        prefix: str,
        resolve: Resolve,
        client_factory: Callable[[], httpx.AsyncClient] | None = None,
        exempt: tuple[str, ...] = (),
        instance_id: str | None = None,
        connect_timeout: float = 3.0,
        response_timeout: float = 30.0,
    ) -> None:
        """``response_timeout`` bounds the wait for the owner's response head and, except for event streams
        (which may idle between events), each wait for the next chunk of the body."""
        self.app = app
        self.prefix = prefix
        self.resolve = resolve
        self.client_factory = client_factory or default_client
        self.exempt = exempt
        self.instance_id = (instance_id or f"{socket.gethostname()}-{os.getpid()}").encode()
        self.response_timeout = response_timeout
        # httpx's read timeout stays off: an event stream idles between events; the waits that must be
        # bounded are bounded here (response_timeout) instead.
        self.timeouts = {"connect": connect_timeout, "read": None, "write": connect_timeout, "pool": connect_timeout}
        self._client: httpx.AsyncClient | None = None

    @property
    def client(self) -> httpx.AsyncClient:
        """One pool of connections to the other instances, made on first use (not per request)."""
        if self._client is None:
            self._client = self.client_factory()
        return self._client

    async def aclose(self) -> None:
        """Close the pool (the app's lifespan calls this on shutdown)."""
        if self._client is not None:
            client, self._client = self._client, None
            await client.aclose()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or not path.startswith(self.prefix) or path in self.exempt:
            await self.app(scope, receive, send)
            return
        body: bytes | None = None
        if _has_body(scope):
            body = await _read_body(receive)
            if body is None:  # the client left before sending its body
                return
        try:
            target = await self.resolve(scope, body or b"")
        except ForwardingUnavailable as exc:
            metrics.REQUESTS_FORWARDED.labels("resolver_unavailable").inc()
            await _unavailable(send, exc.detail)
            return
        if target is None:
            await self.app(scope, receive if body is None else replay_body(body, receive), send)
            return
        if any(name == FORWARDED_BY for name, _ in scope.get("headers", ())):
            metrics.REQUESTS_FORWARDED.labels("loop_refused").inc()
            await _unavailable(send, LOOP_DETAIL)
            return
        await self._forward(scope, receive, send, target, body)

    async def _forward(self, scope: Scope, receive: Receive, send: Send, target: str, body: bytes | None) -> None:
        """Proxy to ``target`` while one task watches the client: its disconnect cancels the relay (and so
        closes the upstream request or stream) at once; uvicorn would otherwise swallow writes to a gone
        client and keep the owner's stream open for nobody."""
        request = self._upstream_request(scope, target, body)
        outcome = "client_closed"  # unless the relay ends first
        with anyio.CancelScope() as relay:
            watcher = asyncio.create_task(_cancel_on_disconnect(receive, relay), name="forwarding-disconnect")
            try:
                outcome = await self._relay(request, send)
            finally:
                watcher.cancel()
        metrics.REQUESTS_FORWARDED.labels(outcome).inc()
        if outcome == "upstream_lost_truncated":
            raise UpstreamLost(f"{request.method} {request.url} ended before its declared length")

    def _upstream_request(self, scope: Scope, target: str, body: bytes | None) -> httpx.Request:
        base = httpx.URL(target)
        raw_path: bytes = scope.get("raw_path") or scope["path"].encode()
        query: bytes = scope.get("query_string", b"")
        url = base.copy_with(raw_path=base.raw_path.rstrip(b"/") + raw_path + (b"?" + query if query else b""))
        headers = _request_headers(scope, self.instance_id)
        # Built directly, not with client.build_request: that would add the client's own defaults
        # (user-agent, accept-encoding, cookies) to what the client sent.
        return httpx.Request(scope["method"], url, headers=headers, content=body, extensions={"timeout": self.timeouts})

    async def _relay(self, request: httpx.Request, send: Send) -> str:
        """Send ``request`` upstream and stream its response to ``send``; the outcome, for the metric."""
        try:
            with anyio.fail_after(self.response_timeout):
                response = await self.client.send(request, stream=True, auth=None, follow_redirects=False)
        except TimeoutError:
            log.warning("router.forward_timeout", url=str(request.url))
            await _problem(send, 504, "the owner of this routing domain did not answer in time")
            return "upstream_timeout"
        except httpx.TransportError as exc:  # refused, reset, or closed before the response head
            log.warning("router.forward_unreachable", url=str(request.url), error=type(exc).__name__)
            await _unavailable(send, "the owner of this routing domain is unreachable; retry")
            return "upstream_unavailable"
        try:
            headers = _response_headers(response.headers)
            await send({"type": "http.response.start", "status": response.status_code, "headers": headers})
            # An event stream may idle between events (heartbeats come every few seconds); any other body
            # is expected to keep coming.
            event_stream = response.headers.get("content-type", "").startswith("text/event-stream")
            chunks = response.aiter_raw().__aiter__()
            while True:
                try:
                    if event_stream:
                        chunk = await chunks.__anext__()
                    else:
                        with anyio.fail_after(self.response_timeout):
                            chunk = await chunks.__anext__()
                except StopAsyncIteration:
                    break
                except (httpx.TransportError, TimeoutError) as exc:
                    log.warning("router.forward_lost", url=str(request.url), error=type(exc).__name__)
                    if "content-length" in response.headers:
                        return "upstream_lost_truncated"
                    await send({"type": "http.response.body", "body": b"", "more_body": False})
                    return "upstream_lost"
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            return "proxied"
        finally:
            with anyio.CancelScope(shield=True):  # also when the client left: the connection must close
                await response.aclose()


def default_client() -> httpx.AsyncClient:
    """The pool to the other instances: no cap on connections (each proxied agent stream holds one for as
    long as it lasts), no environment proxies (pod to pod), and no cookie jar (one client serves everyone)."""
    return httpx.AsyncClient(
        limits=httpx.Limits(max_connections=None, max_keepalive_connections=32),
        trust_env=False,
        cookies=CookieJar(policy=DefaultCookiePolicy(allowed_domains=[])),
    )


def _has_body(scope: Scope) -> bool:
    """A declared non-zero length or a chunked body (what ``BodyGuard`` reads too); others have none, and
    their ``receive`` stays untouched for the disconnect notice."""
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            return value.strip() not in (b"0", b"")
        if name == b"transfer-encoding":
            return b"chunked" in value.lower()
    return False


async def _read_body(receive: Receive) -> bytes | None:
    """The whole request body (``None``: the client disconnected first)."""
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


async def _cancel_on_disconnect(receive: Receive, scope: anyio.CancelScope) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass  # an empty body message of a request without body
    scope.cancel()


def _request_headers(scope: Scope, instance_id: bytes) -> list[tuple[bytes, bytes]]:
    """The client's headers minus hop-by-hop ones, plus the loop mark and ``x-forwarded-for``."""
    raw: list[tuple[bytes, bytes]] = scope.get("headers", [])
    dropped = set(_REQUEST_DROPPED)
    chain: list[bytes] = []
    for name, value in raw:
        if name == b"connection":  # the headers it names are hop-by-hop as well
            dropped.update(token.strip().lower() for token in value.split(b","))
        elif name == b"x-forwarded-for":  # several such headers make one list
            chain.append(value)
    forwarded_for = b", ".join(chain)
    headers = [
        (name, value)
        for name, value in raw
        if name not in dropped and not name.startswith(b"proxy-") and name != b"x-forwarded-for"
    ]
    client = scope.get("client")
    if client:
        # uvicorn's proxy-header handling (a trusted peer) already took the client from this very chain:
        # the client is then its last entry, not a new hop to add.
        peer = str(client[0]).encode()
        if not forwarded_for:
            forwarded_for = peer
        elif forwarded_for.rsplit(b",", 1)[-1].strip() != peer:
            forwarded_for += b", " + peer
    if forwarded_for:
        headers.append((b"x-forwarded-for", forwarded_for))
    headers.append((FORWARDED_BY, instance_id))
    return headers


def _response_headers(headers: httpx.Headers) -> list[tuple[bytes, bytes]]:
    """The owner's headers minus hop-by-hop ones (and those its ``connection`` names)."""
    dropped = set(_RESPONSE_DROPPED)
    for value in headers.get_list("connection"):
        dropped.update(token.strip().lower().encode() for token in value.split(","))
    return [
        (name, value)
        for name, value in ((k.lower(), v) for k, v in headers.raw)
        if name not in dropped and not name.startswith(b"proxy-")
    ]


async def _unavailable(send: Send, detail: str) -> None:
    await _problem(send, 503, detail, retry_after=True)


async def _problem(send: Send, status: int, detail: str, *, retry_after: bool = False) -> None:
    body = json.dumps({"detail": detail}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if retry_after:
        headers.append((b"retry-after", RETRY_AFTER))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
