"""What the router's HTTP stack costs an agent's request, apart from the use case behind it.

Every contact costs the router two agent requests (accept, complete). ``bench_lifecycle.py`` counts the
use cases alone; ``bench_e2e.py`` measures everything at once, on a machine where intake, the callback
service and the load generator share two cores, so a few microseconds per request are lost in its noise.
This one isolates the stack between the socket and the use case: the router app as shipped
(``create_app``, its lifespan, the embedded default, an agent's own token), with ``accept`` and
``complete`` answering at once with a fixed result, called as ASGI requests in one process (no uvicorn,
no socket), three ways alternated in the same run:

* ``router app``: the app as shipped: the project's middleware (body and NUL guards, the standby guard,
  the ``/metrics`` hook), FastAPI's routing, dependencies, body and response validation, the token check;
* ``without own middleware``: the same app without the project's own ASGI middleware;
* ``floor: bare Starlette``: a Starlette route that parses the same body and answers the same JSON,
  without validation or authentication (what no framework could go below).

Printed: CPU microseconds per request, the best of ``--rounds`` (each ``--requests`` long).

    python bench/bench_http_stack.py [--requests 2000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

ADMIN_TOKEN = "bench-http-stack-admin-token-0123456789"
NOW = datetime.now(UTC)
# What the use cases answer (the routes' response models check them on the way out, as in production).
ASSIGNMENT: dict[str, Any] = {
    "contact_id": "c1",
    "agent_id": "a1",
    "state": "assigned",
    "answered_at": NOW,
    "contact": {
        "contact_id": "c1",
        "site": "default",
        "channel": "voice",
        "intent": None,
        "summary": None,
        "customer": {"id": "x1", "tier": "standard"},
        "callback_id": None,
        "callback_attempt": None,
        "virtual_start": NOW,
    },
    "plan": {
        "role": "service",
        "upsell": False,
        "allowed_handling_seconds": 300.0,
        "goodwill_budget": 0.0,
        "short_question": False,
        "rule": "default",
    },
}
COMPLETED: dict[str, Any] = {"contact_id": "c1", "state": "completed", "outcome": {"resolved": True}, "ended_at": NOW}
CALLS = {  # name: (path, body)
    "accept": ("/v1/offers/o1/accept", b""),
    "complete": ("/v1/contacts/c1/complete", b'{"resolved": true}'),
}
App = Callable[[dict[str, Any], Any, Any], Awaitable[None]]


async def post(app: App, path: str, token: str, body: bytes = b"") -> tuple[int, bytes]:
    """One POST through the ASGI app, as uvicorn would hand it over: (status, body)."""
    headers = [
        (b"host", b"router"),
        (b"authorization", f"Bearer {token}".encode()),
        (b"content-length", str(len(body)).encode()),
    ]
    if body:
        headers.append((b"content-type", b"application/json"))
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
    }
    delivered = False

    async def receive() -> dict[str, Any]:
        nonlocal delivered
        if delivered:
            await asyncio.Event().wait()  # the client never leaves: a disconnect is never made up
        delivered = True
        return {"type": "http.request", "body": body, "more_body": False}

    status = 0
    chunks: list[bytes] = []

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))

    await app(scope, receive, send)
    return status, b"".join(chunks)


def floor_app() -> App:
    """The same two calls on a bare Starlette app: the body parsed, the same JSON back, nothing checked."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    def encodable(doc: dict[str, Any]) -> dict[str, Any]:
        encoded: dict[str, Any] = json.loads(json.dumps(doc, default=lambda value: value.isoformat()))
        return encoded

    accepted, completed = encodable(ASSIGNMENT), encodable(COMPLETED)

    async def accept(_request: Request) -> JSONResponse:
        return JSONResponse(accepted)

    async def complete(request: Request) -> JSONResponse:
        await request.json()
        return JSONResponse(completed)

    routes = [
        Route("/v1/offers/{offer_id}/accept", accept, methods=["POST"]),
        Route("/v1/contacts/{contact_id}/complete", complete, methods=["POST"]),
    ]
    return Starlette(routes=routes)


async def agent_token(app: Any) -> str:
    """An agent registered over the API: its token is the router's own JWT, checked as in production."""
    body = {
        "agent_id": "a1",
        "name": "Agent 1",
        "roles": ["service", "sales", "brand_ambassador"],
        "languages": ["en"],
        "capacity": {"voice": 1},
        "status": "available",
    }
    status, answer = await post(app, "/v1/agents", ADMIN_TOKEN, json.dumps(body).encode())
    if status != 201:
        raise RuntimeError(f"registering the agent: {status} {answer[:200]!r}")
    return str(json.loads(answer)["token"])


async def per_request_us(app: App, token: str, path: str, body: bytes, requests: int) -> float:
    cpu = time.process_time()
    for _ in range(requests):
        status, answer = await post(app, path, token, body)
        if status != 200:
            raise RuntimeError(f"{path}: {status} {answer[:200]!r}")
    return 1e6 * (time.process_time() - cpu) / requests


async def main_async(args: argparse.Namespace) -> int:
    directory = Path(tempfile.mkdtemp(prefix="bench-http-stack-"))
    os.environ.update(
        {
            "SWITCHBOARD_DATA_DIR": str(directory),
            "SWITCHBOARD_ADMIN_TOKEN": ADMIN_TOKEN,
            "SWITCHBOARD_LOG_LEVEL": "WARNING",
        }
    )
    from services.router.app import create_app

    app = create_app()
    async with app.router.lifespan_context(app):
        service = app.state.service
        deadline = time.monotonic() + 30
        while not service.serving:
            if time.monotonic() > deadline:
                raise RuntimeError("the router did not start serving within 30 s")
            await asyncio.sleep(0.05)
        token = await agent_token(app)

        async def accept(_offer_id: str, _who: object) -> dict[str, Any]:
            return ASSIGNMENT

        async def complete(_contact_id: str, _who: object, _outcome: object, _attempt: object) -> dict[str, Any]:
            return COMPLETED

        service.accept, service.complete = accept, complete  # the use cases answer at once
        shipped = list(app.user_middleware)

        def use(own_middleware: bool) -> App:
            app.user_middleware = shipped if own_middleware else []
            app.middleware_stack = None  # rebuilt on the next request
            return app

        floor = floor_app()
        ways: dict[str, Callable[[], App]] = {
            "router app": lambda: use(True),
            "without own middleware": lambda: use(False),
            "floor: bare Starlette": lambda: floor,
        }
        best = {(way, call): float("inf") for way in ways for call in CALLS}
        for round_ in range(args.rounds + 1):  # the first round warms every path and is not counted
            for way, target in ways.items():
                under_test = target()
                for call, (path, body) in CALLS.items():
                    us = await per_request_us(under_test, token, path, body, args.requests)
                    if round_:
                        best[way, call] = min(best[way, call], us)
        use(True)

    print(
        f"bench_http_stack: CPU us per request, best of {args.rounds} rounds of {args.requests}, one process, "
        "use cases answering at once, no uvicorn or socket"
    )
    print(f"{'way':24} {'accept':>8} {'complete':>9} {'both (one contact)':>19}")
    for way in ways:
        accept_us, complete_us = best[way, "accept"], best[way, "complete"]
        print(f"{way:24} {accept_us:8.0f} {complete_us:9.0f} {accept_us + complete_us:19.0f}")
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=2000, help="requests per call, way and round")
    parser.add_argument("--rounds", type=int, default=5, help="rounds; each way's best is printed")
    args = parser.parse_args()
    sys.exit(asyncio.run(main_async(args)))


if __name__ == "__main__":
    main()
