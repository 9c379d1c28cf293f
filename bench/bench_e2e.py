"""The whole path a caller feels: webhook posted to intake -> offer on an agent's stream, at fixed rates.

Real processes as ``switchboard run`` starts them (intake, router, callback under uvicorn, embedded
default unless ``--kafka``/``--postgres`` are given), N simulated agents on Server-Sent Events streams
who accept every offer at once, complete at once and are available again (the strategy's wrap-up is set
to 0 s), so nobody waits for an agent: what is measured is the system, not the staffing. Arrivals are
open-loop Poisson at each rate (a slow server does not slow the arrivals down, as callers do not wait
for it), each contact a new external id.

Printed per rate: 202s, offered, not offered within ``--bound`` seconds, p50/p99/max of post -> 202 and
of 202 -> offer on the stream, and the router's CPU (user+system, all threads) per contact. Beside it,
what says whether the server under test or the machine set the pace: intake's CPU per contact, the load
generator's own CPU (this process: posts and agents) and how busy the whole machine was. The *peak
sustained* rate is the highest rate whose p99 202 -> offer stays <= 100 ms with every contact offered.

Side by side, in the same run and under the same load generator, a **baseline**: a bare relay server
(one process, no bus, no database, no routing: POST -> 202, then the offer pushed at once to the next
free agent's stream; accept and complete answer 200). It is the floor of this machine and this load
generator; the router's rows are read against it because the machine is noisy.

    python bench/bench_e2e.py [--agents 200] [--rates 5,20,50,100,200,300] [--duration 10]
    python bench/bench_e2e.py --kafka 127.0.0.1:19092 --postgres postgresql+asyncpg://postgres@127.0.0.1/test
    python bench/bench_e2e.py --kafka 127.0.0.1:19092 --postgres postgresql+asyncpg://postgres@127.0.0.1/test \
        --routers 1,2,4 [--sites 12] [--partitions 12] [--direct]

**Several active routers** (``--routers N[,N...]``, Kafka + PostgreSQL only): for each N, fresh databases
and a fresh topic prefix, intake + callback + N routers with ``SWITCHBOARD_ROUTER_OWNERSHIP=partitions``
(each advertising its own URL) over ``--partitions`` ``contacts`` partitions (12: 4 routers get 3 each).
Contacts go round-robin to ``--sites`` sites (12), whose names are chosen so that their routing domains
land in distinct partitions (as evenly as the counts allow): with random names, hashing would leave
partitions empty and a router with no work. Agents are spread over the sites the same way, registered
through any router, and each agent's stream, accepts and completes go to the routers round-robin, as
behind a Kubernetes Service, so most of them are forwarded to the owner of the agent's domain;
``--direct`` sends them to the owner instead. Load starts once the routers' partitions are settled
(disjoint, every partition owned, each router holding some). The strategy also has callbacks disabled
there: every contact is to be offered, none diverted to a callback. Router CPU per contact is the sum
over the N routers; the final table, *throughput scaling*, gives per N the peak sustained rate, router
CPU per contact and p99 202 -> offer at each rate. Without ``--routers`` nothing changes: one router in
the default ownership (``whole``), one site; the embedded default runs one router only (``--routers 1``).

Targets (issue 14, 2-core machine, embedded default): p99 202 -> offer <= 50 ms at 100 contacts/s with
nothing unoffered; peak sustained >= 300 contacts/s; router CPU per contact halved against the
baseline measured before the router's group commit; on Kafka + PostgreSQL p99 <= 100 ms at 100/s.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import httpx

ROOT = Path(__file__).resolve().parents[1]
ADMIN = "bench-admin-token-" + uuid.uuid4().hex
WEEK = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
ALWAYS_OPEN = json.dumps({"default": {"timezone": "UTC", "hours": {d: ["00:00-24:00"] for d in WEEK}}})
PEAK_P99_MS = 100.0
CLK_TCK = os.sysconf("SC_CLK_TCK")
STREAM_TIMEOUT = aiohttp.ClientTimeout(total=None, sock_read=None)  # an agent's stream stays open
TENANT = "default"  # the services' tenant (SWITCHBOARD_TENANT_ID is not set): routing domain = tenant/site

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


def machine_cpu() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine so far, all cores, from /proc/stat: whether the
    machine itself ran out of CPU at a rate (every process here shares it: services, load, broker)."""
    ticks = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = ticks[3] + ticks[4]  # idle + iowait
    return (sum(ticks[:8]) - idle) / CLK_TCK, sum(ticks[:8]) / CLK_TCK


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
        self.spawn()
        self.wait_ready(timeout)

    def spawn(self) -> None:
        self.proc = subprocess.Popen(
            [*self.args, "--port", str(self.port)],
            cwd=ROOT,
            env=self.env,
            stdout=self.log.open("ab"),
            stderr=subprocess.STDOUT,
        )

    def wait_ready(self, timeout: float) -> None:
        assert self.proc is not None
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
        stop_all([self])


