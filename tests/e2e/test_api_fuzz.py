"""Nothing a client can send gets a 500: schemathesis fuzzes each live service from its OpenAPI spec.

Real processes on the stack under test; the check is ``not_a_server_error`` (4xx with a reason is the
right answer to bad input). The agent stream is left out: it is an endless response by design.
The seed is fixed so CI is deterministic; change it (or drop it) locally to explore further.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable

import pytest

from tests.e2e.conftest import ServiceProcess
from tests.e2e.test_contact_to_agent import ADMIN, ROUTER_ENV


@pytest.mark.parametrize("service", ["intake", "router", "callback"])
def test_no_input_gets_a_server_error(service: str, services: Callable[..., ServiceProcess]) -> None:
    proc = services(service, env=ROUTER_ENV if service == "router" else None)
    result = subprocess.run(
        [sys.executable, "-m", "schemathesis.cli", "run", f"{proc.url}/openapi.json",
         "--checks", "not_a_server_error", "--max-examples", "25", "--seed", "20261125",
         "--request-timeout", "10", "--exclude-path-regex", "/stream$",
         "-H", f"Authorization: Bearer {ADMIN}"],
        capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    assert " passed" in result.stdout and "generated" in result.stdout
