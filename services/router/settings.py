"""Router settings, read from ``SWITCHBOARD_ROUTER_*`` environment variables."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, PositiveInt
from pydantic_settings import BaseSettings, SettingsConfigDict


class RouterSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SWITCHBOARD_ROUTER_", env_file=".env", extra="ignore")

    database_url: str | None = Field(
        None, description="SQLAlchemy async URL; default: an SQLite file router.sqlite3 in the data dir."
    )
    admin_token: str | None = Field(
        None,
        description="Deprecated name of SWITCHBOARD_ADMIN_TOKEN (the operator token of every service); no default.",
    )
    strategy_path: Path | None = Field(
        None, description="Strategy file (YAML/TOML); default: the shipped default strategy."
    )
    offer_timeout_seconds: float | None = Field(
        None, gt=0, description="Overrides the strategy's offer timeout (seconds an offer stays open)."
    )
    presence_grace_seconds: float = Field(
        10.0, ge=0, description="How long an agent's stream may be disconnected before it gets no offers."
    )
    tick_interval_seconds: float = Field(
        0.25, gt=0, description="Period of the loop that expires offers, ends wrap-up and routes."
    )
    sqlite_inline_writes: bool = Field(
        True,
        description="SQLite: run the writer's statements on the event loop's thread once the write lock is "
        "held (lock and commit on a worker thread); false: every statement through aiosqlite's thread.",
    )
    heartbeat_seconds: float = Field(5.0, gt=0, description="SSE heartbeat (ping) interval.")
    gc_thresholds: tuple[PositiveInt, PositiveInt, PositiveInt] = Field(
        (20_000, 50, 50),
        description="The cyclic collector's thresholds once the engine is rebuilt (gc.set_threshold; "
        "Python's default is [700, 10, 10]). A young generation of 20,000 objects makes the full passes, "
        "which paused the router for up to 40 ms every few seconds at 300 contacts/s, rare: bench_e2e's "
        "p99 202 -> offer at 300/s went from 101-310 ms to 46-68 ms, memory unchanged.",
    )
    service_level_window_seconds: float = Field(
        900.0, gt=0, description="Recent window over which /v1/stats computes service level and abandonment."
    )
    ownership_ttl_seconds: float = Field(
        5.0, gt=0, description="Lease on the routing state; a standby router takes over after it expires."
    )
    consumer_group: str = Field("router", description="Consumer group on the `contacts` topic.")
    ownership: Literal["whole", "partitions"] = Field(
        "whole",
        description="whole: one active router per database (others are standbys); partitions: several "
        "active routers, each owning the routing domains of the `contacts` partitions its consumer is "
        "assigned (Kafka, or the embedded bus's leased partitions). See ownership.py.",
    )
    advertise_url: str | None = Field(
        None,
        description="Base URL at which the other routers reach this one (ownership=partitions: a request "
        "for a domain this router does not own is forwarded to its owner's URL). Required in that mode.",
    )
    callback_url: str = Field(
        "http://127.0.0.1:8003",
        description="Base URL of the callback service; the ops dashboard reads today's promises from it "
        "through the router (GET /v1/ops/promises), forwarding the viewer's own token.",
    )
