"""The ops dashboard: a static page, its snapshot, and a live stream of snapshots.

The page (``GET /ops/dashboard``) is a plain HTML+JS file shipped in the package: no build step, no
CDN, nothing secret in it, so it needs no token. The data is customer data (who waits, agents' states)
and needs a supervisor or admin token in the ``Authorization`` header; the page reads the stream with
``fetch`` rather than ``EventSource`` so the token never travels in a URL (and so never in access logs).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated

import structlog
from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import HTMLResponse

from services.router.api.deps import ReadSideDep, TrustedDep
from services.router.dashboard import DashboardSnapshot, Source, build_snapshot
from services.router.responses import COMMON_ERRORS, as_json
from services.router.stream_events import (
    DASHBOARD_STREAM_EVENTS,
    EventStreamResponse,
    UnauthorizedEvent,
    UnavailableEvent,
    sse_data,
    sse_responses,
)
from shared.auth import authenticator_of

log = structlog.get_logger(__name__)
REAUTH_SECONDS = 30.0  # an expired supervisor token ends an open stream within this long
STATIC = Path(__file__).resolve().parent.parent / "static"

router = APIRouter(tags=["dashboard"])


class SnapshotCache:
    """One snapshot per ``max_age`` for all viewers: ten open dashboards cost one set of queries."""

    def __init__(self, max_age: float = 0.5) -> None:
        self.max_age = max_age
        self._at = -1.0
        self._value: DashboardSnapshot | None = None
        self._lock = asyncio.Lock()

    async def get(self, views: Source) -> DashboardSnapshot:
        async with self._lock:
            if self._value is None or time.monotonic() - self._at >= self.max_age:
                self._value = await build_snapshot(views)
                self._at = time.monotonic()
            return self._value


def _cache(request: Request) -> SnapshotCache:
    cache: SnapshotCache | None = getattr(request.app.state, "dashboard_cache", None)
    if cache is None:
        cache = request.app.state.dashboard_cache = SnapshotCache()
    return cache


@router.get("/ops/dashboard", response_class=HTMLResponse, summary="The ops dashboard page (static; asks for a token)")
async def dashboard_page() -> HTMLResponse:
    return HTMLResponse(
        (STATIC / "dashboard.html").read_text(encoding="utf-8"),
        headers={
            "Cache-Control": "no-cache",
            # Everything the page needs is inline or same-origin; nothing may load from elsewhere.
            "Content-Security-Policy": "default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
            "img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'",
            "X-Content-Type-Options": "nosniff",
        },
    )


@router.get(
    "/v1/ops/dashboard",
    response_model=DashboardSnapshot,
    summary="The dashboard's snapshot: queue with reasons, agents, throughput, service level, staffing, "
    "goals (supervisor or admin)",
    responses=COMMON_ERRORS,
)
async def dashboard_snapshot(request: Request, read_side: ReadSideDep, _: TrustedDep) -> DashboardSnapshot:
    return await _cache(request).get(read_side)


@router.get(
    "/v1/ops/dashboard/stream",
    response_class=EventStreamResponse,
    summary="Server-Sent Events: a `snapshot` event whenever the snapshot changes, checked every "
    "`interval` seconds (supervisor or admin)",
    responses={
        **sse_responses(
            DASHBOARD_STREAM_EVENTS,
            "An event stream: each event's `data` is the JSON of its model (`x-sse-events`: event name → schema); "
            "comments as heartbeats.",
        ),
        **as_json(COMMON_ERRORS),
    },
)
async def dashboard_stream(
    request: Request,
    read_side: ReadSideDep,
    _: TrustedDep,
    interval: Annotated[float, Query(ge=0.5, le=60, description="seconds between checks")] = 1.0,
) -> EventStreamResponse:
    """The token is checked again every ``REAUTH_SECONDS``: a stream outlives no token (a supervisor's
    expires after its shift); it then ends with an ``unauthorized`` event and the page asks again."""
    cache = _cache(request)
    first = await cache.get(read_side)  # a standby router answers 503 here, before the stream starts
    token = request.headers.get("authorization", "").partition(" ")[2]

    async def events() -> AsyncIterator[dict[str, str]]:
        message = sse_data(DASHBOARD_STREAM_EVENTS, "snapshot", first)
        last = message["data"]
        yield message
        checked = time.monotonic()
        while True:
            await asyncio.sleep(interval)
            if time.monotonic() - checked >= REAUTH_SECONDS:
                try:
                    await authenticator_of(request).authenticate(token)
                except HTTPException:
                    yield sse_data(
                        DASHBOARD_STREAM_EVENTS,
                        "unauthorized",
                        UnauthorizedEvent(detail="the token is no longer valid"),
                    )
                    return
                checked = time.monotonic()
            try:
                message = sse_data(DASHBOARD_STREAM_EVENTS, "snapshot", await cache.get(read_side))
            except Exception as exc:  # database away, ownership lost: say so, keep the page, try again
                log.warning("router.dashboard_snapshot_failed", error=type(exc).__name__)
                yield sse_data(DASHBOARD_STREAM_EVENTS, "unavailable", UnavailableEvent(error=type(exc).__name__))
                last = ""
                continue
            if message["data"] != last:
                last = message["data"]
                yield message

    return EventStreamResponse(events(), ping=15)
