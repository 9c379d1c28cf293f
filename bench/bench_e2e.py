"""The whole path a caller feels: webhook posted to intake -> offer on an agent's stream, at fixed rates.

Real processes as ``switchboard run`` starts them (intake, router, callback under uvicorn, embedded
default unless ``--kafka``/``--postgres`` are given), N simulated agents on Server-Sent Events streams
who accept every offer at once, complete at once and are available again (the strategy's wrap-up is set
to 0 s), so nobody waits for an agent: what is measured is the system, not the staffing. Arrivals are
open-loop Poisson at each rate (a slow server does not slow the arrivals down, as callers do not wait
for it), each contact a new external id.

Printed per rate: 202s, offered, not offered within ``--bound`` seconds, p50/p99/max of post -> 202 and
of 202 -> offer on the stream, and the router's CPU (user+system, all threads) per contact. The *peak
sustained* rate is the highest rate whose p99 202 -> offer stays <= 100 ms with every contact offered.

Side by side, in the same run and under the same load generator, a **baseline**: a bare relay server
(one process, no bus, no database, no routing: POST -> 202, then the offer pushed at once to the next
free agent's stream; accept and complete answer 200). It is the floor of this machine and this load
generator; the router's rows are read against it because the machine is noisy.

    python bench/bench_e2e.py [--agents 200] [--rates 5,20,50,100,200,300] [--duration 10]
    python bench/bench_e2e.py --kafka 127.0.0.1:19092 --postgres postgresql+asyncpg://postgres@127.0.0.1/test

Targets (issue 14, 2-core machine, embedded default): p99 202 -> offer <= 50 ms at 100 contacts/s with
nothing unoffered; peak sustained >= 300 contacts/s; router CPU per contact halved against the
baseline measured before the router's group commit; on Kafka + PostgreSQL p99 <= 100 ms at 100/s.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
ADMIN = "bench-admin-token-" + uuid.uuid4().hex
WEEK = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
ALWAYS_OPEN = json.dumps({"default": {"timezone": "UTC", "hours": {d: ["00:00-24:00"] for d in WEEK}}})
PEAK_P99_MS = 100.0
CLK_TCK = os.sysconf("SC_CLK_TCK")

# The floor: what HTTP in, one SSE push out, and the agent's two calls cost with no work in between.
RELAY_APP = r"""
import asyncio, json, uuid
from collections import deque
from starlette.applications import Starlette
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route

streams: dict[str, asyncio.Queue] = {}
free: deque[str] = deque()
waiting: deque[bytes] = deque()
offers: dict[str, tuple[str, str]] = {}

def _offer(agent_id: str, contact_id: str) -> None:
    offer_id = uuid.uuid4().hex
    offers[offer_id] = (agent_id, contact_id)
    streams[agent_id].put_nowait(("offer", {"offer_id": offer_id, "contact_id": contact_id, "agent_id": agent_id}))

def _dispatch() -> None:
    while free and waiting:
        _offer(free.popleft(), waiting.popleft())

async def ready(request):
    return JSONResponse({"status": "ready"})

async def register(request):
    body = await request.json()
    streams.setdefault(body["agent_id"], asyncio.Queue())
    return JSONResponse({"agent_id": body["agent_id"], "token": "relay"}, status_code=201)

async def post_contact(request):
    body = await request.json()
    contact_id = str(uuid.uuid5(uuid.NAMESPACE_URL, body["external_id"]))
    waiting.append(contact_id)
    asyncio.get_running_loop().call_soon(_dispatch)
    return JSONResponse({"contact_id": contact_id, "duplicate": False}, status_code=202)

async def stream(request):
    agent_id = request.path_params["agent_id"]
    queue = streams.setdefault(agent_id, asyncio.Queue())
    free.append(agent_id)
    _dispatch()
    async def events():
        yield b"event: hello\ndata: {}\n\n"
        while True:
            kind, data = await queue.get()
            yield f"event: {kind}\ndata: {json.dumps(data)}\n\n".encode()
    return StreamingResponse(events(), media_type="text/event-stream")

assigned: dict[str, str] = {}

async def accept(request):
    agent_id, contact_id = offers.pop(request.path_params["offer_id"])
    assigned[contact_id] = agent_id
    streams[agent_id].put_nowait(("assignment", {"contact_id": contact_id}))
    return JSONResponse({"state": "accepted"})

