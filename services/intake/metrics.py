"""Intake's Prometheus metrics (module-level: one registry per process, however many apps a test builds)."""

from __future__ import annotations

from functools import cache

from prometheus_client import Counter, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

RECEIVED = Counter("switchboard_intake_received_total", "Requests received", ["endpoint"])
ACCEPTED = Counter(
    "switchboard_intake_accepted_total", "Requests accepted (event durably published)", ["endpoint", "event"]
)
DUPLICATES = Counter(
    "switchboard_intake_duplicates_total", "Requests seen before: answered again, nothing published", ["endpoint"]
)
REJECTED = Counter("switchboard_intake_rejected_total", "Requests refused", ["endpoint", "reason"])
PUBLISH_SECONDS = Histogram(
    "switchboard_intake_publish_seconds",
    "Time from publish until the bus's durable acknowledgement",
    ["event"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)
STORE_FAILURES = Counter(
    "switchboard_intake_idempotency_store_failures_total",
    "Idempotency store writes that failed after the event was published (retries then re-publish "
    "the same event id, which consumers drop)",
)


# Bound children, looked up once per label set: ``labels()`` takes a lock and builds a key on every call.


@cache
def received(endpoint: str) -> Counter:
    return RECEIVED.labels(endpoint)


@cache
def accepted(endpoint: str, event: str) -> Counter:
    return ACCEPTED.labels(endpoint, event)


@cache
def duplicates(endpoint: str) -> Counter:
    return DUPLICATES.labels(endpoint)


@cache
def publish_seconds(event: str) -> Histogram:
    return PUBLISH_SECONDS.labels(event)


# Scope key set by ``api.common.begin``: the request reached an endpoint, which counts it itself.
LABELLED = "switchboard.intake_endpoint"
_EDGE_REASONS = {401: "unauthenticated", 403: "forbidden", 404: "not_found", 405: "method_not_allowed"}


class CountEdgeRejections:
    """ASGI middleware (outermost): a /v1/ request refused before any endpoint labelled it (bad token,
    NUL bytes, unknown path) is still counted as received and rejected, as ``endpoint="edge"``; without
    this, a flood of such requests would be invisible on the dashboard."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope.get("path", "").startswith("/v1/"):
            await self.app(scope, receive, send)
            return

        async def counting_send(message: Message) -> None:
            if message["type"] == "http.response.start" and message["status"] >= 400 and LABELLED not in scope:
                status = int(message["status"])
                reason = _EDGE_REASONS.get(status) or ("nul_bytes" if status == 422 else f"http_{status}")
                received("edge").inc()
                REJECTED.labels("edge", reason).inc()
            await send(message)

        await self.app(scope, receive, counting_send)
