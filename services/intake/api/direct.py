"""Direct dispatch: the webhook endpoints served straight from the ASGI call, past the middleware stack.

Intake's webhook endpoints are ``RequestOnlyRoute``s: they take the ``Request`` and return a finished
``Response``, and every failure they expect is an exception with a registered handler. For them the
framework's per-request machinery (error and exception middleware, exit-stack and body-limit wrappers,
telemetry probe, router matching) does nothing but cost CPU: measured, it is most of a bare FastAPI
endpoint's cost (~120 us a request against ~30 us for the same answer from plain uvicorn, measured by
``bench/bench_intake.py``).

So :class:`IntakeAPI` looks the request up in a table of (method, exact path) -> endpoint first and
serves a hit itself, with what the stack would have given it:

* the app's own middleware (``app.add_middleware``, e.g. the NUL guard), in the same order;
* the app's exception handlers, matched on the exception's type like Starlette does (``IntakeError``,
  ``InvalidInput``, ``HTTPException``...); anything else is logged with its traceback and answered
  ``500 Internal Server Error``, as ``ServerErrorMiddleware`` would;
* ``request.app``, ``scope["route"]``/``["endpoint"]``/``["path_params"]`` as the router sets them.

Everything else (docs, OpenAPI, health, metrics, other methods, trailing-slash redirects, mounted
``root_path``) takes FastAPI's normal path, and so does every request when OpenTelemetry is configured
(FastAPI's native telemetry then traces each request).

This reimplements what Starlette's and FastAPI's internals do per request (``build_middleware_stack``,
the router's scope keys, ``ExceptionMiddleware``'s handler lookup) and reads FastAPI's private
``_native_telemetry``: a release may change any of it without notice. So it is off by default and only
``SWITCHBOARD_INTAKE_FAST_PATH=true`` switches it on (``docs/decisions/0001-intake-fast-path.md``);
off, :class:`IntakeAPI` is a plain ``FastAPI`` app. ``tests/intake/test_direct_dispatch.py`` and
``tests/intake/test_fast_path.py`` send the same requests both ways and compare the answers.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any, cast

import structlog
from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.responses import PlainTextResponse
from fastapi.routing import APIRoute
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Receive, Scope, Send

from services.intake.api.common import RequestOnlyRoute

log = structlog.get_logger(__name__)


class IntakeAPI(FastAPI):
    """A ``FastAPI`` app that serves its direct routes itself once :meth:`enable_direct_dispatch` ran."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._direct_candidates: list[APIRoute] = []
        self._direct_routes: Mapping[tuple[str, str], APIRoute] = {}
        self._direct_app: ASGIApp | None = None

    def include_direct_router(self, router: APIRouter) -> None:
        """``include_router`` (no extra prefix), and its request-only routes may be served directly."""
        self.include_router(router)
        self._direct_candidates.extend(r for r in router.routes if isinstance(r, APIRoute))

    @property
    def direct_paths(self) -> frozenset[tuple[str, str]]:
        """(method, path) pairs currently served directly (empty while direct dispatch is off)."""
        return frozenset(self._direct_routes) if self._direct_app is not None else frozenset()

    def enable_direct_dispatch(self) -> bool:
        """Build the table from the routes registered now; ``False`` (and off) when telemetry is on."""
        telemetry = getattr(self, "_native_telemetry", None)
        if telemetry is not None and telemetry.enabled():
            log.info("intake.direct_dispatch_off", reason="OpenTelemetry is configured: every request is traced")
            self.disable_direct_dispatch()
            return False
        table: dict[tuple[str, str], APIRoute] = {}
        for route in self._direct_candidates:
            if isinstance(route, RequestOnlyRoute) and route.takes_request_only and "{" not in route.path:
                for method in route.methods or ():  # an APIRoute always has them (default GET)
                    table[(method, route.path)] = route
        app: ASGIApp = self._serve_direct
        for middleware in reversed(self.user_middleware):
            cls, args, kwargs = middleware
            app = cls(app, *args, **kwargs)
        self._direct_routes = table
        self._direct_app = app
        return True

    def disable_direct_dispatch(self) -> None:
        self._direct_routes = {}
        self._direct_app = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        direct = self._direct_app
        if direct is not None and scope["type"] == "http" and not self.root_path and not scope.get("root_path"):
            if (scope["method"], scope["path"]) in self._direct_routes:
                scope["app"] = self
                await direct(scope, receive, send)
                return
        await super().__call__(scope, receive, send)

    async def _serve_direct(self, scope: Scope, receive: Receive, send: Send) -> None:
        route = self._direct_routes[(scope["method"], scope["path"])]
        scope["route"] = route
        scope["endpoint"] = route.endpoint
        scope["path_params"] = {}
        request = Request(scope, receive)
        try:
            response: Response = await route.endpoint(request)
        except Exception as exc:
            response = await self._handle(request, exc)
        await response(scope, receive, send)

    async def _handle(self, request: Request, exc: Exception) -> Response:
        for cls in type(exc).__mro__:
            handler = self.exception_handlers.get(cls)
            if handler is not None:
                if inspect.iscoroutinefunction(handler):
                    response: Response = await handler(request, exc)
                else:
                    # Starlette types a handler as sync-or-async; iscoroutinefunction narrows only the async case.
                    sync_handler = cast(Callable[[Request, Exception], Response], handler)
                    response = await run_in_threadpool(sync_handler, request, exc)
                return response
        log.exception("intake.unhandled_error", method=request.method, path=request.url.path)
        return PlainTextResponse("Internal Server Error", status_code=500)
