"""Fixtures for the router service: the real app under a real uvicorn server (in-process, so SSE
streams flow), the real embedded bus to publish contacts on, and helpers to read agent streams."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from services.router.app import create_app
from services.router.service import RouterService
from services.router.settings import RouterSettings
from services.router.standby import serving
from services.router.use_cases.agent_admin import AgentProfile
from shared.bus import EventBus
from shared.events import Channel, ContactRequested, Customer, Intent, Role, Tier, contact_id_for
from shared.settings import CommonSettings
from tests.postgres import fresh_database

ADMIN_TOKEN = "test-admin-token"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def eventually(predicate: Callable[[], Awaitable[Any]], timeout: float = 10.0, interval: float = 0.05) -> Any:
    """Poll an async predicate until truthy; fail with the last value seen (no timing asserts)."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = await predicate()
        if last:
            return last
        await asyncio.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s; last value: {last!r}")


def contact(
    external_id: str,
    *,
    channel: Channel = Channel.CHAT,
    intent: Intent | None = Intent.SUPPORT,
    tier: Tier = Tier.STANDARD,
    language: str = "en",
    site: str = "main",
    **extra: Any,
) -> ContactRequested:
    return ContactRequested(
        contact_id=contact_id_for("default", "test", external_id),
        site=site,
        source="test",
        external_id=external_id,
        channel=channel,
        customer=Customer(id=f"cust-{external_id}", tier=tier, language=language, name="Ada"),
        intent=intent,
        **extra,
    )


@dataclass
class Router:
    """A running router: HTTP client, its bus, its service object (for white-box checks only)."""

    app: Any
    client: httpx.AsyncClient
    url: str
    data_dir: Path

    @property
    def service(self) -> RouterService:
        return self.app.state.service  # type: ignore[no-any-return]

    @property
    def bus(self) -> EventBus:
        return self.app.state.runtime.bus  # type: ignore[no-any-return]

    async def emit(self, data: Any) -> None:
        await self.bus.emit(data, source="test")

    async def register(self, agent_id: str, **body: Any) -> tuple[dict[str, Any], dict[str, str]]:
        payload = {
            "agent_id": agent_id,
            "name": agent_id.title(),
            "roles": ["service"],
            "skills": {"billing": 3},
            "languages": ["en"],
            "capacity": {"chat": 1, "voice": 1},
            "status": "available",
        }
        payload.update(body)
        r = await self.client.post("/v1/agents", json=payload, headers=ADMIN)
        assert r.status_code == 201, r.text
        agent = r.json()
        return agent, {"Authorization": f"Bearer {agent['token']}"}

    async def queue_ids(self) -> list[str]:
        r = await self.client.get("/v1/queue", headers=ADMIN)
        return [item["contact_id"] for item in r.json()["items"]]

    async def offers_of(self, agent_id: str, headers: dict[str, str]) -> list[dict[str, Any]]:
        r = await self.client.get(f"/v1/agents/{agent_id}/offers", headers=headers)
        assert r.status_code == 200, r.text
        return r.json()["items"]  # type: ignore[no-any-return]

    async def wait_offer(self, agent_id: str, headers: dict[str, str], timeout: float = 10.0) -> dict[str, Any]:
        async def one() -> dict[str, Any] | None:
            offers = await self.offers_of(agent_id, headers)
            return offers[0] if offers else None

        return await eventually(one, timeout=timeout)  # type: ignore[no-any-return]

    async def timeline(self, contact_id: str) -> list[dict[str, Any]]:
        r = await self.client.get(f"/v1/contacts/{contact_id}/timeline", headers=ADMIN)
        assert r.status_code == 200, r.text
        return r.json()["events"]  # type: ignore[no-any-return]


@contextlib.asynccontextmanager
async def running_router(
    data_dir: Path, common_overrides: dict[str, Any] | None = None, wait_serving: bool = True, **overrides: Any
) -> AsyncIterator[Router]:
    settings_kwargs: dict[str, Any] = dict(
        admin_token=ADMIN_TOKEN,
        tick_interval_seconds=0.05,
        presence_grace_seconds=30.0,
        heartbeat_seconds=1.0,
    )
    clock = overrides.pop("clock", None)  # an injected clock (a callable returning seconds)
    settings_kwargs.update(overrides)
    settings = RouterSettings(**settings_kwargs)
    common = CommonSettings(
        **{
            "data_dir": data_dir,
            "log_json": False,
            "log_level": "WARNING",
            "embedded_partitions": 2,
            **(common_overrides or {}),
        }
    )
    app = create_app(settings, common, clock=clock)
    port = free_port()
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=1,
        lifespan="on",
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    deadline = time.monotonic() + 30
    while not server.started:
        if task.done():
            task.result()
            raise RuntimeError("uvicorn stopped during start-up")
        if time.monotonic() > deadline:
            raise RuntimeError("router did not start")
        await asyncio.sleep(0.02)
    url = f"http://127.0.0.1:{port}"
    async with httpx.AsyncClient(base_url=url, timeout=10) as client:
        try:
            if wait_serving:  # a standby answers probes at once but serves /v1 only once it owns the state
                while not serving(getattr(app.state, "service", None)):
                    if task.done() or time.monotonic() > deadline + 30:
                        raise RuntimeError("router did not become the owner")
                    await asyncio.sleep(0.02)
            yield Router(app=app, client=client, url=url, data_dir=data_dir)
        finally:
            server.should_exit = True
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(task, timeout=20)