async def complete(request):
    await request.body()
    free.append(assigned.pop(request.path_params["contact_id"]))
    _dispatch()
    return JSONResponse({"state": "completed"})

app = Starlette(routes=[
    Route("/readyz", ready), Route("/v1/agents", register, methods=["POST"]),
    Route("/v1/contacts", post_contact, methods=["POST"]),
    Route("/v1/agents/{agent_id}/stream", stream), Route("/v1/offers/{offer_id}/accept", accept, methods=["POST"]),
    Route("/v1/contacts/{contact_id}/complete", complete, methods=["POST"]),
])
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process (all its threads) from /proc, in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


@dataclass
class Process:
    name: str
    args: list[str]
    env: dict[str, str]
    log: Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60.0) -> None:
        self.proc = subprocess.Popen(
            [*self.args, "--port", str(self.port)],
            cwd=ROOT,
            env=self.env,
            stdout=self.log.open("ab"),
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited: {self.log.read_text()[-3000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    return
            time.sleep(0.1)
        raise RuntimeError(f"{self.name} not ready within {timeout}s: {self.log.read_text()[-3000:]}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@dataclass
class Target:
    """Where the load goes: intake's URL for posts, the router's for agents, and whose CPU to count."""

    label: str
    intake: str
    router: str
    cpu_pid: int
    admin_headers: dict[str, str]


def service_env(data_dir: Path, extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHBOARD_")}
    strategy = data_dir / "strategy.yaml"
    write_strategy(strategy)
    env.update(
        PYTHONPATH=str(ROOT),
        SWITCHBOARD_DATA_DIR=str(data_dir),
        SWITCHBOARD_LOG_LEVEL="WARNING",
        SWITCHBOARD_SITES_JSON=ALWAYS_OPEN,
        SWITCHBOARD_ROUTER_ADMIN_TOKEN=ADMIN,
        SWITCHBOARD_ADMIN_TOKEN=ADMIN,
        SWITCHBOARD_ROUTER_STRATEGY_PATH=str(strategy),
        SWITCHBOARD_ROUTER_PRESENCE_GRACE_SECONDS="60",
        SWITCHBOARD_INTAKE_RATE_LIMIT_ENABLED="false",
        **extra,
    )
    return env


def write_strategy(path: Path) -> None:
    """The shipped strategy with no wrap-up: an agent is available again the moment they complete."""
    import yaml

    from services.router.strategy import DEFAULT_STRATEGY_PATH

    doc = yaml.safe_load(DEFAULT_STRATEGY_PATH.read_text())
    for policy in doc.get("channels", {}).values():
        policy["wrap_up_seconds"] = 0
    path.write_text(yaml.safe_dump(doc))


@contextlib.contextmanager
def switchboard(data_dir: Path, extra: dict[str, str]) -> Iterator[Target]:
    env = service_env(data_dir, extra)
    procs = [
        Process(name, [sys.executable, "-m", "services.cli", name], env, data_dir / f"{name}.log")
        for name in ("intake", "router", "callback")
    ]
    try:
        for p in procs:
            p.start()
        intake, router, _ = procs
        assert router.proc is not None
        yield Target("switchboard", intake.url, router.url, router.proc.pid, {"Authorization": f"Bearer {ADMIN}"})
    finally:
        for p in reversed(procs):
            p.stop()


@contextlib.contextmanager
def relay(data_dir: Path) -> Iterator[Target]:
    module = data_dir / "relay_app.py"
    module.write_text(RELAY_APP)
    env = {**os.environ, "PYTHONPATH": str(data_dir)}
    args = [sys.executable, "-m", "uvicorn", "relay_app:app", "--log-level", "warning", "--no-access-log"]
    p = Process("relay", args, env, data_dir / "relay.log")
    try:
        p.start()
        assert p.proc is not None
        yield Target("baseline relay", p.url, p.url, p.proc.pid, {})
    finally:
        p.stop()


@contextlib.asynccontextmanager
async def postgres_databases(url: str, names: list[str]) -> AsyncIterator[dict[str, str]]:
    """Fresh databases for one run (dropped afterwards): the router must not start on old state."""
    from sqlalchemy import text
    from sqlalchemy.engine import make_url
    from sqlalchemy.ext.asyncio import create_async_engine

    base = make_url(url)
    admin = create_async_engine(base, isolation_level="AUTOCOMMIT")
    suffix = uuid.uuid4().hex[:8]
    made = {name: f"sb_bench_{name}_{suffix}" for name in names}
    try:
        async with admin.connect() as conn:
            for db in made.values():
                await conn.execute(text(f'CREATE DATABASE "{db}"'))
        yield {name: base.set(database=db).render_as_string(hide_password=False) for name, db in made.items()}
    finally:
        async with admin.connect() as conn:
            for db in made.values():
                await conn.execute(text(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)'))
        await admin.dispose()


# --------------------------------------------------------------------------------------------------
# The load: agents on streams, Poisson arrivals
# --------------------------------------------------------------------------------------------------


@dataclass
class Tally:
    posted: dict[str, float] = field(default_factory=dict)  # external id -> post time
    answered: dict[str, float] = field(default_factory=dict)  # contact id -> 202 time
    post_ms: list[float] = field(default_factory=list)
    offered: dict[str, float] = field(default_factory=dict)  # contact id -> first offer time
    rejected: int = 0
    errors: int = 0


class Agents:
    """N agents who accept every offer at once, complete at once, and are available again."""

    def __init__(self, target: Target, count: int, client: httpx.AsyncClient) -> None:
        self.target = target
        self.count = count
        self.client = client
        self.tokens: dict[str, dict[str, str]] = {}
        self.tally = Tally()
        self.tasks: list[asyncio.Task[None]] = []
        self.opened = 0
        self.failures: list[str] = []

    async def start(self) -> None:
        run = uuid.uuid4().hex[:6]
        for i in range(self.count):
            agent_id = f"bench-{run}-{i}"
            r = await self.client.post(
                f"{self.target.router}/v1/agents",
                headers=self.target.admin_headers,
                json={
                    "agent_id": agent_id,
                    "name": f"Agent {i}",
                    "roles": ["service", "sales", "brand_ambassador"],
                    "languages": ["en"],
                    "capacity": {"voice": 1},
                    "status": "available",
                },
            )
            r.raise_for_status()
            self.tokens[agent_id] = {"Authorization": f"Bearer {r.json()['token']}"}
        for agent_id in self.tokens:
            self.tasks.append(asyncio.create_task(self._work(agent_id)))
        deadline = time.monotonic() + 30
        while self.opened < self.count and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        if self.opened < self.count:
            raise RuntimeError(f"only {self.opened} of {self.count} streams opened: {self.failures[:3]}")

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)

    async def _work(self, agent_id: str) -> None:
        headers = self.tokens[agent_id]
        url = f"{self.target.router}/v1/agents/{agent_id}/stream"
        try:
            async with self.client.stream("GET", url, headers=headers, timeout=None) as resp:
                if resp.status_code != 200:
                    self.failures.append(f"{agent_id}: stream {resp.status_code}")
                    return
                self.opened += 1
                event, data = "message", ""
                async for line in resp.aiter_lines():
                    if line.startswith("event:"):
                        event = line[6:].strip()
                    elif line.startswith("data:"):
                        data = line[5:].strip()
                    elif line == "" and data:
                        await self._on(agent_id, headers, event, json.loads(data))
                        event, data = "message", ""
        except (httpx.HTTPError, asyncio.CancelledError):
            return

    async def _on(self, agent_id: str, headers: dict[str, str], event: str, data: dict[str, Any]) -> None:
        if event == "offer":
            self.tally.offered.setdefault(data["contact_id"], time.perf_counter())
            asyncio.create_task(self._call("POST", f"/v1/offers/{data['offer_id']}/accept", headers))
        elif event == "assignment":
            body = {"resolved": True, "notes": "bench"}
            asyncio.create_task(self._call("POST", f"/v1/contacts/{data['contact_id']}/complete", headers, body))

    async def _call(self, method: str, path: str, headers: dict[str, str], body: Any = None) -> None:
        try:
            r = await self.client.request(method, f"{self.target.router}{path}", headers=headers, json=body)
            if r.status_code >= 500:
                self.tally.errors += 1
        except httpx.HTTPError:
            self.tally.errors += 1


async def post_contact(client: httpx.AsyncClient, target: Target, tally: Tally, n: int, run: str) -> None:
    external_id = f"{run}-{n}"
    body = {
        "external_id": external_id,
        "source": "bench",
        "channel": "voice",
        "customer": {"id": f"cust-{external_id}", "phone": f"+49309{n % 10_000_000:07d}", "language": "en"},
        "intent": "support",
        "summary": "line keeps dropping",
    }
    t0 = time.perf_counter()
    tally.posted[external_id] = t0
    try:
        r = await client.post(f"{target.intake}/v1/contacts", json=body)
    except httpx.HTTPError:
        tally.errors += 1
        return
    t1 = time.perf_counter()
    if r.status_code == 202:
        tally.answered[r.json()["contact_id"]] = t1
        tally.post_ms.append((t1 - t0) * 1000)
    else:
        tally.rejected += 1


@dataclass
class Row:
    label: str
    rate: float
    posted: int
    accepted: int
    offered: int
    unoffered: int
    post_ms: list[float]
    offer_ms: list[float]
    cpu_ms_per_contact: float
    group: float | None = None  # router changes per commit (group commit); None for the baseline

    @property
    def sustained(self) -> bool:
        return self.unoffered == 0 and bool(self.offer_ms) and pct(self.offer_ms, 99) <= PEAK_P99_MS


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered) + 0.5) - 1))]


