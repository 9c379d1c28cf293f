"""Faults under load, across the real services (issue 13): nothing accepted is lost.

Intake, router and callback run as real processes; a few hundred contacts are posted to intake while
agents poll, accept and complete their offers. Meanwhile each service is ``kill -9``-ed and restarted,
the router's database is unavailable for 10 s, and then the bus is unavailable for 10 s. Afterwards:
every contact intake accepted (202) was routed exactly once (accepted by one agent, or diverted to a
callback the callback service tracks), nothing is in any DLQ, no agent ever held more than its
capacity, and the router never answered a bare 500. The counts are printed.

Legs (the database fault differs by store):

* ``sqlite``: the embedded default. Another connection holds SQLite's write lock on the router's
  database for 10 s (the router's busy timeout is set to 1 s, so its writes fail as "database is locked").
* ``postgres``: embedded bus, one PostgreSQL database per service; the router's database refuses
  connections for 10 s (``ALLOW_CONNECTIONS false`` + its backends terminated). Needs
  ``SWITCHBOARD_TEST_POSTGRES_URL``. Before issue 13 this dead-lettered accepted contacts.
* ``kafka+postgres``: the same on Kafka (``KAFKA_BOOTSTRAP_SERVERS`` too).

The bus fault: on the embedded bus another connection holds the log's write lock for 10 s (no publish,
relay or offset commit gets through: intake answers 503 and the telephony side retries); on Kafka the
broker process is frozen (``SIGSTOP``, then ``SIGCONT``) for 10 s, as a network partition would look to
every client. That needs a broker on this machine (found by its listening port); with a remote broker
the Kafka leg runs without the bus fault and says so.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sqlite3
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from shared.bus.base import EventBus
from shared.topics import ALL_TOPICS, dlq
from tests.conftest import TEST_ADMIN_TOKEN
from tests.e2e.conftest import ROOT, SERVICES, ServiceProcess
from tests.postgres import fresh_database

ADMIN = TEST_ADMIN_TOKEN  # the operator token every service gets from service_env
ADMIN_HEADERS = {"Authorization": f"Bearer {ADMIN}"}
AGENTS = [f"agent-{i}" for i in range(6)]
CONTACTS = int(os.environ.get("SWITCHBOARD_FAULT_CONTACTS", "240"))
CALLBACK_SHARE = 10  # every 10th contact asks for a callback
OUTAGE_SECONDS = 10.0
BUS_OUTAGE_CONTACTS = 40  # posted while the bus is unavailable
DB_OUTAGE_CONTACTS = 20  # posted while the router's database is unavailable (its consumer must wait, not dead-letter)

pytestmark = pytest.mark.timeout(400)


@dataclass
class Stack:
    name: str
    env: dict[str, str]
    per_service: dict[str, dict[str, str]]
    outage: Callable[[float], Awaitable[None]]  # makes the router's database unavailable for n seconds
    bus: Callable[[], EventBus]
    bus_outage: Callable[[float], Awaitable[None]] | None  # makes the bus unavailable for n seconds


def local_pid_listening_on(port: int) -> int | None:
    """The pid of a process on this machine that listens on TCP ``port`` (from /proc), if any."""
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:  # 0A: LISTEN
                    inodes.add(fields[9])
    if not inodes:
        return None
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            for fd in (proc / "fd").iterdir():
                with contextlib.suppress(OSError):
                    link = os.readlink(fd)
                    if link.startswith("socket:[") and link[8:-1] in inodes:
                        return int(proc.name)
    return None


def frozen_broker_outage(bootstrap: str) -> Callable[[float], Awaitable[None]] | None:
    """Freeze the (local) Kafka broker for n seconds: every client's connection hangs, nothing errors."""
    port = int(bootstrap.split(",")[0].rsplit(":", 1)[1])
    pid = local_pid_listening_on(port)
    if pid is None:
        return None

    async def outage(seconds: float) -> None:
        os.kill(pid, signal.SIGSTOP)
        try:
            await asyncio.sleep(seconds)
        finally:
            os.kill(pid, signal.SIGCONT)

    return outage


