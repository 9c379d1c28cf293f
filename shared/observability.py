"""Structured logs, Prometheus metrics and health endpoints, the same on every service."""

from __future__ import annotations

import asyncio
import logging
import re
import sys
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Literal

import structlog
from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, Histogram, generate_latest
from pydantic import BaseModel, Field
from starlette.types import ASGIApp, Receive, Scope, Send

if TYPE_CHECKING:  # the bus imports this module for its metrics
    from shared.bus.base import EventBus

Check = Callable[[], Awaitable[bool]]

BUS_EVENTS_HANDLED = Counter(
    "switchboard_bus_events_handled_total", "Events handled by consumers", ["group", "topic", "type"]
)
BUS_EVENTS_DEAD_LETTERED = Counter(
    "switchboard_bus_events_dead_lettered_total", "Events sent to a dead-letter topic", ["group", "topic"]
)
BUS_HANDLER_FAILURES = Counter(
    "switchboard_bus_handler_failures_total", "Handler attempts that raised", ["group", "topic"]
)
BUS_PUBLISH_SECONDS = Histogram(
    "switchboard_bus_publish_seconds",
    "Time until the bus durably acknowledged a publish",
    ["bus"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)

BUS_CONSUMER_LAG = Gauge(
    "switchboard_bus_consumer_lag",
    "Events in the log not yet handled by the group (refreshed on scrape)",
    ["group", "topic"],
)
BUS_DLQ_SIZE = Gauge("switchboard_bus_dlq_size", "Events held in the topic's dead-letter topic", ["topic"])


async def refresh_bus_gauges(bus: EventBus, *, timeout: float = 0.5) -> None:
    """Lag and DLQ size of this process's subscriptions. Bounded: a slow or absent bus leaves the last
    figures (or none) and the scrape still answers promptly with everything else."""
    try:
        async with asyncio.timeout(timeout):
            backlog = await bus.backlog()
    except Exception as exc:  # TimeoutError included
        structlog.get_logger("shared.observability").warning("bus.backlog_unavailable", error=repr(exc)[:300])
        return
    BUS_CONSUMER_LAG.clear()
    for (group, topic), n in backlog.lag.items():
        BUS_CONSUMER_LAG.labels(group, topic).set(n)
    BUS_DLQ_SIZE.clear()
    for topic, n in backlog.dlq.items():
        BUS_DLQ_SIZE.labels(topic).set(n)


# A phone number in any logged text: "+" then 7-15 digits, maybe with separators (E.164 as we store it,
# or as a caller typed it). Fields named like a phone number are masked whatever their shape.
_PHONE_IN_TEXT = re.compile(r"\+\d(?:[\d ().-]{5,20})\d")
_PHONE_KEYS = re.compile(r"phone|caller|msisdn|^from$|^to$|^called$", re.IGNORECASE)
_MAX_DEPTH = 4


def mask_phone(text: str) -> str:
    """Every digit but the last two replaced: enough to tell two callers apart in a log, no more."""
    digits = sum(c.isdigit() for c in text)
    seen = 0
    out = []
    for c in text:
        if c.isdigit():
            seen += 1
            out.append(c if seen > digits - 2 else "*")
        else:
            out.append(c)
    return "".join(out)


def _mask(value: Any, key: str = "", depth: int = 0) -> Any:
    if isinstance(value, str):
        if _PHONE_KEYS.search(key) and any(c.isdigit() for c in value):
            return mask_phone(value)
        return _PHONE_IN_TEXT.sub(lambda m: mask_phone(m.group(0)), value) if "+" in value else value
    if depth >= _MAX_DEPTH:
        return value
    if isinstance(value, dict):
        return {k: _mask(v, str(k), depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_mask(v, key, depth + 1) for v in value)
    if isinstance(value, BaseException | int | float | bool) or value is None:
        return value
    text = str(value)  # anything else would be rendered with str() anyway: mask what it renders to
    masked = _mask(text, key, depth + 1)
    return masked if masked != text else value


def mask_phone_numbers(_logger: Any, _method: str, event_dict: structlog.types.EventDict) -> structlog.types.EventDict:
    """structlog processor: no full phone number reaches a log line, at any level, from our code or a
    library's (stdlib records pass the same chain: aiosqlite logs SQL parameters at DEBUG)."""
    for key, value in list(event_dict.items()):
        if key.startswith("_"):
            continue
        event_dict[key] = _mask(value, key)
    positional = event_dict.get("positional_args")
    if positional:
        event_dict["positional_args"] = _mask(positional)
    return event_dict


def configure_logging(service: str, *, level: str = "INFO", json: bool = True) -> None:
    """structlog for our code and stdlib logging (uvicorn, aiokafka) through one JSON renderer."""
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer(colors=False)
    )
    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
        structlog.stdlib.PositionalArgumentsFormatter(),
        mask_phone_numbers,
    ]
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            renderer,
        ],
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("aiokafka").setLevel(max(logging.WARNING, root.level))
    structlog.contextvars.bind_contextvars(service=service)


