"""The benchmarks still run: a benchmark nobody runs rots, and ``bench_intake`` is also a check.

Each runs here in a tiny configuration as its own process, as a reader would run it. The figures are
not asserted (timed tests on a shared machine prove nothing); what is asserted is that the table is
printed, every row is there, and ``bench_intake``'s durability checks (every ``202`` in the bus log)
passed, which it must at any size.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from tests.e2e.conftest import ROOT


def run_bench(*args: str, timeout: float = 240, returncode: int = 0) -> str:
    proc = subprocess.run(
        [sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False
    )
    assert proc.returncode == returncode, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout + proc.stderr


def test_every_setting_a_benchmark_sets_is_one_the_services_read() -> None:
    """A misspelt variable is silently ignored: ``bench_e2e`` once meant to turn intake's rate limits off
    with ``..._RATE_LIMIT_ENABLED`` (the setting is ``rate_limits_enabled``), and from 100/s intake
    answered its posts 429."""
    from tests.deploy.support import known_env_names

    known = known_env_names()
    for path in sorted((ROOT / "bench").glob("*.py")):
        names = set(re.findall(r"SWITCHBOARD_[A-Z_]*[A-Z](?![A-Z_*])", path.read_text()))
        assert not names - known, f"{path.name}: no settings class reads {sorted(names - known)}"


def test_intake_benchmark_prints_every_row_and_every_202_is_in_the_bus_log() -> None:
    out = run_bench("bench/bench_intake.py", "--seconds", "0.5", "--rounds", "1", "--connections", "8")
    for label in (
        "plain ASGI, no framework (reference)",
        "bare FastAPI endpoint (baseline)",
        "FastAPI + ContactIn, not published",
        "intake, store+bus answer at once (ref)",
        "intake POST /v1/contacts (durable)",
        "intake, durable, I/O on the loop (ref)",
    ):
        row = next((line for line in out.splitlines() if line.startswith(label)), None)
        assert row is not None, f"missing row {label!r}:\n{out}"
        accepted = int(row[len(label) :].split()[0])
        assert accepted > 0, row  # each server answered 202s
    # Both durable rows: every 202 they answered is in their own bus log.
    checks = re.findall(r"^(intake|sync) 202s in timed rounds\s+(\d+)\n\s+of which in the bus log\s+(\d+)", out, re.M)
    assert [name for name, _, _ in checks] == ["intake", "sync"], out
    for _, answered, in_log in checks:
        assert int(answered) > 0 and int(in_log) == int(answered), out
    assert re.search(r"ratio intake / bare\s+\d+\.\d+x", out), out


def test_bus_benchmark_prints_its_table() -> None:
    out = run_bench("bench/bench_bus.py", "--events", "200")
    assert re.search(r"ratio bus / baseline\s+\d+\.\d+x", out), out
    assert re.search(r"cross-process publish->handler p99 \(ms\)\s+\d", out), out


def test_routing_benchmark_prints_its_table() -> None:
    out = run_bench("bench/bench_routing.py", "--quick", "--agents", "1000", "--waiting", "2000", "--cycles", "200")
    assert re.search(r"^\s+1000\s+\d+\s+\d+\s+\d+", out, re.MULTILINE), out


def test_http_stack_benchmark_prints_every_way() -> None:
    """Each way answered every request 200 (the benchmark stops on any other status), through the real
    app: its lifespan, an agent registered over the API and that agent's own token."""
    out = run_bench("bench/bench_http_stack.py", "--requests", "20", "--rounds", "1")
    for way in ("router app", "without own middleware", "floor: bare Starlette"):
        assert re.search(rf"^{re.escape(way)}\s+\d+\s+\d+\s+\d+$", out, re.MULTILINE), out


def test_end_to_end_benchmark_offers_every_202_on_both_servers() -> None:
    """The whole path (intake -> router -> agent's stream) as real processes, and the relay baseline."""
    out = run_bench("bench/bench_e2e.py", "--agents", "3", "--rates", "4", "--duration", "1.5", "--bound", "10")
    rows = {
        label: line.split()
        for label in ("baseline relay", "switchboard")
        for line in out.splitlines()
        if line.startswith(label + " ")
    }
    assert set(rows) == {"baseline relay", "switchboard"}, out
    for label, cells in rows.items():
        words = len(label.split())
        posted, accepted, offered, late = (int(x) for x in cells[words + 1 : words + 5])
        assert accepted == posted > 0, out  # every post answered 202
        assert offered == accepted and late == 0, out  # every 202 reached an agent's stream in time
        # Who set the pace: intake's CPU per contact (the relay has no intake), the load generator's
        # and the machine's share of CPU, read from /proc.
        intake, generator, machine = cells[words + 13 :]
        assert (intake == "-") == (label == "baseline relay") and (intake == "-" or float(intake) > 0), out
        assert float(generator) >= 0 and 0 < float(machine) <= 100, out
    assert re.search(r"^peak sustained \(switchboard", out, re.MULTILINE), out


def test_end_to_end_benchmark_refuses_several_routers_on_the_embedded_default() -> None:
    out = run_bench("bench/bench_e2e.py", "--routers", "1,2", returncode=2)
    assert "N must be 1 there" in out, out


def test_end_to_end_benchmark_with_two_active_routers_offers_every_202() -> None:
    """``--routers 2`` on Kafka + PostgreSQL: two routers sharing the domains, agents' calls round-robin
    (so some are proxied to the owner), every 202 offered, the scaling table printed."""
    kafka = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    postgres = os.environ.get("SWITCHBOARD_TEST_POSTGRES_URL")
    if not kafka or not postgres:
        pytest.skip(
            "several routers need Kafka and PostgreSQL: set KAFKA_BOOTSTRAP_SERVERS and SWITCHBOARD_TEST_POSTGRES_URL"
        )
    out = run_bench(
        "bench/bench_e2e.py",
        *("--kafka", kafka, "--postgres", postgres, "--routers", "2", "--no-baseline"),
        *("--agents", "12", "--rates", "4", "--duration", "1.5", "--bound", "10"),
        timeout=120,
    )
    row = next((line.split() for line in out.splitlines() if line.startswith("2 routers ")), None)
    assert row is not None, out
    posted, accepted, offered, late = (int(x) for x in row[3:7])
    assert accepted == posted > 0, out
    assert offered == accepted and late == 0, out
    assert re.search(r"^# 2 routers: partitions \[\[[\d, ]+\], \[[\d, ]+\]\]", out, re.MULTILINE), out
    assert re.search(r"'proxied': [1-9]", out), out  # round-robin reached the non-owner, which proxied
    assert re.search(r"^throughput scaling", out, re.MULTILINE), out
    assert re.search(r"^\s+2\s+(4|-) \|", out, re.MULTILINE), out  # the figures are not asserted
