"""Real processes and the real embedded bus: restart-proof idempotency, and a subscriber receiving events."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from shared.bus.base import Record
from shared.bus.embedded import EmbeddedBus
from shared.events import ContactRequested, Envelope, contact_id_for
from shared.topics import CONTACTS
from tests.conftest import TEST_ADMIN_TOKEN
from tests.intake.conftest import SECRET, bus_events, contact_payload, sign

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.e2e


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Uvicorn:
    """``python -m uvicorn services.intake.app:create_app --factory`` on a free port."""

    def __init__(self, data_dir: Path, **env: str) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHBOARD_")}
        self.env["SWITCHBOARD_ADMIN_TOKEN"] = TEST_ADMIN_TOKEN  # no service starts without one
        self.env["SWITCHBOARD_INTAKE_LISTEN_HOST"] = "127.0.0.1"  # uvicorn binds loopback by default
        self.env.update(
            PYTHONPATH=str(ROOT), SWITCHBOARD_DATA_DIR=str(data_dir), SWITCHBOARD_LOG_LEVEL="WARNING", **env
        )
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = data_dir.parent / f"intake-{self.port}.log"

    def start(self) -> Uvicorn:
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "services.intake.app:create_app",
                "--factory",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
            ],
            cwd=ROOT,
            env=self.env,
            stdout=self.log.open("ab"),
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"intake exited: {self.log.read_text()[-3000:]}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise AssertionError(f"intake not ready: {self.log.read_text()[-3000:]}")

    def kill(self) -> None:
        """SIGKILL: a crash, no shutdown hooks."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def processes() -> Iterator[list[Uvicorn]]:
    started: list[Uvicorn] = []
    yield started
    for p in started:
        p.kill()


def signed_post(url: str, payload: dict[str, object]) -> httpx.Response:
    import json

    body = json.dumps(payload).encode()
    headers = {"content-type": "application/json", **sign(body, int(time.time()))}
    return httpx.post(f"{url}/v1/contacts", content=body, headers=headers, timeout=10)


def test_idempotency_survives_kill_9_and_restart(tmp_path: Path, processes: list[Uvicorn]) -> None:
    data = tmp_path / "data"
    env = {"SWITCHBOARD_INTAKE_SOURCE_SECRETS": f'{{"acme": "{SECRET}"}}'}
    first_proc = Uvicorn(data, **env).start()
    processes.append(first_proc)
    first = signed_post(first_proc.url, contact_payload("call-restart"))
    assert first.status_code == 202, first.text
    first_proc.kill()  # the instant after the 202: the answer must already be durable

    second_proc = Uvicorn(data, **env).start()
    processes.append(second_proc)
    again = signed_post(second_proc.url, contact_payload("call-restart"))
    assert again.status_code == 202
    assert again.json()["contact_id"] == first.json()["contact_id"]
    assert again.json()["duplicate"] is True
    events = bus_events(data, CONTACTS)
    assert [env.subject for _, _, env in events] == [first.json()["contact_id"]]


async def test_a_subscriber_receives_the_contact_through_the_embedded_bus(
    tmp_path: Path, processes: list[Uvicorn]
) -> None:
    """Intake in its own process; a router-like consumer in this one, on the same bus file."""
    data = tmp_path / "data"
    # "hamburg" is a configured site: intake refuses sites nobody configured (issue 12).
    proc = Uvicorn(data, SWITCHBOARD_SITES_JSON='{"sites": {"hamburg": {}}}').start()
    processes.append(proc)
    bus = EmbeddedBus(data / "bus.sqlite3")
    await bus.start()
    received: asyncio.Queue[tuple[Envelope, Record]] = asyncio.Queue()

    async def handler(env: Envelope, record: Record) -> None:
        await received.put((env, record))

    try:
        sub = await bus.subscribe([CONTACTS], "router-test", handler)
        await asyncio.wait_for(sub.ready.wait(), 10)
        async with httpx.AsyncClient(base_url=proc.url) as client:
            resp = await client.post("/v1/contacts", json=contact_payload("e2e-1", site="hamburg", intent="purchase"))
            assert resp.status_code == 202
        env, record = await asyncio.wait_for(received.get(), 10)
    finally:
        await bus.stop()
    assert record.key == "default/hamburg"
    event = env.payload
    assert isinstance(event, ContactRequested)
    assert event.contact_id == contact_id_for("default", "acme", "e2e-1")
    assert event.expected_handling_seconds == 600 and event.intent == "purchase"
    assert env.source == "switchboard/intake"
