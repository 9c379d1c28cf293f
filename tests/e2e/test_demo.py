"""``switchboard demo`` briefly against real intake, router and callback processes: it registers the team,
its simulated agents answer offers on their streams and complete contacts, and it says where to look."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.conftest import TEST_ADMIN_TOKEN
from tests.e2e.conftest import ROOT, ServiceProcess, service_env

pytestmark = pytest.mark.e2e
ADMIN = {"Authorization": f"Bearer {TEST_ADMIN_TOKEN}"}


def test_demo_plays_traffic_that_agents_complete(tmp_path: Path) -> None:
    started: list[ServiceProcess] = []
    try:
        callback = ServiceProcess("callback", tmp_path).start()
        started.append(callback)
        router = ServiceProcess("router", tmp_path, {"SWITCHBOARD_ROUTER_CALLBACK_URL": callback.url}).start()
        started.append(router)
        intake = ServiceProcess("intake", tmp_path).start()
        started.append(intake)
        ports = {s.service: str(s.port) for s in started}
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "services.cli",
                "demo",
                "--no-start",
                "--duration",
                "8",
                "--rate",
                "90",
                "--handle-seconds",
                "0.5",
                "--seed",
                "7",
                "--intake-port",
                ports["intake"],
                "--router-port",
                ports["router"],
                "--callback-port",
                ports["callback"],
            ],
            cwd=ROOT,
            env={**service_env(tmp_path), "COLUMNS": "200"},
            capture_output=True,
            text=True,
            timeout=120,
        )
        out = result.stdout
        assert result.returncode == 0, out + result.stderr
        assert f"{router.url}/ops/dashboard" in out and f"{router.url}/agent" in out
        assert re.search(r"demo-ana\s+\S+\.\S+\.\S+", out), "the agents' tokens are printed for the console"
        assert "switchboard demo: summary" in out and "service level" in out

        agents = httpx.get(f"{router.url}/v1/agents", headers=ADMIN).json()["items"]
        roles = {r for a in agents if a["agent_id"].startswith("demo-") for r in a["roles"]}
        assert roles == {"service", "sales", "brand_ambassador"}
        metrics = httpx.get(f"{router.url}/metrics").text
        completed = sum(
            float(m.group(1))
            for m in re.finditer(r"^switchboard_router_completions_total\{[^}]*\} (\S+)$", metrics, re.M)
        )
        assert completed >= 1, "the simulated agents completed no contact"
        match = re.search(r"completed / abandoned\s*│\s*(\d+) /", out)
        assert match and int(match.group(1)) >= 1, out

        # A second run reuses the registered team (fresh tokens), it does not fail on "already exists".
        again = subprocess.run(
            [
                sys.executable,
                "-m",
                "services.cli",
                "demo",
                "--no-start",
                "--duration",
                "1",
                "--rate",
                "6",
                "--intake-port",
                ports["intake"],
                "--router-port",
                ports["router"],
                "--callback-port",
                ports["callback"],
            ],
            cwd=ROOT,
            env=service_env(tmp_path),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert again.returncode == 0, again.stdout + again.stderr
    finally:
        for proc in started:
            proc.terminate()


def test_demo_without_services_and_no_start_says_so(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "services.cli",
            "demo",
            "--no-start",
            "--duration",
            "1",
            "--router-port",
            "1",
            "--intake-port",
            "2",
            "--callback-port",
            "3",
        ],
        cwd=ROOT,
        env=service_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1 and "switchboard run" in result.stderr


def test_demo_starts_the_services_itself_when_none_answer_and_stops_them(tmp_path: Path) -> None:
    """The newcomer's path: no services running; the demo starts all three on the embedded default, with
    the admin token of the data dir, plays traffic, and leaves nothing running."""
    from tests.e2e.conftest import free_port

    ports = [str(free_port()) for _ in range(3)]
    env = {k: v for k, v in service_env(tmp_path).items() if k != "SWITCHBOARD_ADMIN_TOKEN"}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "services.cli",
            "demo",
            "--duration",
            "4",
            "--rate",
            "60",
            "--handle-seconds",
            "0.5",
            "--data-dir",
            str(tmp_path / "sb"),
            "--intake-port",
            ports[0],
            "--router-port",
            ports[1],
            "--callback-port",
            ports[2],
        ],
        cwd=ROOT,
        env={**env, "COLUMNS": "200"},
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    token = (tmp_path / "sb" / "admin-token").read_text().strip()
    assert "Starting the services" in result.stdout and token in result.stdout
    assert f"http://127.0.0.1:{ports[1]}/agent" in result.stdout
    assert "switchboard demo: summary" in result.stdout
    for port in ports:  # stopped again
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
