"""The real service process (uvicorn) on the embedded bus: killed with SIGKILL right after accepting a
request, and events published while it is down; after a restart nothing is lost and the scheduler
picks up from the database."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from shared.bus.base import Record
from shared.bus.embedded import EmbeddedBus
from shared.events import AgentStatus, Envelope
from shared.topics import CALLBACKS, CONTACTS
from tests.callback.helpers import agent_status, requested
from tests.conftest import ADMIN_HEADERS, TEST_ADMIN_TOKEN

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]
# Open around the clock, customers callable at any hour: the test does not depend on when it runs.
ALWAYS_OPEN = {
    "default": {
        "timezone": "UTC",
        "hours": {d: ["00:00-24:00"] for d in ("mon", "tue", "wed", "thu", "fri", "sat", "sun")},
    }
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class CallbackProcess:
    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> CallbackProcess:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHBOARD_")}
        env["SWITCHBOARD_ADMIN_TOKEN"] = TEST_ADMIN_TOKEN  # no service starts without one
        env.update(
            PYTHONPATH=str(ROOT),
            SWITCHBOARD_DATA_DIR=str(self.data_dir),
            SWITCHBOARD_LOG_LEVEL="WARNING",
            SWITCHBOARD_CALLBACK_SITES_JSON=json.dumps(ALWAYS_OPEN),
            SWITCHBOARD_CALLBACK_CUSTOMER_CALLING_HOURS="",
            SWITCHBOARD_CALLBACK_CUTOFF_MINUTES="0",
            SWITCHBOARD_CALLBACK_POLL_INTERVAL_SECONDS="0.2",
        )
        log = (self.data_dir / "callback.log").open("ab")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "services.callback.app:create_app",
                "--factory",
                "--port",
                str(self.port),
                "--log-level",
                "warning",
            ],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError((self.data_dir / "callback.log").read_text()[-3000:])
            try:
                if httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise AssertionError("callback did not become ready")

    def stop(self, kill: bool = False) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill() if kill else self.proc.terminate()
            self.proc.wait(timeout=20)


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[list[CallbackProcess]]:
    started: list[CallbackProcess] = []
    yield started
    for p in started:
        p.stop(kill=True)


async def wait_for(check, timeout: float = 20.0):  # type: ignore[no-untyped-def]
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        result = await check()
        if result:
            return result
        await asyncio.sleep(0.1)
    raise AssertionError("condition not met in time")


async def test_kill_9_loses_nothing(tmp_path: Path, processes: list[CallbackProcess]) -> None:
    first = CallbackProcess(tmp_path).start()
    processes.append(first)
    async with httpx.AsyncClient(base_url=first.url, headers=ADMIN_HEADERS) as http:
        r = await http.post("/v1/callbacks", json={"customer": {"id": "before-crash"}})
        assert r.status_code == 201
        accepted_id = r.json()["id"]
    first.stop(kill=True)  # SIGKILL: maybe before the outbox relay published callback.scheduled

    bus = EmbeddedBus(tmp_path / "bus.sqlite3")
    await bus.start()
    try:
        now = datetime.now(UTC)
        await bus.emit(requested("while-down", now, site="main").payload, source="switchboard/intake")
        await bus.emit(agent_status("a1", AgentStatus.AVAILABLE, now).payload, source="switchboard/router")

        second = CallbackProcess(tmp_path).start()
        processes.append(second)
        async with httpx.AsyncClient(base_url=second.url, headers=ADMIN_HEADERS) as http:

            async def both() -> list[dict[str, object]]:
                rows = (await http.get("/v1/callbacks")).json()
                return rows if len(rows) == 2 else []

            rows = await wait_for(both)
            by_customer = {row["customer"]["id"]: row for row in rows}  # type: ignore[index]
            assert by_customer["before-crash"]["id"] == accepted_id

            async def one_released() -> bool:
                rows = (await http.get("/v1/callbacks", params={"status": "released"})).json()
                return len(rows) == 1

            await wait_for(one_released)  # one free agent: exactly one released
            await asyncio.sleep(0.5)
            assert len((await http.get("/v1/callbacks", params={"status": "released"})).json()) == 1

        seen: list[Envelope] = []

        async def collect(env: Envelope, _r: Record) -> None:
            seen.append(env)

        await bus.subscribe([CALLBACKS, CONTACTS], "test-audit", collect)

        async def published() -> bool:
            kinds = [e.type for e in seen]
            return kinds.count("switchboard.callback.scheduled.v1") >= 2 and "switchboard.callback.due.v1" in kinds

        await wait_for(published)
        scheduled = [e for e in seen if e.type == "switchboard.callback.scheduled.v1"]
        assert {e.data["customer"]["id"] for e in scheduled} == {"before-crash", "while-down"}
        second.stop()
    finally:
        await bus.stop()
