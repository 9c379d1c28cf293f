"""Nothing a client can send gets a 500: schemathesis fuzzes each live service from its OpenAPI spec.

Real processes on the stack under test; the check is ``not_a_server_error`` (4xx with a reason is the
right answer to bad input). The agent stream is left out: it is an endless response by design.
The seed is fixed so CI is deterministic; change it (or drop it) locally to explore further.

Each service runs with its authentication configured (``AUTH_HEADERS``: the operator token, which router
and callback check; intake's webhooks authenticate by signature and run on loopback without secrets),
intake without rate limits (a 429 would end the fuzzing of an endpoint after a few examples), and every
answer must come within ``MAX_RESPONSE_SECONDS``: no request waits past the publish timeout (5 s).
The hand-made hostile inputs of issue 13 are in ``test_hostile_inputs.py``.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable

import pytest

from tests.e2e.conftest import ServiceProcess
from tests.e2e.test_contact_to_agent import ADMIN, ROUTER_ENV

SERVICE_ENV: dict[str, dict[str, str]] = {
    "intake": {"SWITCHBOARD_INTAKE_RATE_LIMITS_ENABLED": "false"},
    "router": ROUTER_ENV,
    "callback": {},
}
AUTH_HEADERS: dict[str, list[str]] = {
    "intake": [],
    "router": ["-H", f"Authorization: Bearer {ADMIN}"],
    "callback": ["-H", f"Authorization: Bearer {ADMIN}"],
}
MAX_RESPONSE_SECONDS = 6


@pytest.mark.parametrize("service", ["intake", "router", "callback"])
def test_no_input_gets_a_server_error(service: str, services: Callable[..., ServiceProcess]) -> None:
    env = dict(SERVICE_ENV[service])
    if service == "router":  # /v1/ops/promises relays to a callback service: a real one, or it answers 502
        env["SWITCHBOARD_ROUTER_CALLBACK_URL"] = services("callback").url
    proc = services(service, env=env)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "schemathesis.cli",
            "run",
            f"{proc.url}/openapi.json",
            "--checks",
            "not_a_server_error",
            "--max-examples",
            "25",
            "--seed",
            "20261125",
            "--request-timeout",
            "10",
            "--max-response-time",
            str(MAX_RESPONSE_SECONDS),
            "--exclude-path-regex",
            "/stream$",
            *AUTH_HEADERS[service],
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    assert " passed" in result.stdout and "generated" in result.stdout