def sqlite_lock_outage(path: Path) -> Callable[[float], Awaitable[None]]:
    async def outage(seconds: float) -> None:
        def hold() -> None:
            conn = sqlite3.connect(path, timeout=10, isolation_level=None)
            try:
                conn.execute("BEGIN EXCLUSIVE")  # every other writer now waits, then gets "database is locked"
                time.sleep(seconds)
                conn.execute("ROLLBACK")
            finally:
                conn.close()

        await asyncio.to_thread(hold)

    return outage


def postgres_refusal_outage(url: str) -> Callable[[float], Awaitable[None]]:
    import asyncpg

    base, name = url.rsplit("/", 1)
    admin_dsn = os.environ["SWITCHBOARD_TEST_POSTGRES_URL"].replace("postgresql+asyncpg://", "postgresql://")

    async def outage(seconds: float) -> None:
        admin = await asyncpg.connect(admin_dsn, timeout=5)
        try:
            await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
            await admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
                name,
            )
            await asyncio.sleep(seconds)
        finally:
            await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
            await admin.close()

    return outage


def strategy_without_wait_diversion(tmp_path: Path) -> Path:
    """The default strategy, except that a long estimated wait does not divert a contact to a callback:
    the backlog an outage builds up would otherwise turn contacts into callbacks, and the test could not
    tell which contacts an agent must serve. Contacts that ask for a callback still get one."""
    default = (ROOT / "services" / "router" / "default_strategy.yaml").read_text()
    assert "max_estimated_wait_seconds: 300" in default
    path = tmp_path / "strategy.yaml"
    path.write_text(default.replace("max_estimated_wait_seconds: 300", "max_estimated_wait_seconds: 100000000"))
    return path


@pytest.fixture(params=["sqlite", "postgres", "kafka+postgres"])
async def stack(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Stack]:
    common = {
        "SWITCHBOARD_ROUTER_STRATEGY_PATH": str(strategy_without_wait_diversion(tmp_path)),
        "SWITCHBOARD_ROUTER_PRESENCE_GRACE_SECONDS": "3600",  # agents poll instead of holding a stream
        "SWITCHBOARD_CALLBACK_SCHEDULER_ENABLED": "false",  # callbacks are tracked, not released, here
        "SWITCHBOARD_TRANSIENT_BACKOFF_MAX": "1.0",
        "SWITCHBOARD_EMBEDDED_SESSION_TIMEOUT": "3.0",
        "SWITCHBOARD_EMBEDDED_HEARTBEAT_INTERVAL": "0.25",
    }
    if request.param == "sqlite":
        from shared.bus.embedded import EmbeddedBus

        yield Stack(
            "sqlite",
            {**common, "SWITCHBOARD_SQLITE_BUSY_TIMEOUT": "1.0"},
            {},
            sqlite_lock_outage(tmp_path / "router.sqlite3"),
            lambda: EmbeddedBus(tmp_path / "bus.sqlite3"),
            sqlite_lock_outage(tmp_path / "bus.sqlite3"),
        )
        return
    kafka = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if request.param == "kafka+postgres" and not kafka:
        pytest.skip("Kafka + PostgreSQL fault leg: set KAFKA_BOOTSTRAP_SERVERS (and SWITCHBOARD_TEST_POSTGRES_URL)")
    async with contextlib.AsyncExitStack() as exits:
        urls = {svc: await exits.enter_async_context(fresh_database(f"sb_fault_{svc}")) for svc in SERVICES}
        env = {**common, **{f"SWITCHBOARD_{svc.upper()}_DATABASE_URL": url for svc, url in urls.items()}}
        per_service: dict[str, dict[str, str]] = {}
        if request.param == "postgres":
            from shared.bus.embedded import EmbeddedBus

            bus: Callable[[], EventBus] = lambda: EmbeddedBus(tmp_path / "bus.sqlite3")  # noqa: E731
            bus_outage = sqlite_lock_outage(tmp_path / "bus.sqlite3")
        else:
            from shared.bus.kafka import KafkaBus

            assert kafka is not None
            prefix = f"faults-{uuid.uuid4().hex[:8]}-"
            env.update(
                SWITCHBOARD_BUS="kafka",
                SWITCHBOARD_KAFKA_BOOTSTRAP_SERVERS=kafka,
                SWITCHBOARD_KAFKA_PARTITIONS="2",
                SWITCHBOARD_TOPIC_PREFIX=prefix,
            )
            # Dynamic membership (the default): a restarted service waits out the dead member's session (6 s).
            # Static membership was tried here: the restarted router, which subscribes only after its
            # ownership lease (5 s) is free, rejoined about when the old session expired and sometimes took
            # the whole rebalance timeout (34 s once) to get its partitions back.
            bus = lambda: KafkaBus(kafka, topic_prefix=prefix, partitions=2)  # noqa: E731
            bus_outage = frozen_broker_outage(kafka)
        yield Stack(request.param, env, per_service, postgres_refusal_outage(urls["router"]), bus, bus_outage)


