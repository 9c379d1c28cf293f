"""DomainForwarding between two real uvicorn servers: a "front" instance that owns nothing under
``/v1/remote...`` and proxies it to the "owner", which echoes what it received and streams events.

Real servers, not ASGI transports: the properties that matter (an SSE stream flowing event by event
through the proxy, a client's disconnect closing the owner's stream, a dead owner) live in sockets.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
import uvicorn
from prometheus_client import REGISTRY
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from services.router.forwarding import (
    FORWARDED_BY,
    LOOP_DETAIL,
    DomainForwarding,
    ForwardingUnavailable,
    _request_headers,
)
from tests.router.conftest import eventually, free_port

AUTH = {"Authorization": "Bearer agent-token-123"}
METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE"]
EVENT_EVERY = 0.2
EVENTS = 25  # a 5 s stream


@dataclass
class Owner:
    """What the owner's endpoints saw."""

    stream_opened: asyncio.Event = field(default_factory=asyncio.Event)
    stream_closed_at: float | None = None
    stream_completed: bool = False


def echo_app(name: str, owner: Owner | None = None) -> Starlette:
    """An app that answers every path with what it received; the owner's also streams events."""

    async def echo(request: Request) -> Response:
        payload = {
            "served_by": name,
            "method": request.method,
            "path": request.url.path,
            "query": request.scope["query_string"].decode(),
            "body": (await request.body()).decode(),
            "authorization": request.headers.get("authorization"),
            "forwarded_by": request.headers.get(FORWARDED_BY.decode()),
            "headers": dict(request.headers),
        }
        status = 201 if request.method == "POST" else 200
        return JSONResponse(payload, status_code=status, headers={"x-served-by": name})

    async def stream(_request: Request) -> Response:
        assert owner is not None

        async def events() -> AsyncIterator[str]:
            owner.stream_opened.set()
            try:
                for i in range(EVENTS):
                    yield f"event: tick\ndata: {i}\n\n"
                    await asyncio.sleep(EVENT_EVERY)
                owner.stream_completed = True
            finally:
                owner.stream_closed_at = time.monotonic()

        return StreamingResponse(events(), media_type="text/event-stream")

    async def broken_stream(_request: Request) -> Response:
        async def events() -> AsyncIterator[str]:
            for i in range(2):
                yield f"data: {i}\n\n"
                await asyncio.sleep(EVENT_EVERY)
            raise RuntimeError("the owner dies in the middle of the stream")

        return StreamingResponse(events(), media_type="text/event-stream")

    async def slow(_request: Request) -> Response:
        await asyncio.sleep(3)
        return JSONResponse({"late": True})

    routes = []
    if owner is not None:
        routes += [
            Route("/v1/remote/stream", stream),
            Route("/v1/remote/broken-stream", broken_stream),
            Route("/v1/remote/slow", slow),
            Route("/v1/remote/truncated", Truncated()),
        ]
    routes.append(Route("/{rest:path}", echo, methods=METHODS))
    return Starlette(routes=routes)


