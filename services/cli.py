"""The ``switchboard`` command: run all three services on one machine, or one service (for containers)."""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
import sys
import time
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import httpx
import typer

app = typer.Typer(
    help="Switchboard: event-driven routing core for contact centres.",
    no_args_is_help=True,
    add_completion=False,
)

DEFAULT_PORTS = {"intake": 8001, "router": 8002, "callback": 8003, "connector": 8004}


class Service(StrEnum):
    intake = "intake"
    router = "router"
    callback = "callback"
    connector = "connector"


def _factory(service: str) -> str:
    return f"services.{service}.app:create_app"


PRIVATE_UMASK = 0o077  # data files (databases, bus log, token) hold phone numbers and secrets: owner only


def _serve(service: str, host: str, port: int, log_level: str) -> None:
    import uvicorn

    os.umask(PRIVATE_UMASK)
    # Intake requires webhook signatures unless it listens on loopback only: it must know where it listens.
    os.environ["SWITCHBOARD_INTAKE_LISTEN_HOST"] = host
    from shared.http_server import uvicorn_limits

    uvicorn.run(
        _factory(service),
        factory=True,
        host=host,
        port=port,
        log_level=log_level.lower(),
        log_config=None,  # our structlog configuration owns the root logger
        access_log=False,
        # idle and header-read timeouts, header size cap, graceful shutdown (SWITCHBOARD_HTTP_*)
        **uvicorn_limits(),
    )


