"""Intake throughput: accepted webhooks per second on one uvicorn worker vs a bare FastAPI endpoint.

Both servers run side by side in the same run, under the same load generator (keep-alive HTTP/1.1
connections driven by raw asyncio streams, so the client costs little CPU), in alternating rounds
because the machine is noisy. Every request carries a new external id and a new phone number, so
every intake answer is a first-time ``202``: validated, enriched, published with the bus's durable
ack (group commit) and recorded in the idempotency store. After the run the bus log is counted:
every 202 must be there, or the benchmark fails.

Rows: the *bare* endpoint (``await request.json()`` -> 202) is the baseline of the ratio. Three
references put it in proportion: the same answer from a plain ASGI callable on uvicorn (what HTTP
costs without any framework: intake's fast path skips FastAPI's per-request stack, see
``services/intake/api/direct.py``); the bare server validating the same ``ContactIn`` model as a
FastAPI body parameter (nothing published); and intake itself with its store and bus answering at
once (everything but the durable I/O: the ceiling any durable path stays under). Together they split
intake's cost into "validating a contact", "the rest of intake's work" and "making it durable". A last
reference bounds that last part from below: intake durable, with its SQLite work done by the event loop
itself (no thread hand-offs at all, so the best any scheduling of that work can do); its 202s are
checked against its own bus log too.

Intake runs twice, side by side: with its default settings (FastAPI's routing, public APIs only) and with
``SWITCHBOARD_INTAKE_FAST_PATH=true`` (direct dispatch and private phonenumbers helpers, see
``docs/decisions/0001-intake-fast-path.md``); both are durable and both are checked against their bus logs.

The server CPU column (user+system of the server process per answer, all threads) is the number to
read on a shared machine: throughput moves with the neighbours' load, CPU per request much less.

    python bench/bench_intake.py [--connections 64] [--seconds 5] [--rounds 3]

Target: intake >= 0.6x the bare endpoint.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]

BARE_APP = """
from typing import Any
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from services.intake.schemas import ContactIn

def create_app() -> FastAPI:
    app = FastAPI()

    @app.get("/readyz")
    async def ready() -> dict[str, str]:
        return {"status": "ready"}

    @app.post("/v1/contacts", status_code=202)
    async def contact(request: Request) -> JSONResponse:
        body: dict[str, Any] = await request.json()
        return JSONResponse({"contact_id": body["external_id"], "duplicate": False}, status_code=202)

    @app.post("/v1/contacts-validated", status_code=202)
    async def validated(body: ContactIn) -> dict[str, Any]:
        return {"contact_id": body.external_id, "duplicate": False}

    return app
"""


RAW_APP = '''
import json


def create_app():
    """The same answer as the bare endpoint from a plain ASGI callable: what uvicorn alone costs."""

    async def app(scope, receive, send):
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                done = "startup" if message["type"] == "lifespan.startup" else "shutdown"
                await send({"type": f"lifespan.{done}.complete"})
                if done == "shutdown":
                    return
        chunks = []
        more = True
        while more:
            message = await receive()
            chunks.append(message.get("body", b""))
            more = message.get("more_body", False)
        if scope["path"] == "/readyz":
            status, out = 200, b\'{"status":"ready"}\'
        else:
            body = json.loads(b"".join(chunks))
            status, out = 202, json.dumps({"contact_id": body["external_id"], "duplicate": False}).encode()
        await send({"type": "http.response.start", "status": status, "headers": [
            (b"content-type", b"application/json"), (b"content-length", str(len(out)).encode())]})
        await send({"type": "http.response.body", "body": out})

    return app
'''


CEILING_APP = '''
"""Intake with its idempotency store and bus answering at once: the ceiling of intake's own work.

NOT durable, a reference only: every request is validated, enriched, turned into an event and
answered exactly as intake does, but nothing is looked up, published or recorded.
"""
from services.intake import app as intake_app
from services.intake.store import IdempotencyStore
from shared.bus.embedded import EmbeddedBus


async def find_many(self, key_sets):
    return [None] * len(key_sets)


async def record_many(self, rows):
    return None


async def publish_many(self, records):
    return [None] * len(records)


IdempotencyStore.find_many = find_many
IdempotencyStore.record_many = record_many
EmbeddedBus.publish_many = publish_many


def create_app():
    return intake_app.create_app()
'''


SYNC_APP = '''
"""Intake with its durable I/O done on the event loop: no thread hand-offs at all (reference).