@dataclass
class Tally:
    """What the clients saw."""

    accepted: dict[str, str] = field(default_factory=dict)  # external id -> contact id (202)
    callbacks_asked: set[str] = field(default_factory=set)  # contact ids that asked for a callback
    served_by: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))  # contact -> agents
    max_load: Counter[str] = field(default_factory=Counter)
    statuses: Counter[str] = field(default_factory=Counter)  # "service METHOD status" -> count
    readyz_during_outage: list[tuple[int, float]] = field(default_factory=list)

    def saw(self, what: str, status: int | str) -> None:
        self.statuses[f"{what} {status}"] += 1


async def call(
    http: httpx.AsyncClient, tally: Tally, what: str, method: str, url: str, **kwargs: Any
) -> httpx.Response | None:
    """One request; a dead or restarting service is a None (the caller retries), never an error."""
    try:
        r = await http.request(method, url, timeout=10, **kwargs)
    except httpx.HTTPError as exc:
        tally.saw(what, type(exc).__name__)
        return None
    tally.saw(what, r.status_code)
    return r


def contact_body(n: int, run: str) -> dict[str, Any]:
    return {
        "external_id": f"{run}-{n}",
        "source": "twilio",
        "channel": "voice",
        "customer": {"id": f"cust-{n}", "phone": "+4930901820", "tier": "standard", "language": "en"},
        "intent": "support",
        "summary": "line drops",
        "callback_requested": n % CALLBACK_SHARE == 0,
    }


async def post_contacts(intake: ServiceProcess, tally: Tally, numbers: list[int], run: str) -> None:
    async with httpx.AsyncClient() as http:
        for n in numbers:
            body = contact_body(n, run)
            while True:  # a telephony provider retries until it gets an answer
                r = await call(http, tally, "intake POST /v1/contacts", "POST", f"{intake.url}/v1/contacts", json=body)
                if r is not None and r.status_code == 202:
                    contact_id = r.json()["contact_id"]
                    tally.accepted[body["external_id"]] = contact_id
                    if body["callback_requested"]:
                        tally.callbacks_asked.add(contact_id)
                    break
                assert r is None or r.status_code in (429, 503), r.text
                await asyncio.sleep(0.2)
            await asyncio.sleep(0.05)


async def work(router: ServiceProcess, agent: str, headers: dict[str, str], tally: Tally, stop: asyncio.Event) -> None:
    """An agent's client: poll offers and accept them; complete whatever is assigned to it (also when the
    accept's answer was lost in a crash), become available again; retry through outages."""
    base = router.url
    mine: set[str] = set()  # contacts this agent was assigned

    def assigned(contact_id: str) -> None:
        if contact_id not in mine:
            mine.add(contact_id)
            tally.served_by[contact_id].append(agent)

    async with httpx.AsyncClient() as http:
        while not stop.is_set():
            r = await call(http, tally, "router GET offers", "GET", f"{base}/v1/agents/{agent}/offers", headers=headers)
            for offer in r.json()["items"] if r is not None and r.status_code == 200 else []:
                r = await call(
                    http,
                    tally,
                    "router POST accept",
                    "POST",
                    f"{base}/v1/offers/{offer['offer_id']}/accept",
                    headers=headers,
                )
                if r is not None and r.status_code == 200:
                    assigned(offer["contact_id"])
            r = await call(
                http, tally, "router GET assignments", "GET", f"{base}/v1/agents/{agent}/assignments", headers=headers
            )
            if r is None or r.status_code != 200:
                await asyncio.sleep(0.1)
                continue
            tally.max_load[agent] = max(tally.max_load[agent], r.json()["count"])
            for item in r.json()["items"]:
                contact_id = item["contact_id"]
                assigned(contact_id)
                while True:
                    r = await call(
                        http,
                        tally,
                        "router POST complete",
                        "POST",
                        f"{base}/v1/contacts/{contact_id}/complete",
                        headers=headers,
                        json={"resolved": True},
                    )
                    if r is not None and r.status_code in (200, 409):
                        break
                    await asyncio.sleep(0.2)
                while True:  # end the wrap-up early, as an agent's client does
                    r = await call(
                        http,
                        tally,
                        "router PUT status",
                        "PUT",
                        f"{base}/v1/agents/{agent}/status",
                        headers=headers,
                        json={"status": "available"},
                    )
                    if r is not None and r.status_code == 200:
                        break
                    await asyncio.sleep(0.2)
            await asyncio.sleep(0.05)


