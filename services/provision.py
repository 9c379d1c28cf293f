"""One-off provisioning steps run before the services: ``switchboard migrate`` and ``switchboard topics create``.

Both run as Kubernetes Jobs (``deploy/kubernetes/``) and compose one-shots (``docker-compose.yml``), with
the services' own settings, so they reach the same databases and the same Kafka cluster the services do.

* **migrate**: each stateful service's Alembic migrations to head, the same code the services run at
  start-up (:func:`shared.db.migrate`) against the same URL (:meth:`CommonSettings.database_url_for`).
  The services then run with ``SWITCHBOARD_MIGRATE_ON_START=false`` and only check the schema.
* **topics create**: every topic of :mod:`shared.topics` and its ``.dlq`` with
  ``SWITCHBOARD_KAFKA_PARTITIONS`` partitions and ``SWITCHBOARD_KAFKA_REPLICATION_FACTOR`` replicas, through
  the bus's own :meth:`KafkaBus.ensure_topics`. Existing topics are left as they are (never re-partitioned:
  that would move keys, hence routing domains, between partitions) and reported.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.engine import make_url

from shared import db
from shared.settings import CommonSettings
from shared.topics import ALL_TOPICS, dlq

SERVICES_DIR = Path(__file__).resolve().parent

# The services with a database of their own, and where their Alembic scripts live (the apps' MIGRATIONS).
MIGRATIONS: dict[str, Path] = {
    "intake": SERVICES_DIR / "intake" / "migrations",
    "router": SERVICES_DIR / "router" / "migrations",
    "callback": SERVICES_DIR / "callback" / "migrations",
}


def database_url(service: str, common: CommonSettings | None = None) -> str:
    """The database a service uses: ``SWITCHBOARD_<SERVICE>_DATABASE_URL``, else SQLite in the data dir."""
    common = common or CommonSettings()
    if service == "intake":
        from services.intake.settings import IntakeSettings

        override = IntakeSettings().database_url
    elif service == "router":
        from services.router.settings import RouterSettings

        override = RouterSettings().database_url
    elif service == "callback":
        from services.callback.settings import CallbackSettings

        override = CallbackSettings().database_url
    else:
        raise ValueError(f"{service} has no database")
    return common.database_url_for(service, override)


def redacted(url: str) -> str:
    return make_url(url).render_as_string(hide_password=True)


@dataclass(frozen=True)
class Migrated:
    service: str
    url: str  # password hidden
    before: tuple[str, ...]
    after: tuple[str, ...]


async def migrate(services: list[str] | None = None, common: CommonSettings | None = None) -> list[Migrated]:
    """Bring each service's database to the newest schema; idempotent (a database at head is left alone)."""
    common = common or CommonSettings()
    out: list[Migrated] = []
    for service in services or list(MIGRATIONS):
        url = database_url(service, common)
        if db.is_sqlite(url):
            common.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        before = await db.current_revisions(url)
        await db.migrate(MIGRATIONS[service], url)
        after = await db.current_revisions(url)
        heads = db.head_revisions(MIGRATIONS[service])
        if after != heads:
            raise RuntimeError(f"{service}: database at {sorted(after)} after migrating, expected {sorted(heads)}")
        out.append(Migrated(service, redacted(url), tuple(sorted(before)), tuple(sorted(after))))
    return out


@dataclass(frozen=True)
class TopicState:
    name: str  # physical name (with SWITCHBOARD_TOPIC_PREFIX)
    partitions: int
    replication_factor: int
    created: bool  # False: it existed already

    def matches(self, common: CommonSettings) -> bool:
        return self.partitions == common.kafka_partitions and self.replication_factor == common.kafka_replication_factor


def wanted_topics(common: CommonSettings) -> list[str]:
    """Physical names: each topic of shared.topics, then its DLQ."""
    return [common.topic_prefix + name for topic in ALL_TOPICS for name in (topic, dlq(topic))]


async def create_topics(common: CommonSettings | None = None, *, wait: float = 60.0) -> list[TopicState]:
    """Create the missing topics (and DLQs) on the Kafka cluster of ``SWITCHBOARD_KAFKA_BOOTSTRAP_SERVERS``.

    Waits up to ``wait`` seconds for the cluster to answer (a Job may start before the brokers)."""
    from shared.bus.kafka import KafkaBus

    common = common or CommonSettings()
    bus = KafkaBus(
        common.kafka_bootstrap_servers,
        partitions=common.kafka_partitions,
        replication_factor=common.kafka_replication_factor,
        topic_prefix=common.topic_prefix,
        publish_timeout=max(common.kafka_publish_timeout, 10.0),
    )
    names = wanted_topics(common)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    try:
        while True:
            try:
                admin = await bus.admin()
                existing = set(await admin.list_topics())
                break
            except Exception:
                await bus.stop()  # drop a half-connected admin client before trying again
                if loop.time() >= deadline:
                    raise
                await asyncio.sleep(2.0)
        await bus.ensure_topics([common.topic_prefix + t for t in ALL_TOPICS])
        for _ in range(20):  # a topic just created may take a moment to show in the metadata
            described = {t["topic"]: t for t in await admin.describe_topics(names)}
            if all(described.get(n, {}).get("partitions") for n in names):
                break
            await asyncio.sleep(0.5)
    finally:
        await bus.stop()
    out: list[TopicState] = []
    for name in names:
        partitions = described.get(name, {}).get("partitions", [])
        replicas = max((len(p.get("replicas", [])) for p in partitions), default=0)
        out.append(TopicState(name, len(partitions), replicas, created=name not in existing))
    return out