@contextlib.asynccontextmanager
async def bare_service(
    database_url: str, *, strategy: Path | None = None, settings: RouterSettings | None = None, **engine_kwargs: Any
) -> AsyncIterator[RouterService]:
    """A RouterService on a migrated database, owner of its state and rebuilt, without HTTP or a bus: for
    tests (and bench/bench_lifecycle.py) that drive the use cases and the writer directly."""
    from services.router import leadership, rebuild
    from services.router.app import MIGRATIONS
    from services.router.strategy import load_strategy
    from shared import db

    await db.migrate(MIGRATIONS, database_url)
    engine = db.make_engine(database_url, **engine_kwargs)
    svc = RouterService(
        sessionmaker=db.make_sessionmaker(engine),
        settings=settings or RouterSettings(presence_grace_seconds=1e9),
        strategy=load_strategy(strategy),
    )
    try:
        await leadership.acquire(svc)
        async with svc.writer.lock:
            await rebuild.from_database(svc)
        yield svc
    finally:
        await svc.writes.stop()
        svc.close()
        await engine.dispose()


def chat_agent(name: str) -> AgentProfile:
    """A service agent for one chat at a time, on the main site: the plainest agent there is."""
    return AgentProfile(
        name=name,
        roles=[Role.SERVICE],
        primary_role=Role.SERVICE,
        skills={},
        languages=["en"],
        capacity={Channel.CHAT: 1},
        site="main",
    )


@pytest.fixture
async def router(tmp_path: Path) -> AsyncIterator[Router]:
    async with running_router(tmp_path / "data") as r:
        yield r


@dataclass
class SSEReader:
    """Reads an agent's event stream in the background and collects the events."""

    events: list[tuple[str, Any]] = field(default_factory=list)
    comments: int = 0
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    async def wait_for(
        self, name: str, predicate: Callable[[Any], bool] = lambda _d: True, timeout: float = 10.0
    ) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            for event, data in self.events:
                if event == name and predicate(data):
                    return data
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no {name!r} event within {timeout}s; got {[e for e, _ in self.events]}")
            self.changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), timeout=remaining)


@contextlib.asynccontextmanager
async def agent_stream(
    url: str, agent_id: str, headers: dict[str, str], params: dict[str, str] | None = None
) -> AsyncIterator[SSEReader]:
    reader = SSEReader()
    opened = asyncio.Event()
    failure: list[BaseException] = []

    async def run() -> None:
        try:
            async with httpx.AsyncClient(base_url=url, timeout=None) as client:
                async with client.stream(
                    "GET", f"/v1/agents/{agent_id}/stream", headers=headers, params=params
                ) as resp:
                    assert resp.status_code == 200, await resp.aread()
                    opened.set()
                    event, data = "message", list[str]()
                    async for line in resp.aiter_lines():
                        if line == "":
                            if data:
                                reader.events.append((event, json.loads("\n".join(data))))
                                reader.changed.set()
                            event, data = "message", []
                        elif line.startswith(":"):
                            reader.comments += 1
                            reader.changed.set()
                        elif line.startswith("event:"):
                            event = line[6:].strip()
                        elif line.startswith("data:"):
                            data.append(line[5:].strip())
        except (asyncio.CancelledError, httpx.HTTPError):
            pass
        except BaseException as exc:  # surface assertion errors to the test
            failure.append(exc)
            opened.set()

    task = asyncio.create_task(run())
    await asyncio.wait_for(opened.wait(), timeout=10)
    if failure:
        raise failure[0]
    try:
        yield reader
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def write_strategy(path: Path, **changes: Any) -> Path:
    """The shipped default strategy with top-level changes (nested dicts are merged one level deep)."""
    import yaml

    from services.router.strategy import DEFAULT_STRATEGY_PATH

    doc = yaml.safe_load(DEFAULT_STRATEGY_PATH.read_text())
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(doc.get(key), dict):
            merged = dict(doc[key])
            for k, v in value.items():
                if isinstance(v, dict) and isinstance(merged.get(k), dict):
                    merged[k] = {**merged[k], **v}
                else:
                    merged[k] = v
            doc[key] = merged
        else:
            doc[key] = value
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


@contextlib.asynccontextmanager
async def collect_events(bus: EventBus, topic: str, group: str) -> AsyncIterator[list[Any]]:
    """Subscribe a fresh consumer group to ``topic`` and collect the typed payloads it receives."""
    seen: list[Any] = []

    async def handler(envelope: Any, _record: Any) -> None:
        seen.append(envelope.payload)

    sub = await bus.subscribe([topic], group, handler, from_beginning=True)
    try:
        yield seen
    finally:
        await sub.stop()


@pytest.fixture
async def postgres_url() -> AsyncIterator[str]:
    async with fresh_database("sb_router") as url:
        yield url


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
async def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """A fresh router database on each of the two: a SQLite file, and PostgreSQL when it is there."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'router.sqlite3'}"
    else:
        async with fresh_database("sb_router") as url:
            yield url


@pytest.fixture
async def service(database_url: str) -> AsyncIterator[RouterService]:
    """A bare router service (``bare_service``) on ``database_url``."""
    async with bare_service(database_url) as svc:
        yield svc