def stop_all(procs: list[Process]) -> None:
    """SIGTERM to all at once, then wait: routers stopped one by one would rebalance at every stop."""
    running = [p.proc for p in procs if p.proc is not None and p.proc.poll() is None]
    for proc in running:
        proc.terminate()
    deadline = time.monotonic() + 20
    for proc in running:
        try:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@dataclass
class Target:
    """Where the load goes: intake's URL for posts, the routers' for agents, and whose CPU to count.

    ``sites``: the sites contacts and agents are spread over (none: the default site, as before);
    ``owners``: site -> the URL of the router owning its domain, when agents talk to their owner directly.
    """

    label: str
    intake: str
    routers: list[str]
    cpu_pids: list[int]
    admin_headers: dict[str, str]
    sites: list[str] = field(default_factory=list)
    owners: dict[str, str] = field(default_factory=dict)
    intake_pid: int | None = None  # None: the relay answers the posts itself

    @property
    def router(self) -> str:
        return self.routers[0]


def service_env(
    data_dir: Path, extra: dict[str, str], sites: list[str] | None = None, callbacks: bool = True
) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHBOARD_")}
    strategy = data_dir / "strategy.yaml"
    write_strategy(strategy, callbacks=callbacks)
    env.update(
        PYTHONPATH=str(ROOT),
        SWITCHBOARD_DATA_DIR=str(data_dir),
        SWITCHBOARD_LOG_LEVEL="WARNING",
        SWITCHBOARD_SITES_JSON=sites_json(sites or []),
        SWITCHBOARD_ROUTER_ADMIN_TOKEN=ADMIN,
        SWITCHBOARD_ADMIN_TOKEN=ADMIN,
        SWITCHBOARD_ROUTER_STRATEGY_PATH=str(strategy),
        SWITCHBOARD_ROUTER_PRESENCE_GRACE_SECONDS="60",
        SWITCHBOARD_INTAKE_RATE_LIMITS_ENABLED="false",
        **extra,
    )
    return env


def sites_json(sites: list[str]) -> str:
    """Every site always open (the default calendar too); listed sites are the ones requests may name."""
    if not sites:
        return ALWAYS_OPEN
    calendar = json.loads(ALWAYS_OPEN)["default"]
    return json.dumps({"default": calendar, "sites": dict.fromkeys(sites, calendar)})


def write_strategy(path: Path, callbacks: bool = True) -> None:
    """The shipped strategy with no wrap-up: an agent is available again the moment they complete.
    ``callbacks=False`` also turns off callbacks offered instead of queueing (several routers' runs)."""
    import yaml

    from services.router.strategy import DEFAULT_STRATEGY_PATH

    doc = yaml.safe_load(DEFAULT_STRATEGY_PATH.read_text())
    for policy in doc.get("channels", {}).values():
        policy["wrap_up_seconds"] = 0
    if not callbacks:
        doc["callback"]["enabled"] = False
    path.write_text(yaml.safe_dump(doc))


@contextlib.contextmanager
def switchboard(data_dir: Path, extra: dict[str, str], label: str = "switchboard") -> Iterator[Target]:
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
        assert intake.proc is not None
        yield Target(
            label,
            intake.url,
            [router.url],
            [router.proc.pid],
            {"Authorization": f"Bearer {ADMIN}"},
            intake_pid=intake.proc.pid,
        )
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
        yield Target("baseline relay", p.url, [p.url], [p.proc.pid], {})
    finally:
        p.stop()