class Truncated:
    """Declares 100 bytes, sends 10, dies: the owner lost in the middle of a plain response."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = [(b"content-type", b"application/octet-stream"), (b"content-length", b"100")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"0123456789", "more_body": True})
        await asyncio.sleep(0.1)
        raise RuntimeError("the owner dies in the middle of the body")


def relay_tasks() -> list[asyncio.Task[Any]]:
    return [task for task in asyncio.all_tasks() if task.get_name() == "forwarding-disconnect" and not task.done()]


@contextlib.asynccontextmanager
async def serving(app: ASGIApp) -> AsyncIterator[str]:
    """``app`` under a real uvicorn server on a free port; yields its base URL."""
    port = free_port()
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_config=None, access_log=False, lifespan="off", timeout_graceful_shutdown=1
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    deadline = time.monotonic() + 10
    while not server.started:
        if task.done():
            task.result()
            raise RuntimeError("uvicorn stopped during start-up")
        assert time.monotonic() < deadline, "server did not start"
        await asyncio.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, timeout=10)


@dataclass
class Pair:
    front: httpx.AsyncClient
    owner: Owner
    forwarding: DomainForwarding
    resolved: list[tuple[str, bytes]]


@pytest.fixture
async def pair() -> AsyncIterator[Pair]:
    owner = Owner()
    resolved: list[tuple[str, bytes]] = []
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there

    async with serving(echo_app("owner", owner)) as owner_url:

        async def resolve(scope: Scope, body: bytes) -> str | None:
            path: str = scope["path"]
            resolved.append((path, body))
            if "unavailable" in path:
                raise ForwardingUnavailable("nobody owns this domain right now")
            if "down" in path:
                return dead
            return owner_url if "remote" in path else None

        forwarding = DomainForwarding(
            echo_app("front"),
            prefix="/v1/",
            resolve=resolve,
            exempt=("/v1/remote/exempt",),
            instance_id="front-1",
            connect_timeout=2.0,
            response_timeout=1.0,
        )
        async with serving(forwarding) as front_url, httpx.AsyncClient(base_url=front_url, timeout=10) as front:
            try:
                yield Pair(front=front, owner=owner, forwarding=forwarding, resolved=resolved)
            finally:
                await forwarding.aclose()


def forwarded(outcome: str) -> float:
    return REGISTRY.get_sample_value("switchboard_router_requests_forwarded_total", {"outcome": outcome}) or 0.0


async def test_post_is_forwarded_with_body_authorization_and_the_owners_answer(pair: Pair) -> None:
    before = forwarded("proxied")
    r = await pair.front.post("/v1/remote/agents/a1/status?reason=lunch&x=%2F", json={"status": "away"}, headers=AUTH)
    assert r.status_code == 201, r.text
    assert r.headers["x-served-by"] == "owner"
    echo = r.json()
    assert echo["served_by"] == "owner"
    assert echo["method"] == "POST"
    assert echo["path"] == "/v1/remote/agents/a1/status"
    assert echo["query"] == "reason=lunch&x=%2F"
    assert echo["body"] == '{"status":"away"}'
    assert echo["authorization"] == AUTH["Authorization"]
    assert echo["forwarded_by"] == "front-1"
    assert echo["headers"]["x-forwarded-for"] == "127.0.0.1"
    assert echo["headers"]["content-type"] == "application/json"
    assert pair.resolved == [("/v1/remote/agents/a1/status", b'{"status":"away"}')]  # the resolver saw the body
    assert forwarded("proxied") == before + 1
    assert relay_tasks() == []  # the disconnect watcher ends with its request


async def test_get_delete_and_chunked_bodies_are_forwarded(pair: Pair) -> None:
    r = await pair.front.get("/v1/remote/items?a=1&b=two%20words&b=3", headers=AUTH)
    assert r.status_code == 200, r.text
    assert r.json()["query"] == "a=1&b=two%20words&b=3"
    assert r.json()["body"] == ""
    assert pair.resolved[-1] == ("/v1/remote/items", b"")

    r = await pair.front.delete("/v1/remote/items/7", headers=AUTH)
    assert r.status_code == 200 and r.json()["method"] == "DELETE"

    async def chunks() -> AsyncIterator[bytes]:  # transfer-encoding: chunked, no declared length
        for part in (b'{"a": ', b"1}"):
            yield part

    r = await pair.front.put("/v1/remote/items/7", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 200, r.text
    assert r.json()["body"] == '{"a": 1}'
    assert r.json()["headers"]["content-length"] == "8"  # the owner gets the buffered body with its length
    assert "transfer-encoding" not in r.json()["headers"]


async def test_hop_by_hop_headers_stay_behind_and_x_forwarded_for_grows(pair: Pair) -> None:
    headers = {
        **AUTH,
        "connection": "keep-alive, x-hop",
        "x-hop": "for the next hop only",
        "proxy-authorization": "Basic c2VjcmV0",
        "x-forwarded-for": "203.0.113.9",
        "x-custom": "kept",
    }
    r = await pair.front.get("/v1/remote/h", headers=headers)
    seen = r.json()["headers"]
    assert "x-hop" not in seen
    assert "proxy-authorization" not in seen
    assert seen["x-custom"] == "kept"
    # The front's uvicorn trusts its loopback peer's x-forwarded-for (its default): the client it reports
    # is 203.0.113.9, already the chain's last entry, so nothing is added.
    assert seen["x-forwarded-for"] == "203.0.113.9"
    assert seen["host"] != "front"  # the owner's own address, set by the client


def test_x_forwarded_for_adds_the_peer_the_chain_does_not_name_yet() -> None:
    def chain(client: str, *sent: bytes) -> bytes:
        scope: Scope = {"client": (client, 50000), "headers": [(b"x-forwarded-for", value) for value in sent]}
        return dict(_request_headers(scope, b"front-1"))[b"x-forwarded-for"]

    assert chain("10.1.2.3") == b"10.1.2.3"
    assert chain("10.1.2.3", b"203.0.113.9") == b"203.0.113.9, 10.1.2.3"  # an untrusted peer: a new hop
    assert chain("203.0.113.9", b"198.51.100.1, 203.0.113.9") == b"198.51.100.1, 203.0.113.9"
    assert chain("10.1.2.3", b"198.51.100.1", b"203.0.113.9") == b"198.51.100.1, 203.0.113.9, 10.1.2.3"


async def test_local_requests_are_served_untouched(pair: Pair) -> None:
    before = forwarded("proxied")
    r = await pair.front.post("/v1/local/agents/a2/status?q=1", json={"status": "ready"}, headers=AUTH)
    assert r.status_code == 201, r.text
    echo = r.json()
    assert echo["served_by"] == "front"
    assert echo["body"] == '{"status":"ready"}'  # replayed to the app after the resolver read it
    assert echo["query"] == "q=1"
    assert echo["forwarded_by"] is None
    assert pair.resolved == [("/v1/local/agents/a2/status", b'{"status":"ready"}')]

    # outside the prefix, or exempt: the resolver is not asked at all
    assert (await pair.front.get("/remote/outside")).json()["served_by"] == "front"
    assert (await pair.front.post("/v1/remote/exempt", json={})).json()["served_by"] == "front"
    assert len(pair.resolved) == 1
    assert forwarded("proxied") == before


async def test_event_stream_flows_event_by_event_and_closing_it_closes_the_owners(pair: Pair) -> None:
    before = forwarded("client_closed")
    arrivals: list[float] = []
    start = time.monotonic()
    async with pair.front.stream("GET", "/v1/remote/stream", headers=AUTH) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        async for line in r.aiter_lines():
            if line.startswith("data:"):
                arrivals.append(time.monotonic() - start)
                if len(arrivals) == 3:
                    break
        assert pair.owner.stream_closed_at is None  # still streaming while the client listens
    closed = time.monotonic()
    # The stream lasts EVENTS * EVENT_EVERY = 5 s: the first event comes long before that, the next ones
    # one by one (a buffering proxy would deliver nothing until the end, then everything at once).
    assert arrivals[0] < 1.5, arrivals
    assert arrivals[2] - arrivals[0] >= 1.5 * EVENT_EVERY, arrivals

    async def owner_closed() -> bool:
        return pair.owner.stream_closed_at is not None

    await eventually(owner_closed, timeout=2.0)
    assert pair.owner.stream_closed_at is not None and pair.owner.stream_closed_at - closed < 2.0
    assert not pair.owner.stream_completed

    async def counted() -> bool:
        return forwarded("client_closed") == before + 1

    await eventually(counted, timeout=2.0)
    assert relay_tasks() == []


async def test_owner_dying_mid_stream_ends_the_stream(pair: Pair) -> None:
    before = forwarded("upstream_lost")
    async with pair.front.stream("GET", "/v1/remote/broken-stream") as r:
        assert r.status_code == 200
        data = [line async for line in r.aiter_lines() if line.startswith("data:")]  # ends, no error
    assert data == ["data: 0", "data: 1"]
    assert forwarded("upstream_lost") == before + 1


async def test_owner_dying_in_a_body_of_declared_length_aborts_the_response(pair: Pair) -> None:
    """Ending it cleanly would hand the client a short body as if complete: the connection is cut instead."""
    with pytest.raises(httpx.RemoteProtocolError):
        await pair.front.get("/v1/remote/truncated")
    assert relay_tasks() == []


async def test_an_already_forwarded_request_is_not_forwarded_again(pair: Pair) -> None:
    before = forwarded("loop_refused")
    r = await pair.front.post("/v1/remote/x", json={"a": 1}, headers={**AUTH, "x-switchboard-forwarded-by": "other"})
    assert r.status_code == 503
    assert r.headers["retry-after"] == "2"
    assert r.json() == {"detail": LOOP_DETAIL}
    assert forwarded("loop_refused") == before + 1
    # served here, the mark changes nothing
    r = await pair.front.get("/v1/local/x", headers={"x-switchboard-forwarded-by": "other"})
    assert r.status_code == 200 and r.json()["served_by"] == "front"


async def test_unreachable_owner_gives_503_with_retry_after(pair: Pair) -> None:
    before = forwarded("upstream_unavailable")
    r = await pair.front.post("/v1/down/x", json={"a": 1}, headers=AUTH)
    assert r.status_code == 503
    assert r.headers["retry-after"] == "2"
    assert "unreachable" in r.json()["detail"]
    assert forwarded("upstream_unavailable") == before + 1


async def test_owner_without_an_answer_in_time_gives_504(pair: Pair) -> None:
    r = await pair.front.get("/v1/remote/slow")
    assert r.status_code == 504
    assert "did not answer" in r.json()["detail"]


async def test_resolver_that_cannot_tell_gives_503(pair: Pair) -> None:
    r = await pair.front.get("/v1/unavailable/x", headers=AUTH)
    assert r.status_code == 503
    assert r.headers["retry-after"] == "2"
    assert r.json() == {"detail": "nobody owns this domain right now"}


async def test_one_client_made_lazily_and_closed_by_aclose() -> None:
    made: list[httpx.AsyncClient] = []

    def factory() -> httpx.AsyncClient:
        made.append(httpx.AsyncClient())
        return made[-1]

    async def local(_scope: Scope, _body: bytes) -> str | None:
        return None

    forwarding = DomainForwarding(echo_app("front"), prefix="/v1/", resolve=local, client_factory=factory)
    assert made == []
    assert forwarding.client is forwarding.client
    assert len(made) == 1
    await forwarding.aclose()
    assert made[0].is_closed
    await forwarding.aclose()  # twice is harmless