Durable like intake (the same lookup, bus commit with synchronous=FULL and insert, in the same order),
but the loop blocks on them, fsync included. Not how intake should run: it shows what removing every
hand-off between the loop and the SQLite threads could gain, i.e. the upper bound of any scheduling of
the same SQLite work.
"""
from services.intake import app as intake_app
from services.intake.store import _SqliteThread
from shared.bus.embedded import EmbeddedBus, _Pending


async def select(self, hashes):
    return self._select(hashes)


async def insert(self, rows):
    self._insert(rows)


async def publish_many(self, records):
    self._write_batch([_Pending(self.physical(topic), key, value, (), None) for topic, key, value in records])
    self._wake_local()
    return [None] * len(records)


_SqliteThread.select = select
_SqliteThread.insert = insert
EmbeddedBus.publish_many = publish_many


def create_app():
    return intake_app.create_app()
'''


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(app: str, env: dict[str, str], cwd: Path, log: Path) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            app,
            "--factory",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
            "--no-access-log",
            "--log-level",
            "warning",
        ],
        cwd=cwd,
        env=env,
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{app} exited: {log.read_text()[-2000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                return proc, port
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    proc.kill()
    raise SystemExit(f"{app} did not become ready")


def payload(external_id: str) -> bytes:
    phone = f"+49151{random.randrange(10**8):08d}"  # a new valid number each time: no cache helps
    return json.dumps(
        {
            "external_id": external_id,
            "source": "bench",
            "channel": "voice",
            "customer": {
                "id": f"c-{external_id}",
                "phone": phone,
                "tier": "premium",
                "language": "de",
                "timezone": "Europe/Berlin",
            },
            "summary": "I would like to upgrade my plan",
            "ivr_selections": ["2"],
        }
    ).encode()


async def load(
    port: int, tag: str, connections: int, seconds: float, path: str = "/v1/contacts"
) -> tuple[int, int, list[float]]:
    """(accepted 202s, other answers, latencies) from ``connections`` keep-alive clients for ``seconds``."""
    stop_at = time.perf_counter() + seconds
    accepted = 0
    other = 0
    latencies: list[float] = []

    async def client(n: int) -> None:
        nonlocal accepted, other
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        i = 0
        try:
            while time.perf_counter() < stop_at:
                body = payload(f"{tag}-{n}-{i}")
                i += 1
                head = (
                    f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                    f"Content-Length: {len(body)}\r\n\r\n"
                ).encode()
                t0 = time.perf_counter()
                writer.write(head + body)
                status_line = await reader.readline()
                length = 0
                while True:
                    line = await reader.readline()
                    if line in (b"\r\n", b""):
                        break
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                await reader.readexactly(length)
                latencies.append(time.perf_counter() - t0)
                if status_line.split()[1] == b"202":
                    accepted += 1
                else:
                    other += 1
        finally:
            writer.close()

    await asyncio.gather(*(client(n) for n in range(connections)))
    return accepted, other, latencies


def cpu_seconds(pid: int) -> float:
    """User+system CPU of a process, all threads included (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * p))] if values else float("nan")