# --------------------------------------------------------------------------------------------------
# Several active routers (Kafka + PostgreSQL)
# --------------------------------------------------------------------------------------------------


def kafka_partition(key: str, partitions: int) -> int:
    """Where the Kafka bus's producer puts a key (``KafkaBus.partition_of``: aiokafka's default
    partitioner, murmur2 of the key bytes), computed here without a broker."""
    from aiokafka.partitioner import DefaultPartitioner

    every = list(range(partitions))
    return int(DefaultPartitioner()(key.encode(), every, every))


def spread_sites(count: int, partitions: int) -> dict[str, int]:
    """``count`` site names -> their ``contacts`` partition, the names chosen so that their routing
    domains fill the partitions evenly (no partition gets a second site before every one has its first),
    so that every router gets its share of the domains."""
    load = [0] * partitions
    chosen: dict[str, int] = {}
    for i in itertools.count():
        name = f"site{i}"
        part = kafka_partition(f"{TENANT}/{name}", partitions)
        if load[part] == min(load):
            load[part] += 1
            chosen[name] = part
            if len(chosen) == count:
                break
    return chosen


async def ownership(client: httpx.AsyncClient, router: str) -> set[int]:
    r = await client.get(f"{router}/v1/router/ownership", headers={"Authorization": f"Bearer {ADMIN}"})
    r.raise_for_status()
    return set(r.json()["partitions"])


async def settled_split(routers: list[str], partitions: int, timeout: float = 120.0) -> list[set[int]]:
    """Wait until the routers' partitions are disjoint, each router holds some, together they hold all,
    and the split has stayed the same for a second (a rebalance may still be under way); then also every
    router answers ``/readyz`` 200 (its rebuild is done)."""
    deadline = time.monotonic() + timeout
    last: list[set[int]] | None = None
    since = time.monotonic()
    async with httpx.AsyncClient(timeout=5) as client:
        while True:
            held: list[set[int]] = []
            with contextlib.suppress(httpx.HTTPError):
                held = [await ownership(client, r) for r in routers]
            union = set().union(*held) if held else set()
            good = len(held) == len(routers) and all(held) and sum(map(len, held)) == len(union) == partitions
            if not good or held != last:
                last, since = (held if good else None), time.monotonic()
            elif time.monotonic() - since >= 1.0:
                with contextlib.suppress(httpx.HTTPError):
                    if all([(await client.get(f"{r}/readyz")).status_code == 200 for r in routers]):
                        return held
            if time.monotonic() > deadline:
                raise RuntimeError(f"the routers' partitions never settled: {held}")
            await asyncio.sleep(0.25)


@contextlib.contextmanager
def active_routers(data_dir: Path, extra: dict[str, str], count: int, sites: list[str]) -> Iterator[Target]:
    """Intake, callback and ``count`` routers owning the domains of their ``contacts`` partitions."""
    env = service_env(data_dir, extra, sites, callbacks=False)

    def service(name: str, log: str) -> Process:
        return Process(name, [sys.executable, "-m", "services.cli", name], dict(env), data_dir / log)

    intake, callback = service("intake", "intake.log"), service("callback", "callback.log")
    routers = [service("router", f"router{i}.log") for i in range(count)]
    for router in routers:
        router.env.update(SWITCHBOARD_ROUTER_OWNERSHIP="partitions", SWITCHBOARD_ROUTER_ADVERTISE_URL=router.url)
    try:
        intake.start()
        callback.start()
        # The first router alone migrates the router database and takes every partition; the others
        # join together (one rebalance, not one per router), each ready once it holds a partition.
        routers[0].start(timeout=90)
        for router in routers[1:]:
            router.spawn()
        for router in routers[1:]:
            router.wait_ready(timeout=90)
        pids = [r.proc.pid for r in routers if r.proc is not None]
        label = f"{count} router{'s' if count > 1 else ''}"
        assert intake.proc is not None
        yield Target(
            label,
            intake.url,
            [r.url for r in routers],
            pids,
            {"Authorization": f"Bearer {ADMIN}"},
            sites,
            intake_pid=intake.proc.pid,
        )
    finally:
        stop_all(routers)
        stop_all([callback, intake])