async def group_commits(client: httpx.AsyncClient, target: Target) -> tuple[float, float] | None:
    """(changes, commits) so far from the router's group-commit histogram; None where there is none."""
    try:
        r = await client.get(f"{target.router}/metrics")
    except httpx.HTTPError:
        return None
    found: dict[str, float] = {}
    for line in r.text.splitlines() if r.status_code == 200 else ():
        for part in ("sum", "count"):
            if line.startswith(f"switchboard_router_group_commit_size_{part} "):
                found[part] = float(line.split()[1])
    return (found["sum"], found["count"]) if len(found) == 2 else None


async def run_rate(target: Target, agents: Agents, client: httpx.AsyncClient, rate: float, args: Any) -> Row:
    tally = agents.tally = Tally()
    run = uuid.uuid4().hex[:8]
    groups0 = await group_commits(client, target)
    cpu0 = cpu_seconds(target.cpu_pid)
    rng = random.Random(int(rate * 1000))
    posts: list[asyncio.Task[None]] = []
    start = time.perf_counter()
    at, n = 0.0, 0
    while at < args.duration:
        at += rng.expovariate(rate)
        delay = start + at - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        posts.append(asyncio.create_task(post_contact(client, target, tally, n, run)))
        n += 1
    await asyncio.gather(*posts)
    deadline = time.perf_counter() + args.bound
    while time.perf_counter() < deadline and any(c not in tally.offered for c in tally.answered):
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.2)  # the last accepts and completes land before the CPU is read
    cpu = cpu_seconds(target.cpu_pid) - cpu0
    groups1 = await group_commits(client, target)
    group = None
    if groups0 is not None and groups1 is not None and groups1[1] > groups0[1]:
        group = (groups1[0] - groups0[0]) / (groups1[1] - groups0[1])
    offer_ms = [(tally.offered[c] - t) * 1000 for c, t in tally.answered.items() if c in tally.offered]
    late = [c for c, t in tally.answered.items() if c not in tally.offered or tally.offered[c] - t > args.bound]
    return Row(
        label=target.label,
        rate=rate,
        posted=n,
        accepted=len(tally.answered),
        offered=len(offer_ms),
        unoffered=len(late),
        post_ms=tally.post_ms,
        offer_ms=offer_ms,
        cpu_ms_per_contact=cpu * 1000 / max(1, len(tally.answered)),
        group=group,
    )


