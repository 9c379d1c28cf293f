"""Helpers for end-to-end tests: real processes on free ports, talking HTTP."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import TEST_ADMIN_TOKEN
from tests.postgres import fresh_database

ROOT = Path(__file__).resolve().parents[2]
SERVICES = ("intake", "router", "callback")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(predicate: Callable[[], Any], timeout: float = 20.0, interval: float = 0.05) -> Any:
    """Poll until ``predicate()`` is truthy; return its value or fail with the last one seen."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = predicate()
        except httpx.HTTPError as exc:
            last = exc
        else:
            if last:
                return last
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s; last value: {last!r}")


# End-to-end tests must not depend on when they run: every site is open around the clock unless a test
# sets its own calendar (otherwise a night-time CI run would turn each contact into a callback promise).
WEEK = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
ALWAYS_OPEN_SITES = json.dumps({"default": {"timezone": "UTC", "hours": {d: ["00:00-24:00"] for d in WEEK}}})


def midday_zone(now: datetime | None = None) -> str:
    """A fixed-offset zone in which it is about noon now. A test whose customers (and site) live there
    makes promises for today whenever it runs: near midnight UTC a Berlin customer's "today" is already
    over (calling hours, the cutoff) and the promise is rightly for tomorrow."""
    hour = (now or datetime.now(UTC)).hour
    offset = 12 - hour  # -11 .. +12
    return f"Etc/GMT{-offset:+d}" if offset else "Etc/GMT"  # POSIX sign: Etc/GMT-5 is UTC+5


def midday_sites() -> str:
    """SWITCHBOARD_SITES_JSON: the default site open around the clock, in ``midday_zone()``."""
    return json.dumps({"default": {"timezone": midday_zone(), "hours": {d: ["00:00-24:00"] for d in WEEK}}})


def service_env(data_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHBOARD_")}
    env["SWITCHBOARD_ADMIN_TOKEN"] = TEST_ADMIN_TOKEN  # no service starts without one
    env.update(
        PYTHONPATH=str(ROOT),
        SWITCHBOARD_DATA_DIR=str(data_dir),
        SWITCHBOARD_LOG_LEVEL="WARNING",
        SWITCHBOARD_SITES_JSON=ALWAYS_OPEN_SITES,
    )
    env.update(extra)
    return env


class ServiceProcess:
    """One service under uvicorn in its own process (``kill()`` is SIGKILL: a crash, not a shutdown)."""

    def __init__(self, service: str, data_dir: Path, env: dict[str, str] | None = None) -> None:
        self.service = service
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = service_env(data_dir, **(env or {}))
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = data_dir / f"{service}-{self.port}.log"

    def start(self, timeout: float = 30.0) -> ServiceProcess:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "services.cli", self.service, "--port", str(self.port)],
            cwd=ROOT,
            env=self.env,
            stdout=self.log.open("ab"),
            stderr=subprocess.STDOUT,
        )
        wait_until(lambda: self._ready(), timeout=timeout)
        return self

    def _ready(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(f"{self.service} exited: {self.log.read_text()[-3000:]}")
        return httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def terminate(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture(params=["embedded", "kafka+postgres"])
async def stack_env(request: pytest.FixtureRequest) -> AsyncIterator[dict[str, str]]:
    """Which stack the services run on: the embedded default (SQLite + embedded bus), or production's
    (Kafka + one PostgreSQL database per service). The second runs when both are given, else it skips."""
    if request.param == "embedded":
        yield {}
        return
    kafka = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    postgres = os.environ.get("SWITCHBOARD_TEST_POSTGRES_URL")
    if not kafka or not postgres:
        pytest.skip(
            "production-stack leg (Kafka + PostgreSQL): set KAFKA_BOOTSTRAP_SERVERS=host:port and "
            "SWITCHBOARD_TEST_POSTGRES_URL=postgresql+asyncpg://user@host:5432/db to run it"
        )
    suffix = uuid.uuid4().hex[:10]
    async with contextlib.AsyncExitStack() as stack:
        urls = {svc: await stack.enter_async_context(fresh_database(f"sb_e2e_{svc}")) for svc in SERVICES}
        yield {
            "SWITCHBOARD_BUS": "kafka",
            "SWITCHBOARD_KAFKA_BOOTSTRAP_SERVERS": kafka,
            "SWITCHBOARD_KAFKA_PARTITIONS": "2",
            "SWITCHBOARD_TOPIC_PREFIX": f"e2e-{suffix}-",
            **{f"SWITCHBOARD_{svc.upper()}_DATABASE_URL": url for svc, url in urls.items()},
        }


@pytest.fixture
def services(tmp_path: Path, stack_env: dict[str, str]) -> Iterator[Callable[..., ServiceProcess]]:
    """Start a service as a real process on the stack under test; all are SIGKILLed at the end."""
    started: list[ServiceProcess] = []

    def start(service: str, env: dict[str, str] | None = None, data_dir: Path | None = None) -> ServiceProcess:
        proc = ServiceProcess(service, data_dir or tmp_path, {**stack_env, **(env or {})}).start()
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.kill()