async def forwarded(routers: list[str]) -> dict[str, int]:
    """Requests the routers proxied to the owner of their domain so far, by outcome (all routers)."""
    name = "switchboard_router_requests_forwarded_total{"
    total: dict[str, int] = {}
    async with httpx.AsyncClient(timeout=5) as client:
        for router in routers:
            with contextlib.suppress(httpx.HTTPError):
                for line in (await client.get(f"{router}/metrics")).text.splitlines():
                    if line.startswith(name):
                        outcome = line.split('outcome="', 1)[1].split('"', 1)[0]
                        total[outcome] = total.get(outcome, 0) + int(float(line.rsplit(" ", 1)[1]))
    return total


@contextlib.asynccontextmanager
async def postgres_databases(url: str, names: list[str]) -> AsyncIterator[dict[str, str]]:
    """Fresh databases for one run (dropped afterwards): the router must not start on old state."""
    from sqlalchemy import text
    from sqlalchemy.engine import make_url
    from sqlalchemy.ext.asyncio import create_async_engine

    base = make_url(url)
    if base.drivername in ("postgresql", "postgres"):
        base = base.set(drivername="postgresql+asyncpg")  # the services' driver (psycopg is not installed)
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
    rejected: dict[int, int] = field(default_factory=dict)  # posts not answered 202: status -> count
    errors: int = 0


class Agents:
    """N agents who accept every offer at once, complete at once, and are available again.

    Each call (registration, stream, accept, complete) goes to the next router round-robin, as behind a
    load balancer, or with ``direct`` to the owner of the agent's site (``Target.owners``). One router:
    always that one. A stream that ends (its owner gave the domain up) is opened again."""

    def __init__(self, target: Target, count: int, client: aiohttp.ClientSession, direct: bool = False) -> None:
        self.target = target
        self.count = count
        self.client = client
        self.direct = direct
        self.tokens: dict[str, dict[str, str]] = {}
        self.site: dict[str, str] = {}
        self.tally = Tally()
        self.tasks: list[asyncio.Task[None]] = []
        self.opened: set[str] = set()
        self.reopened = 0
        self.failures: list[str] = []
        self._turn = itertools.count()

    def router(self, agent_id: str | None = None) -> str:
        if self.direct and agent_id is not None and self.site.get(agent_id) in self.target.owners:
            return self.target.owners[self.site[agent_id]]
        routers = self.target.routers
        return routers[next(self._turn) % len(routers)]

    async def start(self) -> None:
        run = uuid.uuid4().hex[:6]
        for i in range(self.count):
            agent_id = f"bench-{run}-{i}"
            body: dict[str, Any] = {
                "agent_id": agent_id,
                "name": f"Agent {i}",
                "roles": ["service", "sales", "brand_ambassador"],
                "languages": ["en"],
                "capacity": {"voice": 1},
                "status": "available",
            }
            if self.target.sites:
                body["site"] = self.site[agent_id] = self.target.sites[i % len(self.target.sites)]
            url = f"{self.router()}/v1/agents"
            async with self.client.post(url, headers=self.target.admin_headers, json=body) as r:
                r.raise_for_status()
                self.tokens[agent_id] = {"Authorization": f"Bearer {(await r.json())['token']}"}
        for agent_id in self.tokens:
            self.tasks.append(asyncio.create_task(self._work(agent_id)))
        deadline = time.monotonic() + 30
        while len(self.opened) < self.count and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        if len(self.opened) < self.count:
            raise RuntimeError(f"only {len(self.opened)} of {self.count} streams opened: {self.failures[:3]}")

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)

    async def _work(self, agent_id: str) -> None:
        headers = self.tokens[agent_id]
        while True:
            url = f"{self.router(agent_id)}/v1/agents/{agent_id}/stream"
            try:
                async with self.client.get(url, headers=headers, timeout=STREAM_TIMEOUT) as resp:
                    if resp.status != 200:
                        self.failures.append(f"{agent_id}: stream {resp.status}")
                    else:
                        self.opened.add(agent_id)
                        await self._read(agent_id, headers, resp)
            except (aiohttp.ClientError, TimeoutError):
                pass
            except asyncio.CancelledError:
                return
            self.reopened += 1
            await asyncio.sleep(0.3)

    async def _read(self, agent_id: str, headers: dict[str, str], resp: aiohttp.ClientResponse) -> None:
        event, data = "message", ""
        async for raw in resp.content:  # one line at a time
            line = raw.decode().rstrip("\r\n")
            if line.startswith("event:"):
                event = line[6:].strip()
            elif line.startswith("data:"):
                data = line[5:].strip()
            elif line == "" and data:
                await self._on(agent_id, headers, event, json.loads(data))
                event, data = "message", ""

    async def _on(self, agent_id: str, headers: dict[str, str], event: str, data: dict[str, Any]) -> None:
        if event == "offer":
            self.tally.offered.setdefault(data["contact_id"], time.perf_counter())
            asyncio.create_task(self._call(agent_id, f"/v1/offers/{data['offer_id']}/accept", headers))
        elif event == "assignment":
            body = {"resolved": True, "notes": "bench"}
            asyncio.create_task(self._call(agent_id, f"/v1/contacts/{data['contact_id']}/complete", headers, body))

    async def _call(self, agent_id: str, path: str, headers: dict[str, str], body: Any = None) -> None:
        try:
            async with self.client.post(f"{self.router(agent_id)}{path}", headers=headers, json=body) as r:
                await r.read()
                if r.status >= 500:
                    self.tally.errors += 1
        except (aiohttp.ClientError, TimeoutError):
            self.tally.errors += 1