async def measure(target: Target, args: Any) -> list[Row]:
    limits = httpx.Limits(max_connections=args.agents + 256, max_keepalive_connections=args.agents + 256)
    async with httpx.AsyncClient(limits=limits, timeout=httpx.Timeout(30.0)) as client:
        agents = Agents(target, args.agents, client)
        await agents.start()
        rows = []
        try:
            for rate in args.rates:
                rows.append(await run_rate(target, agents, client, rate, args))
                print_row(rows[-1])
        finally:
            await agents.stop()
        return rows


HEADER = (
    f"{'server':<22}{'rate/s':>7}{'posted':>8}{'202s':>7}{'offered':>8}{'late':>6}"
    f"{'202 p50':>9}{'p99':>8}{'max':>8}{'offer p50':>11}{'p99':>8}{'max':>8}{'CPU ms/c':>10}{'per commit':>11}"
)


def print_row(r: Row) -> None:
    print(
        f"{r.label:<22}{r.rate:>7g}{r.posted:>8}{r.accepted:>7}{r.offered:>8}{r.unoffered:>6}"
        f"{pct(r.post_ms, 50):>9.1f}{pct(r.post_ms, 99):>8.1f}{max(r.post_ms, default=float('nan')):>8.1f}"
        f"{pct(r.offer_ms, 50):>11.1f}{pct(r.offer_ms, 99):>8.1f}{max(r.offer_ms, default=float('nan')):>8.1f}"
        f"{r.cpu_ms_per_contact:>10.2f}{'-' if r.group is None else f'{r.group:.1f}':>11}",
        flush=True,
    )


