"""The ``switchboard`` command: run all three services on one machine, or one service (for containers)."""

from __future__ import annotations

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
        timeout_graceful_shutdown=10,
        access_log=False,
        **uvicorn_limits(),  # idle and header-read timeouts, header size cap (SWITCHBOARD_HTTP_*)
    )


def _wait_healthy(url: str, proc: subprocess.Popen[bytes], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            if httpx.get(f"{url}/healthz", timeout=1.0).status_code == 200:
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
    data_dir: Annotated[
        Path, typer.Option(envvar="SWITCHBOARD_DATA_DIR", help="Embedded bus and databases.")
    ] = Path(".switchboard"),
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
                [sys.executable, "-m", "services.cli", name, "--host", host, "--port", str(port),
                 "--log-level", log_level],
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


def _add_dlq_commands() -> None:
    from services.dlq import cli as dlq_cli

    app.add_typer(dlq_cli, name="dlq")


_add_dlq_commands()


def main() -> None:
    app()


if __name__ == "__main__":
    main()