async def post_contact(client: aiohttp.ClientSession, target: Target, tally: Tally, n: int, run: str) -> None:
    external_id = f"{run}-{n}"
    body: dict[str, Any] = {
        "external_id": external_id,
        "source": "bench",
        "channel": "voice",
        "customer": {"id": f"cust-{external_id}", "phone": f"+49309{n % 10_000_000:07d}", "language": "en"},
        "intent": "support",
        "summary": "line keeps dropping",
    }
    if target.sites:
        body["site"] = target.sites[n % len(target.sites)]
    t0 = time.perf_counter()
    tally.posted[external_id] = t0
    try:
        async with client.post(f"{target.intake}/v1/contacts", json=body) as r:
            answer = await r.json() if r.status == 202 else None
            status = r.status
    except (aiohttp.ClientError, TimeoutError):
        tally.errors += 1
        return
    t1 = time.perf_counter()
    if answer is not None:
        tally.answered[answer["contact_id"]] = t1
        tally.post_ms.append((t1 - t0) * 1000)
    else:
        tally.rejected[status] = tally.rejected.get(status, 0) + 1


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
    intake_ms_per_contact: float | None = None  # None for the baseline (the relay answers posts itself)
    generator_pct: float = 0.0  # this process (load generator and agents), % of one core
    machine_pct: float = 0.0  # the whole machine, % of all its cores
    errors: int = 0  # posts, accepts and completes that failed (transport error or 5xx)
    rejected: dict[int, int] = field(default_factory=dict)  # posts answered otherwise than 202, by status

    @property
    def sustained(self) -> bool:
        return self.unoffered == 0 and bool(self.offer_ms) and pct(self.offer_ms, 99) <= PEAK_P99_MS


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered) + 0.5) - 1))]


async def group_commits(client: aiohttp.ClientSession, target: Target) -> tuple[float, float] | None:
    """(changes, commits) so far from the routers' group-commit histograms, summed over the routers;
    None where there is none."""
    total: tuple[float, float] | None = None
    for router in target.routers:
        try:
            async with client.get(f"{router}/metrics") as r:
                text = await r.text() if r.status == 200 else ""
        except (aiohttp.ClientError, TimeoutError):
            return None
        found: dict[str, float] = {}
        for line in text.splitlines():
            for part in ("sum", "count"):
                if line.startswith(f"switchboard_router_group_commit_size_{part} "):
                    found[part] = float(line.split()[1])
        if len(found) != 2:
            return None
        total = (
            (found["sum"], found["count"]) if total is None else (total[0] + found["sum"], total[1] + found["count"])
        )
    return total


def routers_cpu(target: Target) -> float:
    """CPU seconds of every router process together (the relay's for the baseline)."""
    return sum(cpu_seconds(pid) for pid in target.cpu_pids)


