"""Issue 2's promise: ``switchboard run`` serves three services; a contact reaches the router's queue."""

from __future__ import annotations

import re
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.e2e.conftest import ROOT, free_port, service_env, wait_until

CONTACT = {
    "external_id": "CA-e2e-1",
    "source": "twilio",
    "channel": "voice",
    "customer": {"id": "cust-42", "phone": "+4930901820", "tier": "premium", "language": "en"},
    "intent": "support",
}


def test_switchboard_run_serves_three_services_and_routes_a_contact(tmp_path: Path) -> None:
    ports = {"intake": free_port(), "router": free_port(), "callback": free_port()}
    env = service_env(tmp_path / "unused")
    env.pop("SWITCHBOARD_ADMIN_TOKEN")  # `switchboard run` generates the operator token itself
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "services.cli",
            "run",
            "--data-dir",
            str(tmp_path / "data"),
            "--intake-port",
            str(ports["intake"]),
            "--router-port",
            str(ports["router"]),
            "--callback-port",
            str(ports["callback"]),
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stdout is not None
        banner = []
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            banner.append(line)
            if "Ctrl-C" in line or not line:
                break
        text = "".join(banner)
        for name, port in ports.items():
            assert f"http://127.0.0.1:{port}/docs" in text, text
            url = f"http://127.0.0.1:{port}"
            assert httpx.get(f"{url}/healthz").status_code == 200
            wait_until(lambda url=url: httpx.get(f"{url}/readyz").status_code == 200)
            assert httpx.get(f"{url}/docs").status_code == 200
            spec = httpx.get(f"{url}/openapi.json").json()
            assert spec["paths"], name
            assert "switchboard_bus_publish_seconds" in httpx.get(f"{url}/metrics").text or name != "intake"

        # One operator token, generated, printed, kept owner-only, working on all three services.
        match = re.search(r"admin token \(all services\): (\S+)", text)
        assert match, text
        admin = {"Authorization": f"Bearer {match.group(1)}"}
        token_file = tmp_path / "data" / "admin-token"
        assert token_file.read_text().strip() == match.group(1)
        assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
        callback = f"http://127.0.0.1:{ports['callback']}"
        assert httpx.get(f"{callback}/v1/callbacks").status_code == 401
        assert httpx.get(f"{callback}/v1/callbacks", headers=admin).status_code == 200

        intake, router = f"http://127.0.0.1:{ports['intake']}", f"http://127.0.0.1:{ports['router']}"
        accepted = httpx.post(f"{intake}/v1/contacts", json=CONTACT)
        assert accepted.status_code == 202, accepted.text
        contact_id = accepted.json()["contact_id"]

        def queued() -> bool:
            body = httpx.get(f"{router}/v1/queue", headers=admin).json()
            items = body["items"] if isinstance(body, dict) else body
            return any(item["contact_id"] == contact_id for item in items)

        wait_until(queued, timeout=10)
        # Every data file (databases, their WAL, the bus log) holds phone numbers: owner-only.
        data_files = [p for p in (tmp_path / "data").iterdir() if p.is_file()]
        assert any(p.name == "bus.sqlite3" for p in data_files)
        assert {p.name: oct(stat.S_IMODE(p.stat().st_mode)) for p in data_files} == {
            p.name: oct(0o600) for p in data_files
        }
    finally:
        proc.send_signal(signal.SIGINT)  # what Ctrl-C does
        try:
            rc = proc.wait(timeout=40)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    assert rc == 0
    for port in ports.values():  # all three are gone, not orphaned
        try:
            httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
        except httpx.HTTPError:
            continue
        raise AssertionError(f"a service still answers on port {port} after Ctrl-C")
