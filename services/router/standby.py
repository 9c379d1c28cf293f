"""A router that does not own the routing state (a standby, or an owner still rebuilding) is a healthy
process that serves no traffic: probes answer, the API answers 503 with ``Retry-After`` and who owns.

Why not block start-up until ownership, as before: a standby then answered nothing, not even
``/healthz``, so a container health check or a liveness probe killed it (issue 18).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from starlette.types import ASGIApp, Receive, Scope, Send

if TYPE_CHECKING:
    from services.router.service import RouterService

STANDBY_DETAIL = "this router is a standby; another instance owns the state"


def serving(service: RouterService | None) -> bool:
    """True once this router owns the state, has rebuilt it and consumes: it may serve the API."""
    return service is not None and service.active and service.serving


class StandbyGuard:
    """ASGI middleware: requests under ``prefix`` answer 503 until the router serves (a plain ASGI
    wrapper: no task or stream per request, it is on every API call's path)."""

    def __init__(self, app: ASGIApp, *, prefix: str, exempt: tuple[str, ...] = ()) -> None:
        self.app = app
        self.prefix = prefix
        self.exempt = exempt

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] == "http" and path.startswith(self.prefix) and path not in self.exempt:
            service = getattr(scope["app"].state, "service", None)
            if not serving(service):
                body = json.dumps({"detail": STANDBY_DETAIL}).encode()
                headers = [(b"content-type", b"application/json"), (b"retry-after", b"2")]
                headers.append((b"content-length", str(len(body)).encode()))
                await send({"type": "http.response.start", "status": 503, "headers": headers})
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)