def _wait_healthy(url: str, proc: subprocess.Popen[bytes], timeout: float) -> bool:
    """Wait until the service serves: ``/readyz`` (a router answers ``/healthz`` already as a standby)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            if httpx.get(f"{url}/readyz", timeout=2.0).status_code == 200:
                return True
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    return False


def _admin_token(data_dir: Path) -> str:
    """The operator token of this data dir, for all three services: generated once, kept (0600) so it
    survives restarts. Created with O_EXCL and mode 0600, so it is never readable by others, not even
    for a moment, and two concurrent starts cannot both write it."""
    path = data_dir / "admin-token"
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        os.chmod(path, 0o600)  # a token file from an older version may be world-readable
        return path.read_text().strip()
    token = secrets.token_urlsafe(32)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    return token


def _stop_all(procs: dict[str, subprocess.Popen[bytes]], grace: float = 15.0) -> None:
    for proc in procs.values():
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace
    for proc in procs.values():
        remaining = max(0.1, deadline - time.monotonic())
        try:
            proc.wait(timeout=remaining)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@app.command()
def run(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    intake_port: Annotated[int, typer.Option(help="Intake port.")] = DEFAULT_PORTS["intake"],
    router_port: Annotated[int, typer.Option(help="Router port.")] = DEFAULT_PORTS["router"],
    callback_port: Annotated[int, typer.Option(help="Callback port.")] = DEFAULT_PORTS["callback"],
    data_dir: Annotated[Path, typer.Option(envvar="SWITCHBOARD_DATA_DIR", help="Embedded bus and databases.")] = Path(
        ".switchboard"
    ),
    log_level: Annotated[str, typer.Option(envvar="SWITCHBOARD_LOG_LEVEL")] = "INFO",
    startup_timeout: Annotated[float, typer.Option(help="Seconds to wait for each service.")] = 60.0,
) -> None:
    """Start intake, router and callback as three processes on the embedded default; Ctrl-C stops all."""
    os.umask(PRIVATE_UMASK)
    data_dir = data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    ports = {"intake": intake_port, "router": router_port, "callback": callback_port}
    env = {**os.environ, "SWITCHBOARD_DATA_DIR": str(data_dir)}
    env.setdefault("SWITCHBOARD_LOG_JSON", "true")
    given_token = env.get("SWITCHBOARD_ADMIN_TOKEN") or env.get("SWITCHBOARD_ROUTER_ADMIN_TOKEN")
    env["SWITCHBOARD_ADMIN_TOKEN"] = given_token or _admin_token(data_dir)
    # The ops dashboard reads today's promises from the callback service through the router.
    local = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    env.setdefault("SWITCHBOARD_ROUTER_CALLBACK_URL", f"http://{local}:{callback_port}")
    procs: dict[str, subprocess.Popen[bytes]] = {}

    def _interrupt(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    # Explicitly, not by default: a shell starts background jobs with SIGINT ignored, and then Python would
    # never raise KeyboardInterrupt. SIGTERM (process managers, containers) stops just like Ctrl-C.
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        for name, port in ports.items():
            procs[name] = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "services.cli",
                    name,
                    "--host",
                    host,
                    "--port",
                    str(port),
                    "--log-level",
                    log_level,
                ],
                env=env,
            )
        for name, port in ports.items():
            if not _wait_healthy(f"http://{host}:{port}", procs[name], startup_timeout):
                typer.echo(f"switchboard: {name} did not become healthy on port {port}", err=True)
                _stop_all(procs)
                raise typer.Exit(1)
        typer.echo(f"Switchboard is running (data in {data_dir}, bus: {env.get('SWITCHBOARD_BUS', 'embedded')})")
        for name, port in ports.items():
            typer.echo(f"  {name:<9} http://{host}:{port}   docs: http://{host}:{port}/docs")
        if not given_token:
            token = env["SWITCHBOARD_ADMIN_TOKEN"]
            typer.echo(f"  admin token (all services): {token}  (kept in {data_dir}/admin-token)")
        typer.echo("Press Ctrl-C to stop.")
        while True:
            for name, proc in procs.items():
                if proc.poll() is not None:
                    typer.echo(f"switchboard: {name} exited with {proc.returncode}; stopping", err=True)
                    _stop_all(procs)
                    raise typer.Exit(1)
            time.sleep(0.5)
    except KeyboardInterrupt:
        typer.echo("Stopping...")
        _stop_all(procs)
        typer.echo("Stopped.")


def _healthy(url: str) -> bool:
    """Serving (``/readyz``), not merely alive: the demo talks to the API next."""
    try:
        return httpx.get(f"{url}/readyz", timeout=2.0).status_code == 200
    except httpx.HTTPError:
        return False


@app.command()
def demo(
    duration: Annotated[float, typer.Option(min=1, help="Seconds of simulated traffic.")] = 60.0,
    rate: Annotated[float, typer.Option(min=0.1, max=6000, help="Contacts per minute (Poisson arrivals).")] = 20.0,
    handle_seconds: Annotated[
        float, typer.Option(min=0.1, help="Mean seconds a simulated agent works a contact.")
    ] = 6.0,
    host: Annotated[str, typer.Option(help="Where the services listen (or will).")] = "127.0.0.1",
    intake_port: Annotated[int, typer.Option()] = DEFAULT_PORTS["intake"],
    router_port: Annotated[int, typer.Option()] = DEFAULT_PORTS["router"],
    callback_port: Annotated[int, typer.Option()] = DEFAULT_PORTS["callback"],
    data_dir: Annotated[
        Path, typer.Option(envvar="SWITCHBOARD_DATA_DIR", help="Used when the demo starts the services.")
    ] = Path(".switchboard"),
    start: Annotated[bool, typer.Option(help="Start the services on the embedded default if none answer.")] = True,
    keep_running: Annotated[bool, typer.Option(help="Leave services the demo started running until Ctrl-C.")] = False,
    seed: Annotated[int | None, typer.Option(help="Random seed, for a repeatable mix.")] = None,
) -> None:
    """Register a team in all three roles and play simulated customers and agents against the services
    (started here on the embedded default if none answer); prints where to watch, then a summary."""
    import asyncio

    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    from services.demo import Demo, Urls

    console = Console()
    urls = Urls(*(f"http://{host}:{p}" for p in (intake_port, router_port, callback_port)))
    data_dir = data_dir.resolve()
    started: subprocess.Popen[bytes] | None = None
    if not all(_healthy(u) for u in (urls.intake, urls.router, urls.callback)):
        if not start:
            typer.echo("switchboard demo: the services do not answer (start them with `switchboard run`)", err=True)
            raise typer.Exit(1)
        data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        log = (data_dir / "demo-services.log").open("ab")
        started = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "services.cli",
                "run",
                "--host",
                host,
                "--intake-port",
                str(intake_port),
                "--router-port",
                str(router_port),
                "--callback-port",
                str(callback_port),
                "--data-dir",
                str(data_dir),
                "--log-level",
                "WARNING",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        console.print(f"Starting the services on the embedded default (data in {data_dir}, log: {log.name}) ...")
        deadline = time.monotonic() + 90
        while not all(_healthy(u) for u in (urls.intake, urls.router, urls.callback)):
            if started.poll() is not None or time.monotonic() > deadline:
                typer.echo(f"switchboard demo: the services did not start; see {log.name}", err=True)
                _stop_all({"run": started})
                raise typer.Exit(1)
            time.sleep(0.3)
    token = os.environ.get("SWITCHBOARD_ADMIN_TOKEN") or os.environ.get("SWITCHBOARD_ROUTER_ADMIN_TOKEN")
    if not token:
        path = data_dir / "admin-token"
        if not path.exists():
            typer.echo("switchboard demo: set SWITCHBOARD_ADMIN_TOKEN (or --data-dir of `switchboard run`)", err=True)
            raise typer.Exit(1)
        token = path.read_text().strip()

    def where(tokens: dict[str, str]) -> None:
        console.print(f"\n[b]Ops dashboard[/b]  {urls.router}/ops/dashboard   (paste the admin token: {token})")
        console.print(
            f"[b]Agent console[/b]  {urls.router}/agent   (paste an agent token; the simulated agent keeps working)"
        )
        for agent_id, agent_token in tokens.items():
            console.print(f"  {agent_id:<10} {agent_token}")
        console.print(f"[b]Metrics[/b]  {urls.intake}/metrics  {urls.router}/metrics  {urls.callback}/metrics\n")

    runner = Demo(urls, token, rate_per_minute=rate, handle_seconds=handle_seconds, seed=seed)
    try:
        with Progress(
            TextColumn("[progress.description]{task.description}"),
            BarColumn(),
            TextColumn("{task.fields[posted]}"),
            TimeRemainingColumn(),
            console=console,
            transient=False,
        ) as progress:
            task = progress.add_task("simulated traffic", total=duration, posted="")
            began = time.monotonic()

            def tick() -> None:
                t = runner.tally
                posted = sum(t.posted.values()) + t.callback_requests
                progress.update(
                    task,
                    completed=min(duration, time.monotonic() - began),
                    posted=f"{posted} contacts, {t.accepted} accepted, {t.completed} completed",
                )

            async def ticker() -> None:
                while True:
                    tick()
                    await asyncio.sleep(0.5)

            async def main() -> dict[str, object]:
                def ready(tokens: dict[str, str]) -> None:
                    nonlocal began
                    where(tokens)
                    began = time.monotonic()

                bar = asyncio.create_task(ticker())
                try:
                    return await runner.run(duration, tick, on_ready=ready)
                finally:
                    bar.cancel()
                    tick()

            figures = asyncio.run(main())
        _print_summary(console, runner, figures)
        if started is not None and keep_running:
            console.print("The services keep running; Ctrl-C stops them.")
            with contextlib.suppress(KeyboardInterrupt):
                started.wait()
    finally:
        if started is not None:
            _stop_all({"run": started})


def _print_summary(console: object, runner: object, figures: dict[str, object]) -> None:
    """The closing table: what the demo did, and what the services say about it."""
    from rich.table import Table

    t = runner.tally  # type: ignore[attr-defined]
    table = Table(title="switchboard demo: summary")
    table.add_column("figure")
    table.add_column("value", justify="right")
    posted = ", ".join(f"{k} {v}" for k, v in sorted(t.posted.items())) or "none"
    table.add_row("contacts posted", f"{sum(t.posted.values())} ({posted})")
    table.add_row("web callback requests", str(t.callback_requests))
    table.add_row("offers / accepted / declined", f"{t.offers} / {t.accepted} / {t.declined}")
    table.add_row("completed / abandoned", f"{t.completed} / {t.abandoned}")
    dash = figures.get("dashboard") or {}
    assert isinstance(dash, dict)
    for channel, sl in sorted((dash.get("service_level") or {}).items()):
        share = sl.get("share")
        value = "–" if share is None else f"{share:.0%}"
        table.add_row(
            f"service level {channel}",
            f"{value} (target {sl.get('target_share', 0):.0%} within {sl.get('within_seconds', 0):g} s)",
        )
    ss = dash.get("sales_share") or {}
    if ss:
        share = ss.get("share")
        table.add_row("sales share", f"{'–' if share is None else f'{share:.0%}'} (cap {ss.get('cap', 0):.0%})")
    table.add_row("sold (simulated)", str(t.sold))
    gw = dash.get("goodwill") or {}
    table.add_row("goodwill spent", f"{float(gw.get('spent', t.goodwill)):g}")
    promises = figures.get("promises") or {}
    assert isinstance(promises, dict)
    if promises:
        rate = promises.get("same_day_fulfilment_rate")
        table.add_row(
            "promises today: made / kept / open / broken",
            f"{promises['promised']} / {promises['fulfilled']} / {promises['open']} / {promises['breached']}"
            + ("" if rate is None else f" ({rate:.0%} kept)"),
        )
    if t.errors:
        table.add_row("errors", ", ".join(f"{k}: {v}" for k, v in t.errors.most_common()))
    console.print(table)  # type: ignore[attr-defined]


def _one(service: Service):  # type: ignore[no-untyped-def]
    def command(
        host: Annotated[str, typer.Option()] = "127.0.0.1",
        port: Annotated[int, typer.Option()] = DEFAULT_PORTS[service.value],
        log_level: Annotated[str, typer.Option(envvar="SWITCHBOARD_LOG_LEVEL")] = "INFO",
    ) -> None:
        _serve(service.value, host, port, log_level)

    command.__doc__ = f"Run the {service.value} service alone (for containers)."
    return command


for _svc in Service:
    app.command(name=_svc.value)(_one(_svc))


@app.command()
def asyncapi(
    out: Annotated[Path | None, typer.Option(help="Write the AsyncAPI document here (default: stdout).")] = None,
    schemas: Annotated[
        Path | None, typer.Option(help="Also write each event type's data schema (<type>.json) into this folder.")
    ] = None,
) -> None:
    """The event contract: an AsyncAPI 3.0 document (topics, keys, CloudEvents messages) and, with --schemas,
    the JSON Schemas that events' dataschema names. The repository's copies: docs/asyncapi.yaml, schemas/."""
    from shared.asyncapi import render_asyncapi, write

    if out is None:
        typer.echo(render_asyncapi(), nl=False)
    for path in write(out, schemas):
        typer.echo(f"wrote {path}", err=True)


@app.command()
def migrate(
    service: Annotated[
        list[str] | None,
        typer.Option(
            "--service", "-s", help="Only this service's database (repeatable; default: intake, router, callback)."
        ),
    ] = None,
) -> None:
    """Bring the services' databases to the newest schema (Alembic upgrade head) and exit; idempotent.

    Same settings as the services (SWITCHBOARD_<SERVICE>_DATABASE_URL, else SQLite in SWITCHBOARD_DATA_DIR).
    Run it before the services where they start with SWITCHBOARD_MIGRATE_ON_START=false (a Kubernetes Job,
    the compose one-shot)."""
    import asyncio

    from services.provision import MIGRATIONS
    from services.provision import migrate as run_migrations

    unknown = sorted(set(service or []) - set(MIGRATIONS))
    if unknown:
        typer.echo(f"switchboard migrate: no database for {', '.join(unknown)} (known: {', '.join(MIGRATIONS)})")
        raise typer.Exit(2)
    os.umask(PRIVATE_UMASK)  # SQLite files hold customers' data: owner only
    for m in asyncio.run(run_migrations(service or None)):
        change = "already at" if m.before == m.after else f"{','.join(m.before) or '(empty)'} ->"
        typer.echo(f"{m.service:<9} {change} {','.join(m.after)}  {m.url}")


topics_cli = typer.Typer(help="Kafka topics of the event contract (shared/topics.py).", no_args_is_help=True)
app.add_typer(topics_cli, name="topics")


@topics_cli.command("create")
def topics_create(
    wait: Annotated[float, typer.Option(min=0, help="Seconds to wait for the Kafka cluster to answer.")] = 60.0,
) -> None:
    """Create every topic and its DLQ on SWITCHBOARD_KAFKA_BOOTSTRAP_SERVERS with SWITCHBOARD_KAFKA_PARTITIONS
    partitions and SWITCHBOARD_KAFKA_REPLICATION_FACTOR replicas; existing topics are kept (never
    re-partitioned) and reported. Exits 0 when every topic exists afterwards."""
    import asyncio

    from services.provision import create_topics
    from shared.settings import CommonSettings

    common = CommonSettings()
    if common.bus != "kafka":
        typer.echo("switchboard topics create: SWITCHBOARD_BUS is not kafka; the embedded bus needs no topics")
        return
    states = asyncio.run(create_topics(common, wait=wait))
    missing = [t.name for t in states if t.partitions == 0]
    width = max(len(t.name) for t in states) + 1
    for t in states:
        what = "created" if t.created else "exists"
        note = ""
        if t.partitions and not t.matches(common):
            note = (
                f"  (settings say {common.kafka_partitions} partitions x {common.kafka_replication_factor}; "
                "left as it is)"
            )
        typer.echo(f"{t.name:<{width}} {what:<8} partitions={t.partitions} replication={t.replication_factor}{note}")
    if missing:
        typer.echo(f"switchboard topics create: not visible after creation: {', '.join(missing)}", err=True)
        raise typer.Exit(1)


def _add_dlq_commands() -> None:
    from services.dlq import cli as dlq_cli

    app.add_typer(dlq_cli, name="dlq")


_add_dlq_commands()


def main() -> None:
    app()


if __name__ == "__main__":
    main()