async def run_rate(target: Target, agents: Agents, client: aiohttp.ClientSession, rate: float, args: Any) -> Row:
    tally = agents.tally = Tally()
    run = uuid.uuid4().hex[:8]
    groups0 = await group_commits(client, target)
    cpu0 = routers_cpu(target)
    intake0 = cpu_seconds(target.intake_pid) if target.intake_pid else 0.0
    generator0, (busy0, total0) = time.process_time(), machine_cpu()
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
    cpu = routers_cpu(target) - cpu0
    intake = cpu_seconds(target.intake_pid) - intake0 if target.intake_pid else None
    busy1, total1 = machine_cpu()
    generator = time.process_time() - generator0
    wall = (total1 - total0) / max(1, os.cpu_count() or 1)
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
        intake_ms_per_contact=None if intake is None else intake * 1000 / max(1, len(tally.answered)),
        generator_pct=100 * generator / max(wall, 1e-9),
        machine_pct=100 * (busy1 - busy0) / max(total1 - total0, 1e-9),
        errors=tally.errors,
        rejected=tally.rejected,
    )


async def measure(target: Target, args: Any, after: Callable[[], Awaitable[None]] | None = None) -> list[Row]:
    """The rates one after the other on one set of agents; ``after`` runs once they are done, before the
    agents' streams close."""
    # aiohttp, not httpx, for the load: here it takes 0.15-0.3 ms of CPU per request against httpx's
    # 1.2-2.7 ms, and the load generator shares the machine with the servers it measures.
    connector = aiohttp.TCPConnector(limit=args.agents + 256)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=30)) as client:
        agents = Agents(target, args.agents, client, direct=args.direct)
        await agents.start()
        rows = []
        try:
            for rate in args.rates:
                rows.append(await run_rate(target, agents, client, rate, args))
                print_row(rows[-1])
            if agents.reopened:
                print(f"{'':<22}({agents.reopened} agent streams ended and were opened again)", flush=True)
            if after is not None:
                await after()
        finally:
            await agents.stop()
        return rows


HEADER = (
    f"{'server':<22}{'rate/s':>7}{'posted':>8}{'202s':>7}{'offered':>8}{'late':>6}"
    f"{'202 p50':>9}{'p99':>8}{'max':>8}{'offer p50':>11}{'p99':>8}{'max':>8}{'CPU ms/c':>10}{'per commit':>11}"
    f"{'intake ms/c':>12}{'gen %':>7}{'machine %':>10}"
)


def print_row(r: Row) -> None:
    print(
        f"{r.label:<22}{r.rate:>7g}{r.posted:>8}{r.accepted:>7}{r.offered:>8}{r.unoffered:>6}"
        f"{pct(r.post_ms, 50):>9.1f}{pct(r.post_ms, 99):>8.1f}{max(r.post_ms, default=float('nan')):>8.1f}"
        f"{pct(r.offer_ms, 50):>11.1f}{pct(r.offer_ms, 99):>8.1f}{max(r.offer_ms, default=float('nan')):>8.1f}"
        f"{r.cpu_ms_per_contact:>10.2f}{'-' if r.group is None else f'{r.group:.1f}':>11}"
        f"{'-' if r.intake_ms_per_contact is None else f'{r.intake_ms_per_contact:.2f}':>12}"
        f"{r.generator_pct:>7.0f}{r.machine_pct:>10.0f}",
        flush=True,
    )
    if r.errors:
        print(f"{'':<22}({r.errors} client calls failed: transport error or 5xx)", flush=True)
    if r.rejected:
        print(f"{'':<22}(posts answered otherwise than 202, by status: {dict(sorted(r.rejected.items()))})", flush=True)


def peak(rows: list[Row]) -> float | None:
    ok = [r.rate for r in rows if r.sustained]
    return max(ok) if ok else None


