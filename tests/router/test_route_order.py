"""The order in which the router app includes its routes.

FastAPI tries an app's routes in the order they were included, and twice a request (to pick the route,
then to handle it). Every contact costs two agent requests, accept and complete, so their routers come
first (``bench/bench_http_stack.py``: 9–19 % less CPU per request than with the agents' and the health
routes in front). That order may be chosen for speed only because no two routes can answer the same
request; this checks both.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.routing import APIRoute
from starlette.routing import BaseRoute, Route, compile_path

from services.router.app import create_app
from services.router.settings import RouterSettings
from shared.settings import CommonSettings
from tests.router.conftest import ADMIN_TOKEN


def app(tmp_path: Path) -> FastAPI:
    common = CommonSettings(data_dir=tmp_path, log_json=False, log_level="WARNING")
    return create_app(RouterSettings(admin_token=ADMIN_TOKEN), common)


def routes_in_order(routes: list[BaseRoute]) -> list[Route]:
    """The app's routes in the order FastAPI tries them (an included router's routes in its place)."""
    out: list[Route] = []
    for route in routes:
        included: Any = getattr(route, "original_router", None)
        if included is not None:
            out.extend(routes_in_order(included.routes))
        elif isinstance(route, Route):
            out.append(route)
    return out


def sample_path(path: str) -> str:
    return re.sub(r"\{[^}:]+(:[^}]+)?\}", "sample", path)


def test_no_two_routes_of_the_router_answer_the_same_request(tmp_path: Path) -> None:
    routes = routes_in_order(app(tmp_path).router.routes)
    paths = {route.path for route in routes}
    # every router the app includes is walked, not only the top level
    assert {"/v1/offers/{offer_id}/accept", "/v1/agents/{agent_id}/stream", "/v1/console/me", "/readyz"} <= paths
    shadowed = [
        (route.path, other.path, sorted(route.methods & other.methods))
        for route in routes
        for other in routes
        if other is not route
        and route.methods
        and other.methods
        and route.methods & other.methods
        and compile_path(other.path)[0].fullmatch(sample_path(route.path))
    ]
    assert shadowed == []


def test_the_two_requests_of_every_contact_are_tried_first(tmp_path: Path) -> None:
    posts = [r for r in routes_in_order(app(tmp_path).router.routes) if isinstance(r, APIRoute) and "POST" in r.methods]
    accept = next(i for i, r in enumerate(posts) if r.path == "/v1/offers/{offer_id}/accept")
    complete = next(i for i, r in enumerate(posts) if r.path == "/v1/contacts/{contact_id}/complete")
    agents_first = next(i for i, r in enumerate(posts) if r.path.startswith("/v1/agents"))
    assert max(accept, complete) < agents_first
    assert max(accept, complete) <= 2  # only decline is tried before complete