def peak(rows: list[Row]) -> float | None:
    ok = [r.rate for r in rows if r.sustained]
    return max(ok) if ok else None


async def main_async(args: Any) -> int:
    stack = "embedded default"
    with tempfile.TemporaryDirectory(prefix="sb-bench-e2e-") as tmp:
        tmp_path = Path(tmp)
        extra: dict[str, str] = {}
        async with contextlib.AsyncExitStack() as exit_stack:
            if args.kafka or args.postgres:
                if not (args.kafka and args.postgres):
                    print("--kafka and --postgres go together (the production stack)", file=sys.stderr)
                    return 2
                stack = "Kafka + PostgreSQL"
                urls = await exit_stack.enter_async_context(
                    postgres_databases(args.postgres, ["intake", "router", "callback"])
                )
                extra.update(
                    SWITCHBOARD_BUS="kafka",
                    SWITCHBOARD_KAFKA_BOOTSTRAP_SERVERS=args.kafka,
                    SWITCHBOARD_TOPIC_PREFIX=f"bench-{uuid.uuid4().hex[:8]}-",
                    **{f"SWITCHBOARD_{svc.upper()}_DATABASE_URL": url for svc, url in urls.items()},
                )
            print(f"bench_e2e: {args.agents} agents, {args.duration:g} s per rate, bound {args.bound:g} s, {stack}")
            print(
                "times in ms; late = not offered within the bound; CPU = the router's (baseline: the relay's); "
                "per commit = state changes the router committed together (group commit)"
            )
            print(HEADER)
            results: dict[str, list[Row]] = {}
            if not args.no_baseline:
                (tmp_path / "relay").mkdir()
                with relay(tmp_path / "relay") as target:
                    results["baseline"] = await measure(target, args)
            (tmp_path / "sb").mkdir()
            with switchboard(tmp_path / "sb", extra) as target:
                results["switchboard"] = await measure(target, args)
    print()
    for name, rows in results.items():
        best = peak(rows)
        print(
            f"peak sustained ({name}, p99 202->offer <= {PEAK_P99_MS:g} ms, none late): "
            + (f"{best:g} contacts/s" if best is not None else "none of the rates")
        )
    if "baseline" in results:
        for sb, base in zip(results["switchboard"], results["baseline"], strict=True):
            if sb.offer_ms and base.offer_ms:
                print(
                    f"at {sb.rate:g}/s: p99 202->offer {pct(sb.offer_ms, 99):.1f} ms "
                    f"(baseline {pct(base.offer_ms, 99):.1f}); "
                    f"CPU per contact {sb.cpu_ms_per_contact:.2f} ms, "
                    f"{sb.cpu_ms_per_contact / max(base.cpu_ms_per_contact, 0.001):.1f}x the baseline's"
                )
    total = sum(r.accepted for rows in results.values() for r in rows)
    return 0 if total > 0 else 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--agents", type=int, default=200)
    parser.add_argument("--rates", type=lambda s: [float(x) for x in s.split(",")], default=[5, 20, 50, 100, 200, 300])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of arrivals per rate")
    parser.add_argument("--bound", type=float, default=10.0, help="seconds after which a contact counts as not offered")
    parser.add_argument("--kafka", help="bootstrap servers: run on Kafka (with --postgres)")
    parser.add_argument("--postgres", help="a PostgreSQL URL whose server gets fresh databases for the run")
    parser.add_argument("--no-baseline", action="store_true", help="skip the relay baseline")
    args = parser.parse_args()
    sys.exit(asyncio.run(main_async(args)))


if __name__ == "__main__":
    main()