TARGETS = (  # name, label, server, path
    ("raw", "plain ASGI, no framework (reference)", "raw", "/v1/contacts"),
    ("bare", "bare FastAPI endpoint (baseline)", "bare", "/v1/contacts"),
    ("validated", "FastAPI + ContactIn, not published", "bare", "/v1/contacts-validated"),
    ("ceiling", "intake, store+bus answer at once (ref)", "ceiling", "/v1/contacts"),
    ("intake", "intake POST /v1/contacts (durable)", "intake", "/v1/contacts"),
    ("fast", "intake, FAST_PATH=true (durable)", "fast", "/v1/contacts"),
    ("sync", "intake, durable, I/O on the loop (ref)", "sync", "/v1/contacts"),
)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        tmpdir = Path(tmp)
        (tmpdir / "bare_app.py").write_text(BARE_APP)
        (tmpdir / "raw_app.py").write_text(RAW_APP)
        (tmpdir / "ceiling_app.py").write_text(CEILING_APP)
        (tmpdir / "sync_app.py").write_text(SYNC_APP)
        data_dir = tmpdir / "data"
        base_env = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHBOARD_")}
        intake_env = {
            **base_env,
            "PYTHONPATH": str(ROOT),
            "SWITCHBOARD_DATA_DIR": str(data_dir),
            "SWITCHBOARD_LOG_LEVEL": "WARNING",
            "SWITCHBOARD_ADMIN_TOKEN": "bench-admin-token-not-secret",
            # uvicorn binds loopback here: unsigned webhooks are allowed (no secrets configured)
            "SWITCHBOARD_INTAKE_LISTEN_HOST": "127.0.0.1",
            # One load generator is one client address: the rate limits would measure themselves.
            "SWITCHBOARD_INTAKE_RATE_LIMITS_ENABLED": "false",
        }
        bare_env = {**base_env, "PYTHONPATH": f"{tmpdir}{os.pathsep}{ROOT}"}
        ceiling_env = {
            **intake_env,
            "PYTHONPATH": bare_env["PYTHONPATH"],
            "SWITCHBOARD_DATA_DIR": str(tmpdir / "ceiling"),
        }
        sync_env = {**ceiling_env, "SWITCHBOARD_DATA_DIR": str(tmpdir / "sync")}
        fast_env = {**intake_env, "SWITCHBOARD_DATA_DIR": str(tmpdir / "fast"), "SWITCHBOARD_INTAKE_FAST_PATH": "true"}
        servers = {
            "intake": start_server("services.intake.app:create_app", intake_env, ROOT, tmpdir / "intake.log"),
            "bare": start_server("bare_app:create_app", bare_env, tmpdir, tmpdir / "bare.log"),
            "raw": start_server("raw_app:create_app", bare_env, tmpdir, tmpdir / "raw.log"),
            "ceiling": start_server("ceiling_app:create_app", ceiling_env, ROOT, tmpdir / "ceiling.log"),
            "sync": start_server("sync_app:create_app", sync_env, ROOT, tmpdir / "sync.log"),
            "fast": start_server("services.intake.app:create_app", fast_env, ROOT, tmpdir / "fast.log"),
        }
        results: dict[str, list[tuple[float, int, list[float]]]] = {name: [] for name, *_ in TARGETS}
        cpu: dict[str, list[float]] = {name: [] for name, *_ in TARGETS}  # server CPU us per answer
        accepted_202 = {"intake": 0, "fast": 0, "sync": 0}  # the durable rows: every 202 must be in their bus log
        try:
            for _name, _, server, path in TARGETS:
                asyncio.run(load(servers[server][1], "warm", 8, 1.0, path))
            for r in range(args.rounds):
                for name, _, server, path in TARGETS:
                    proc, port = servers[server]
                    cpu0 = cpu_seconds(proc.pid)
                    ok, other, lat = asyncio.run(load(port, f"r{r}", args.connections, args.seconds, path))
                    cpu[name].append((cpu_seconds(proc.pid) - cpu0) / max(1, ok + other) * 1e6)
                    results[name].append((ok / args.seconds, other, lat))
                    if name in accepted_202:
                        accepted_202[name] += ok
        finally:
            for proc, _ in servers.values():
                proc.terminate()
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    proc.kill()
        logged = {
            name: durable_counts(Path(env["SWITCHBOARD_DATA_DIR"]))
            for name, env in (("intake", intake_env), ("fast", fast_env), ("sync", sync_env))
        }

    print(
        f"one uvicorn worker each, {args.connections} keep-alive connections, {args.rounds} rounds x "
        f"{args.seconds:.0f}s, new external id and phone number per request\n"
    )
    print(
        f"{'endpoint':<38}{'accepted/s (median)':>20}{'rounds':>22}{'p50 ms':>9}{'p99 ms':>9}{'non-202':>9}"
        f"{'server CPU us/req':>19}{'ratio':>8}"
    )
    print("-" * 134)
    medians = {name: statistics.median(rate for rate, _, _ in results[name]) for name, *_ in TARGETS}
    for name, label, _, _ in TARGETS:
        rates = [rate for rate, _, _ in results[name]]
        lat = [x for _, _, ls in results[name] for x in ls]
        rounds = " ".join(f"{x:.0f}" for x in rates)
        non = sum(o for _, o, _ in results[name])
        print(
            f"{label:<38}{medians[name]:>20.0f}{rounds:>22}{pct(lat, 0.5) * 1e3:>9.1f}{pct(lat, 0.99) * 1e3:>9.1f}"
            f"{non:>9}{statistics.median(cpu[name]):>19.0f}{medians[name] / medians['bare']:>7.2f}x"
        )
    print("-" * 134)
    ratio = medians["intake"] / medians["bare"]
    verdict = "met" if ratio >= 0.6 else "NOT met"
    print(f"{'ratio intake / bare':<38}{ratio:>20.2f}x   target >= 0.60x: {verdict}")
    print(f"{'ratio intake fast path / default':<38}{medians['fast'] / medians['intake']:>20.2f}x")
    violations = []
    for name, total in accepted_202.items():
        in_bus, recorded = logged[name]
        print(f"{name + ' 202s in timed rounds':<38}{total:>20}")
        print(f"{'  of which in the bus log':<38}{in_bus:>20}   (idempotency rows: {recorded})")
        if in_bus != total:
            violations.append(name)
    if violations:
        raise SystemExit(f"DURABILITY VIOLATION ({', '.join(violations)}): a 202 without its event in the bus")


def durable_counts(data_dir: Path) -> tuple[int, int]:
    """(contact events in the bus log, idempotency rows) of the timed rounds: warm-up answers left out."""
    with sqlite3.connect(data_dir / "intake.sqlite3") as conn:
        recorded = conn.execute("SELECT count(*) FROM intake_requests").fetchone()[0]
        warm = conn.execute("SELECT count(*) FROM intake_requests WHERE key LIKE 'warm-%'").fetchone()[0]
    with sqlite3.connect(data_dir / "bus.sqlite3") as conn:
        in_bus = conn.execute("SELECT count(*) FROM events WHERE topic='contacts'").fetchone()[0]
    return in_bus - warm, recorded - warm


if __name__ == "__main__":
    main()