class Liveness(BaseModel):
    status: Literal["ok"]


class Readiness(BaseModel):
    status: Literal["ready", "not_ready"]
    checks: dict[str, bool] = Field(description="each dependency check (bus, database, consuming...): passed or not")


# Probes and scrapes carry no credentials: said explicitly, so a missing declaration elsewhere stands out.
PUBLIC: dict[str, Any] = {"security": []}  # FastAPI's openapi_extra


def health_router(checks: dict[str, Check], *, timeout: float = 1.5) -> APIRouter:
    """``/healthz`` (alias ``/livez``): the process answers. ``/readyz``: every dependency answers.

    The checks run concurrently, each bounded by ``timeout`` seconds (one that takes longer counts as
    failed), so a hung dependency makes ``/readyz`` answer 503 promptly instead of hanging with it.
    """
    router = APIRouter(tags=["operations"])

    @router.get("/healthz", summary="Liveness: the process is up", openapi_extra=PUBLIC)
    @router.get("/livez", include_in_schema=False)
    async def healthz() -> Liveness:
        return Liveness(status="ok")

    @router.get(
        "/readyz",
        summary="Readiness: bus and database reachable",
        responses={503: {"model": Readiness, "description": "not ready: a check failed (with Retry-After)"}},
        openapi_extra=PUBLIC,
    )
    async def readyz(response: Response) -> Readiness:
        async def run(check: Check) -> bool:
            try:
                async with asyncio.timeout(timeout):
                    return bool(await check())
            except Exception:  # TimeoutError included: too slow is not ready
                return False

        outcomes = await asyncio.gather(*(run(check) for check in checks.values()))
        results = dict(zip(checks, outcomes, strict=True))
        ready = all(results.values())
        response.status_code = 200 if ready else 503
        if not ready:
            response.headers["Retry-After"] = "1"
        return Readiness(status="ready" if ready else "not_ready", checks=results)

    @router.get(
        "/metrics",
        summary="Prometheus metrics",
        response_class=Response,
        responses={
            200: {
                "description": "Prometheus text exposition format",
                "content": {"text/plain": {"schema": {"type": "string"}}},
            }
        },
        openapi_extra=PUBLIC,
    )
    async def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    return router


class BeforePath:
    """ASGI middleware: await ``action`` before requests to one path (e.g. refresh gauges for /metrics);
    every other request passes straight through."""

    def __init__(self, app: ASGIApp, *, path: str, action: Callable[[], Awaitable[None]]) -> None:
        self.app = app
        self.path = path
        self.action = action

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope.get("path") == self.path:
            await self.action()
        await self.app(scope, receive, send)


def install_operations(app: FastAPI, checks: dict[str, Check], *, timeout: float = 1.5) -> None:
    app.include_router(health_router(checks, timeout=timeout))


def install_unavailable_handler(app: FastAPI, *, retry_after: int = 2) -> None:
    """A dependency outage (database unreachable, locked or full; bus down) answers ``503`` with
    ``Retry-After``, never a bare ``500``: the client's request was fine, it may simply try again.

    Errors of the same classes that are not transient (an integrity error, a programming error) still
    answer ``500``, logged with their traceback.
    """
    from sqlalchemy.exc import SQLAlchemyError

    from shared.bus.base import BusUnavailable
    from shared.faults import is_transient

    log = structlog.get_logger("shared.observability")

    async def _dependency_error(request: Request, exc: Exception) -> JSONResponse:
        if is_transient(exc):
            log.warning("http.dependency_unavailable", path=request.url.path, error=repr(exc)[:500])
            return JSONResponse(
                status_code=503,
                content={"detail": "a dependency is unavailable right now; retry later"},
                headers={"Retry-After": str(retry_after)},
            )
        log.error("http.unhandled_error", path=request.url.path, exc_info=exc)
        return JSONResponse(status_code=500, content={"detail": "internal error"})

    for cls in (SQLAlchemyError, OSError, BusUnavailable):
        app.add_exception_handler(cls, _dependency_error)