def print_intro(args: Any, stack: str) -> None:
    print(f"bench_e2e: {args.agents} agents, {args.duration:g} s per rate, bound {args.bound:g} s, {stack}")
    print(
        "times in ms; late = not offered within the bound; CPU = the router's (baseline: the relay's); "
        "per commit = state changes the router committed together (group commit); intake ms/c = intake's "
        "CPU per contact; gen % = this load generator's CPU, % of one core; machine % = the whole machine "
        "busy, % of all its cores (from 90 % the machine, not the server under test, sets the pace)"
    )
    if args.routers is not None:
        how = "each to the owner of its site (--direct)" if args.direct else "round-robin over the routers"
        print(
            f"several routers: {args.sites} sites, {args.partitions} partitions, ownership=partitions; agents' "
            f"calls and streams {how}; CPU and per commit = all routers together"
        )
    print(HEADER)


async def scaling_runs(args: Any, tmp_path: Path) -> dict[int, list[Row]]:
    """For each router count: fresh databases and topics, intake + callback + N routers, then the rates."""
    sites = spread_sites(args.sites, args.partitions)
    results: dict[int, list[Row]] = {}
    for count in args.routers:
        data_dir = tmp_path / f"routers-{count}"
        data_dir.mkdir()
        async with postgres_databases(args.postgres, ["intake", "router", "callback"]) as urls:
            extra = {
                "SWITCHBOARD_BUS": "kafka",
                "SWITCHBOARD_KAFKA_BOOTSTRAP_SERVERS": args.kafka,
                "SWITCHBOARD_KAFKA_PARTITIONS": str(args.partitions),
                "SWITCHBOARD_TOPIC_PREFIX": f"bench-{uuid.uuid4().hex[:8]}-",
                **{f"SWITCHBOARD_{svc.upper()}_DATABASE_URL": url for svc, url in urls.items()},
            }
            with active_routers(data_dir, extra, count, list(sites)) as target:
                split = await settled_split(target.routers, args.partitions)
                target.owners = {
                    site: router
                    for site, part in sites.items()
                    for router, held in zip(target.routers, split, strict=True)
                    if part in held
                }
                owned = [sorted(site for site, part in sites.items() if part in held) for held in split]
                print(
                    f"# {target.label}: partitions {[sorted(h) for h in split]}; sites {owned}",
                    flush=True,
                )
                before = await forwarded(target.routers)

                async def report(target: Target = target, before: dict[str, int] = before) -> None:
                    now = await forwarded(target.routers)
                    moved = {k: v - before.get(k, 0) for k, v in now.items() if v > before.get(k, 0)}
                    print(
                        f"# {target.label}: requests the routers proxied to the owner (registrations, accepts, "
                        f"completes; streams count when they end), by outcome: {moved or 0}",
                        flush=True,
                    )

                results[count] = await measure(target, args, report)
    return results


def print_scaling(results: dict[int, list[Row]], rates: list[float], baseline: list[Row] | None) -> None:
    """Per router count: peak sustained, router CPU per contact and p99 202 -> offer at each rate; the
    relay baseline (same rates, same load generator) last, as the floor of this machine."""
    cols = "".join(f"{f'{r:g}/s':>8}" for r in rates)
    print()
    print(
        f"throughput scaling (peak sustained: p99 202->offer <= {PEAK_P99_MS:g} ms, none late; "
        "CPU = all routers together, ms per contact)"
    )
    print(f"{'routers':>7}{'peak/s':>8} | {'CPU ms/c at':<11}{cols} | {'p99 202->offer ms at':<20}{cols}")
    lines: list[tuple[str, list[Row]]] = [(str(count), rows) for count, rows in results.items()]
    for name, rows in [*lines, *([("relay", baseline)] if baseline else [])]:
        best = peak(rows)
        cpu = "".join(f"{r.cpu_ms_per_contact:>8.2f}" for r in rows)
        p99 = "".join(f"{pct(r.offer_ms, 99):>8.1f}" for r in rows)
        print(f"{name:>7}{'-' if best is None else f'{best:g}':>8} | {'':<11}{cpu} | {'':<20}{p99}")


