"""No route runs a plain ``def`` per request: FastAPI sends a sync endpoint or dependency to its thread
pool, a thread hop (queue, wake-up, loop wake-up) on every call. The router's ``get_service`` was one and
cost every agent action that hop (issue 14: router CPU per contact); this keeps them all ``async``."""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute

from tests.contract.test_openapi_typed import APPS


def _is_async(call: Any) -> bool:
    if inspect.iscoroutinefunction(call) or inspect.isasyncgenfunction(call):
        return True
    if inspect.isfunction(call) or inspect.ismethod(call):
        return False
    return inspect.iscoroutinefunction(type(call).__call__)  # a security scheme or other callable object


def _calls(dependant: Dependant) -> Iterator[Any]:
    if dependant.call is not None:
        yield dependant.call
    for sub in dependant.dependencies:
        yield from _calls(sub)


def _routes(app: FastAPI) -> Iterator[tuple[str, Dependant]]:
    """Each API route with its dependant, as served: FastAPI keeps included routers as routes of their
    own and resolves their routes (with the include's dependencies) as "effective route contexts"."""
    for route in app.routes:
        if isinstance(route, APIRoute):
            yield route.path, route.dependant
        for context in getattr(route, "effective_route_contexts", list)():
            if context.dependant is not None:
                yield context.path, context.dependant


@pytest.mark.parametrize("service", sorted(APPS))
def test_every_endpoint_and_dependency_is_async(service: str, tmp_path: Path) -> None:
    routes = list(_routes(APPS[service](tmp_path)))
    assert len(routes) >= 3, "the routes were not found: the check would pass on anything"
    sync = sorted(
        f"{path}: {getattr(call, '__qualname__', repr(call))}"
        for path, dependant in routes
        for call in _calls(dependant)
        if not _is_async(call)
    )
    assert sync == []
