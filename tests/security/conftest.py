"""The three services in one process on one embedded bus, with real tokens of every kind.

The router runs under uvicorn (its streams need a real server); callback and intake run through
ASGI transports with their lifespans. Intake runs as if it listened on a public interface, with one
signed source configured: the secure default under test.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from services.callback.app import create_app as create_callback
from services.callback.settings import CallbackSettings
from services.intake.app import create_app as create_intake
from services.intake.settings import IntakeSettings
from shared.settings import CommonSettings
from tests.conftest import ADMIN_HEADERS
from tests.intake.conftest import intake  # noqa: F401  (the in-process intake factory fixture)
from tests.router.conftest import Router, contact, eventually, running_router

SECRET = "acme-webhook-secret"
WEEK = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
ALWAYS_OPEN = json.dumps({"default": {"timezone": "UTC", "hours": {d: ["00:00-24:00"] for d in WEEK}}})


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@dataclass
class Stack:
    router: Router
    callback: httpx.AsyncClient
    callback_app: Any
    intake: httpx.AsyncClient
    headers: dict[str, dict[str, str]] = field(default_factory=dict)  # principal name -> headers
    ids: dict[str, str] = field(default_factory=dict)  # resource name -> id


@contextlib.asynccontextmanager
async def asgi(app: Any, base_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, client=("203.0.113.7", 40000))
        async with httpx.AsyncClient(transport=transport, base_url=base_url) as client:
            yield client


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Stack]:
    data_dir = tmp_path / "data"
    common = CommonSettings(data_dir=data_dir, log_json=False, log_level="WARNING", sites_json=ALWAYS_OPEN)
    callback_app = create_callback(common, CallbackSettings(scheduler_enabled=False))
    intake_app = create_intake(
        # The matrix is about who gets in; rate limits (tests/intake/test_rate_limits.py) would answer 429 first.
        IntakeSettings(source_secrets={"acme": SECRET}, listen_host="0.0.0.0", rate_limits_enabled=False),
        common,
    )
    async with (
        running_router(data_dir, common_overrides={"sites_json": ALWAYS_OPEN}) as router,
        asgi(callback_app, "http://callback") as callback,
        asgi(intake_app, "http://intake") as intake_client,
    ):
        s = Stack(router, callback, callback_app, intake_client)
        s.headers["none"] = {}
        s.headers["admin"] = ADMIN_HEADERS
        for agent, status in (("alice", "available"), ("bob", "offline"), ("carol", "offline")):
            _, headers = await router.register(agent, status=status)  # contacts go to alice only
            s.headers[agent] = headers
        r = await router.client.post(
            "/v1/auth/supervisor-tokens", json={"name": "sam", "ttl_seconds": 3600}, headers=ADMIN_HEADERS
        )
        assert r.status_code == 201, r.text
        s.headers["supervisor"] = bearer(r.json()["token"])
        yield s


async def offer_for(stack: Stack, agent: str, external_id: str, **kwargs: Any) -> dict[str, Any]:
    """Publish a contact and wait for its offer to ``agent`` (the only available agent left for it)."""
    await stack.router.emit(contact(external_id, **kwargs))
    return await stack.router.wait_offer(agent, stack.headers[agent])


__all__ = ["SECRET", "Stack", "bearer", "eventually", "offer_for"]
