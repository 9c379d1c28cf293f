"""Structured logs, Prometheus metrics and health endpoints, the same on every service."""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Awaitable, Callable

import structlog
from fastapi import APIRouter, FastAPI, Response
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Histogram, generate_latest

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


def health_router(checks: dict[str, Check]) -> APIRouter:
    """``/healthz`` (alias ``/livez``): the process answers. ``/readyz``: every dependency answers."""
    router = APIRouter(tags=["operations"])

    @router.get("/healthz", summary="Liveness: the process is up")
    @router.get("/livez", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @router.get("/readyz", summary="Readiness: bus and database reachable")
    async def readyz(response: Response) -> dict[str, object]:
        async def run(check: Check) -> bool:
            try:
                return bool(await check())
            except Exception:
                return False

        # Concurrently: the answer takes as long as the slowest check, not their sum.
        names = list(checks)
        answers = await asyncio.gather(*(run(checks[name]) for name in names))
        results = dict(zip(names, answers, strict=True))
        ready = all(results.values())
        response.status_code = 200 if ready else 503
        return {"status": "ready" if ready else "not_ready", "checks": results}

    @router.get("/metrics", summary="Prometheus metrics", response_class=Response)
    async def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    return router


def install_operations(app: FastAPI, checks: dict[str, Check]) -> None:
    app.include_router(health_router(checks))
