"""Fixtures for intake tests: the real app (real embedded bus, real SQLite store) on a fixed clock."""

from __future__ import annotations

import hashlib
import hmac
import json
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from services.intake.app import create_app
from services.intake.settings import IntakeSettings
from shared.bus.base import EventBus
from shared.events import Envelope, decode_event
from shared.settings import CommonSettings

# A Wednesday, 10:00 UTC: inside the default calendar's hours (Mon-Fri 08:00-18:00 UTC).
OPEN_TIME = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)
# Wednesday 20:00 UTC: closed; the next opening is Thursday 08:00.
CLOSED_TIME = datetime(2026, 11, 25, 20, 0, tzinfo=UTC)
SECRET = "s3cr3t-acme"


@dataclass
class Clock:
    now: datetime = OPEN_TIME

    def __call__(self) -> datetime:
        return self.now


def sign(body: bytes, timestamp: int, secret: str = SECRET) -> dict[str, str]:
    """Headers a well-behaved sender puts on a generic webhook (computed independently of intake)."""
    mac = hmac.new(secret.encode(), str(timestamp).encode() + b"." + body, hashlib.sha256).hexdigest()
    return {"X-Switchboard-Timestamp": str(timestamp), "X-Switchboard-Signature": f"v1={mac}"}


def contact_payload(external_id: str = "call-1", **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "external_id": external_id,
        "source": "acme",
        "channel": "voice",
        "customer": {
            "id": "cust-42",
            "phone": "+49 30 901820",
            "name": "Ada",
            "tier": "premium",
            "language": "de",
            "timezone": "Europe/Berlin",
        },
        "summary": "I want to cancel my subscription",
        "ivr_selections": [],
    }
    body.update(overrides)
    return body


def bus_events(data_dir: Path, topic: str | None = None) -> list[tuple[str, str, Envelope]]:
    """(topic, key, envelope) of every event in the embedded bus log, in offset order per partition."""
    path = data_dir / "bus.sqlite3"
    if not path.exists():
        return []
    with sqlite3.connect(path) as conn:
        rows = conn.execute("SELECT topic, key, value FROM events ORDER BY topic, partition, offset").fetchall()
    return [(t, k, decode_event(v)) for t, k, v in rows if topic is None or t == topic]


@dataclass
class Intake:
    client: httpx.AsyncClient
    data_dir: Path
    clock: Clock
    settings: IntakeSettings
    app: Any
    extra: dict[str, Any] = field(default_factory=dict)

    def events(self, topic: str | None = None) -> list[tuple[str, str, Envelope]]:
        return bus_events(self.data_dir, topic)

    async def post_signed(self, path: str, payload: Any, **headers: str) -> httpx.Response:
        body = json.dumps(payload).encode()
        ts = int(self.clock().timestamp())
        return await self.client.post(
            path, content=body, headers={"content-type": "application/json", **sign(body, ts), **headers}
        )


IntakeFactory = Callable[..., Awaitable[Intake]]


@pytest.fixture
async def intake(tmp_path: Path) -> AsyncIterator[IntakeFactory]:
    """Start intake apps in-process (lifespan included); every one is shut down at the end."""
    stack: list[Any] = []

    async def start(
        *, bus: EventBus | None = None, clock: Clock | None = None, data_dir: Path | None = None, **settings: Any
    ) -> Intake:
        data_dir = data_dir or tmp_path / "data"
        clock = clock or Clock()
        settings.setdefault("listen_host", "127.0.0.1")  # in-process, as `switchboard intake` on loopback
        # Tests post many requests from one address: rate limits only where a test turns them on.
        intake_settings = IntakeSettings(**{"rate_limits_enabled": False, **settings})
        common = CommonSettings(data_dir=data_dir, log_json=False, log_level="WARNING")
        app = create_app(intake_settings, common, bus=bus, clock=clock)
        cm = run(app)
        client = await cm.__aenter__()
        stack.append(cm)
        return Intake(client, data_dir, clock, intake_settings, app)

    yield start
    for cm in reversed(stack):
        await cm.__aexit__(None, None, None)


@asynccontextmanager
async def run(app: Any) -> AsyncIterator[httpx.AsyncClient]:
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, client=("203.0.113.7", 40000))
        async with httpx.AsyncClient(transport=transport, base_url="http://intake.test") as client:
            yield client