async def main_async(args: Any) -> int:
    stack = "embedded default"
    if args.kafka or args.postgres:
        if not (args.kafka and args.postgres):
            print("--kafka and --postgres go together (the production stack)", file=sys.stderr)
            return 2
        stack = "Kafka + PostgreSQL"
    elif args.routers is not None:
        if args.routers != [1]:
            print(
                "--routers N with N > 1 needs --kafka and --postgres: the embedded default runs one router "
                "(N must be 1 there)",
                file=sys.stderr,
            )
            return 2
        args.routers = None  # one router on the embedded default: the default run
    if args.routers is not None and (min(args.routers) < 1 or max(args.routers) > args.partitions):
        print(f"--routers: each N between 1 and --partitions ({args.partitions})", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="sb-bench-e2e-") as tmp:
        tmp_path = Path(tmp)
        extra: dict[str, str] = {}
        async with contextlib.AsyncExitStack() as exit_stack:
            if args.kafka and args.routers is None:
                urls = await exit_stack.enter_async_context(
                    postgres_databases(args.postgres, ["intake", "router", "callback"])
                )
                extra.update(
                    SWITCHBOARD_BUS="kafka",
                    SWITCHBOARD_KAFKA_BOOTSTRAP_SERVERS=args.kafka,
                    SWITCHBOARD_TOPIC_PREFIX=f"bench-{uuid.uuid4().hex[:8]}-",
                    **{f"SWITCHBOARD_{svc.upper()}_DATABASE_URL": url for svc, url in urls.items()},
                )
            print_intro(args, stack)
            results: dict[str, list[Row]] = {}
            if not args.no_baseline:
                (tmp_path / "relay").mkdir()
                with relay(tmp_path / "relay") as target:
                    results["baseline"] = await measure(target, args)
            scaling: dict[int, list[Row]] = {}
            if args.routers is not None:
                scaling = await scaling_runs(args, tmp_path)
                results.update({f"{n} router{'s' if n > 1 else ''}": rows for n, rows in scaling.items()})
            else:
                (tmp_path / "sb").mkdir()
                with switchboard(tmp_path / "sb", extra) as target:
                    results["switchboard"] = await measure(target, args)
                if args.async_writes and not args.kafka:
                    # The same tree with the router's SQLite writes through aiosqlite's thread, as before
                    # sqlite_inline.py: the side-by-side baseline of that change, under the same load.
                    (tmp_path / "sb-async").mkdir()
                    slow = {**extra, "SWITCHBOARD_ROUTER_SQLITE_INLINE_WRITES": "false"}
                    label = "switchboard async wr"
                    with switchboard(tmp_path / "sb-async", slow, label) as target:
                        results[label] = await measure(target, args)
    print()
    for name, rows in results.items():
        best = peak(rows)
        print(
            f"peak sustained ({name}, p99 202->offer <= {PEAK_P99_MS:g} ms, none late): "
            + (f"{best:g} contacts/s" if best is not None else "none of the rates")
        )
    if "baseline" in results and "switchboard" in results:
        for sb, base in zip(results["switchboard"], results["baseline"], strict=True):
            if sb.offer_ms and base.offer_ms:
                print(
                    f"at {sb.rate:g}/s: p99 202->offer {pct(sb.offer_ms, 99):.1f} ms "
                    f"(baseline {pct(base.offer_ms, 99):.1f}); "
                    f"CPU per contact {sb.cpu_ms_per_contact:.2f} ms, "
                    f"{sb.cpu_ms_per_contact / max(base.cpu_ms_per_contact, 0.001):.1f}x the baseline's"
                )
    if scaling:
        print_scaling(scaling, args.rates, results.get("baseline"))
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
    parser.add_argument(
        "--async-writes",
        action="store_true",
        help="embedded default: also run the router with its SQLite writes through aiosqlite's thread "
        "(SWITCHBOARD_ROUTER_SQLITE_INLINE_WRITES=false), side by side",
    )
    parser.add_argument(
        "--routers",
        type=lambda s: [int(x) for x in s.split(",")],
        default=None,
        help="N[,N...]: a run per N with N active routers (ownership=partitions; Kafka + PostgreSQL only). "
        "Default: one router in the default ownership, as without this option",
    )
    parser.add_argument("--sites", type=int, default=12, help="with --routers: sites contacts and agents spread over")
    parser.add_argument("--partitions", type=int, default=12, help="with --routers: partitions per topic")
    parser.add_argument(
        "--direct", action="store_true", help="with --routers: agents talk to their domain's owner, not round-robin"
    )
    args = parser.parse_args()
    sys.exit(asyncio.run(main_async(args)))


if __name__ == "__main__":
    main()