async def watch_readyz(router: ServiceProcess, tally: Tally, stop: asyncio.Event) -> None:
    async with httpx.AsyncClient() as http:
        while not stop.is_set():
            started = time.monotonic()
            with contextlib.suppress(httpx.HTTPError):
                r = await http.get(f"{router.url}/readyz", timeout=10)
                tally.readyz_during_outage.append((r.status_code, time.monotonic() - started))
            await asyncio.sleep(0.25)


async def restart(proc: ServiceProcess) -> float:
    """``kill -9``, start again on the same port and data; seconds until it says ready again."""
    proc.kill()
    started = time.monotonic()
    try:
        await asyncio.to_thread(proc.start, 60.0)
    except AssertionError as exc:
        with contextlib.suppress(httpx.HTTPError):
            exc.add_note(f"{proc.service} /readyz: {httpx.get(f'{proc.url}/readyz', timeout=5).text}")
        raise
    return time.monotonic() - started


async def test_nothing_accepted_is_lost_through_kills_and_a_database_outage(stack: Stack, tmp_path: Path) -> None:
    def start(service: str) -> ServiceProcess:
        return ServiceProcess(service, tmp_path, {**stack.env, **stack.per_service.get(service, {})}).start(60)

    procs = {svc: start(svc) for svc in SERVICES}
    intake, router, callback = procs["intake"], procs["router"], procs["callback"]
    tally = Tally()
    stop_agents = asyncio.Event()
    run = uuid.uuid4().hex[:6]
    try:
        async with httpx.AsyncClient() as http:
            headers = {}
            for agent in AGENTS:
                r = await http.post(
                    f"{router.url}/v1/agents",
                    headers=ADMIN_HEADERS,
                    json={
                        "agent_id": agent,
                        "name": agent,
                        "roles": ["service"],
                        "languages": ["en"],
                        "capacity": {"voice": 1},
                        "status": "available",
                    },
                )
                assert r.status_code == 201, r.text
                headers[agent] = {"Authorization": f"Bearer {r.json()['token']}"}
        workers = [asyncio.create_task(work(router, a, headers[a], tally, stop_agents)) for a in AGENTS]
        posters = [
            asyncio.create_task(post_contacts(intake, tally, list(range(i, CONTACTS, 4)), run)) for i in range(4)
        ]
        timings: dict[str, float] = {}
        await asyncio.sleep(2)
        for svc in ("router", "intake", "callback"):
            timings[f"{svc} ready after kill -9"] = await restart(procs[svc])
            await asyncio.sleep(1.5)

        # The router's database is unavailable while contacts keep coming in.
        stop_watch = asyncio.Event()
        watcher = asyncio.create_task(watch_readyz(router, tally, stop_watch))
        # On a fast machine the first load is all in before this point: post more during the outage, so the
        # router has events to consume (and must wait out, not dead-letter) while it cannot write.
        db_extra = list(range(CONTACTS + BUS_OUTAGE_CONTACTS, CONTACTS + BUS_OUTAGE_CONTACTS + DB_OUTAGE_CONTACTS))
        posters += [asyncio.create_task(post_contacts(intake, tally, db_extra[i::2], run)) for i in range(2)]
        outage_started = time.monotonic()
        await stack.outage(OUTAGE_SECONDS)
        stop_watch.set()
        await watcher
        timings["database outage"] = time.monotonic() - outage_started

        # Then the bus is unavailable while more contacts come in (intake must answer 503, never a 202 it
        # cannot keep) and agents keep working.
        await asyncio.wait_for(asyncio.gather(*posters), timeout=240)
        if stack.bus_outage is not None:
            before = dict(tally.statuses)
            extra = list(range(CONTACTS, CONTACTS + BUS_OUTAGE_CONTACTS))
            posters += [asyncio.create_task(post_contacts(intake, tally, extra[i::2], run)) for i in range(2)]
            outage_started = time.monotonic()
            await stack.bus_outage(OUTAGE_SECONDS)
            timings["bus outage"] = time.monotonic() - outage_started
            refused = tally.statuses["intake POST /v1/contacts 503"] - before.get("intake POST /v1/contacts 503", 0)
            assert refused > 0, "intake answered while the bus was unavailable: its 202s could not be durable"
        else:
            print(f"\n[{stack.name}] no bus fault: the broker does not run on this machine")

        await asyncio.wait_for(asyncio.gather(*posters), timeout=240)
        expected_served = {c for c in tally.accepted.values() if c not in tally.callbacks_asked}
        deadline = time.monotonic() + 120
        while not expected_served <= set(tally.served_by):
            for w in workers:
                assert not w.done() or w.exception() is None, w.exception()
            missing = expected_served - set(tally.served_by)
            assert time.monotonic() < deadline, f"never served: {sorted(missing)[:10]} ({len(missing)} in all)"
            await asyncio.sleep(0.2)
        stop_agents.set()
        await asyncio.gather(*workers)

        async with httpx.AsyncClient() as http:
            async with asyncio.timeout(60):  # the callback service catches up with the router's events
                while True:
                    r = await http.get(f"{callback.url}/v1/callbacks", params={"limit": 1000}, headers=ADMIN_HEADERS)
                    tracked = {c["contact_id"] for c in r.json()} if r.status_code == 200 else set()
                    if tally.callbacks_asked <= tracked:
                        break
                    await asyncio.sleep(0.5)
            queue = (await http.get(f"{router.url}/v1/queue", headers=ADMIN_HEADERS)).json()

        bus = stack.bus()
        await bus.start()
        try:
            dead = {t: len(await bus.read_topic(dlq(t))) for t in ALL_TOPICS}
        finally:
            await bus.stop()

        twice = {c: agents for c, agents in tally.served_by.items() if len(agents) > 1}
        unexpected = set(tally.served_by) - set(tally.accepted.values())
        ready_codes = Counter(code for code, _ in tally.readyz_during_outage)
        slowest_readyz = max((s for _, s in tally.readyz_during_outage), default=0.0)
        router_500 = sum(n for k, n in tally.statuses.items() if k.startswith("router") and k.endswith(" 500"))
        print(
            f"\n[{stack.name}] accepted={len(tally.accepted)} served={len(tally.served_by)} "
            f"callbacks={len(tally.callbacks_asked)} (all tracked) served_twice={len(twice)} "
            f"max_load={max(tally.max_load.values(), default=0)} dead_letters={dead} queue_left={queue['count']}\n"
            f"  timings={ {k: round(v, 1) for k, v in timings.items()} } readyz_during_outage={dict(ready_codes)} "
            f"slowest_readyz={slowest_readyz:.2f}s router_500={router_500}\n"
            f"  statuses={dict(sorted(tally.statuses.items()))}"
        )
        bus_outage_contacts = BUS_OUTAGE_CONTACTS if stack.bus_outage is not None else 0
        assert len(tally.accepted) == CONTACTS + DB_OUTAGE_CONTACTS + bus_outage_contacts
        assert not twice, f"contacts assigned twice: {twice}"
        assert not unexpected
        assert all(load <= 1 for load in tally.max_load.values()), tally.max_load
        assert dead == {t: 0 for t in ALL_TOPICS}, f"valid events were dead-lettered: {dead}"
        assert queue["count"] == 0
        assert router_500 == 0, "a dependency outage must answer 503 + Retry-After, not 500"
        assert ready_codes[503] > 0, "the router said ready while its database was unavailable"
        assert slowest_readyz < 5.0, "readiness must answer within a bounded time"
    finally:
        stop_agents.set()
        for proc in procs.values():
            proc.kill()
