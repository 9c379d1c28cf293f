"""Several active routers (``ownership=partitions``): a router owns the routing domains of the
``contacts`` partitions its consumer is assigned, and only those.

* **Assigned** (the bus calls this before it delivers any record of the partitions): take each
  partition's lease, waiting while the previous owner still holds it (a clean one released it when it was
  revoked; a killed one's lease runs out after ``OWNERSHIP_TTL_SECONDS``), then rebuild the engine from the
  database for the domains now owned. Only then are the partitions' events handled.
* **Revoked** (after the last event of the partitions was handled and committed): release their leases
  at once, so the next owner does not wait for the expiry, and rebuild without their domains.
* After either, the streams of agents whose domain this router no longer owns are ended: their clients
  reconnect, and the request is forwarded to the new owner (``forwarding.py``).

Fencing per domain is the lease renewal in every transaction (``ownership.py``): a router that lost a
partition's lease cannot commit anything until it has dropped that partition's domains.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import TYPE_CHECKING

import structlog

from services.router import rebuild
from shared.faults import is_transient
from shared.topics import CONTACTS

if TYPE_CHECKING:
    from services.router.service import RouterService

log = structlog.get_logger(__name__)


def contacts_partitions(tps: Iterable[tuple[str, int]]) -> set[int]:
    return {partition for topic, partition in tps if topic == CONTACTS}


async def take(router: RouterService, partitions: set[int]) -> None:
    """Own these partitions: their leases (waiting for them), then the state of their domains."""
    wanted = {router.ownership.partition_lease(p) for p in partitions} - router.ownership.names
    if not wanted:
        return
    waiting = False
    while True:
        try:
            async with router.writer.lock:
                gained = set()
                async with router.sessionmaker() as session, session.begin():
                    now = router.clock()
                    for name in sorted(wanted):
                        if await router.ownership.try_acquire(session, now, name):
                            gained.add(name)
                wanted -= gained
                if gained:
                    # Rebuild with what is held now (more may follow): the held partitions' domains
                    # do not wait for a partition whose old owner is slow to let go.
                    await _rebuild(router)
        except Exception as exc:
            if not is_transient(exc):
                raise
            log.warning("router.lease_unreachable", error=repr(exc)[:300])
        if not wanted:
            break
        if not waiting:
            log.info("router.partition_leases_held_elsewhere", leases=sorted(wanted))
            waiting = True
        await asyncio.sleep(min(1.0, router.ownership.ttl / 3))
    log.info("router.partitions_owned", partitions=sorted(router.domains.partitions))
    _end_streams_of_others(router)
    _record_streams_of_ours(router)
    router.wake()


async def give_up(router: RouterService, partitions: set[int]) -> None:
    """No longer own these partitions: release their leases at once and drop their domains."""
    names = {router.ownership.partition_lease(p) for p in partitions} & router.ownership.names
    if not names:
        return
    async with router.writer.lock:
        try:
            async with router.sessionmaker() as session, session.begin():
                await router.ownership.release(session, names)
        except Exception:
            # Unreachable database: the leases run out by themselves; this router stops using them now.
            router.ownership.names -= names
            log.warning("router.lease_release_failed", leases=sorted(names), exc_info=True)
        await _rebuild(router)
    log.info("router.partitions_released", partitions=sorted(partitions))
    _end_streams_of_others(router)


async def hold(router: RouterService, partitions: set[int]) -> None:
    """Before handling events of these partitions: their leases must be ours (lost meanwhile: take them
    back, which waits while another router holds them; the bus moves the partition away meanwhile)."""
    missing = {p for p in partitions if router.ownership.partition_lease(p) not in router.ownership.names}
    if missing:
        await take(router, missing)


async def _rebuild(router: RouterService) -> None:
    """The engine for exactly the domains now owned. If the database cannot be read, nothing is used
    before it was: the writer rebuilds first (``stale``), or a revoked domain's contacts, still in the
    engine, would be offered under the leases that remain."""
    try:
        await rebuild.from_database(router)
    except Exception:
        router.writer.stale = True
        raise


def _record_streams_of_ours(router: RouterService) -> None:
    """The streams of a domain's agents were on its last owner, and end with it: recorded as closed now
    (the other routers' lists count the grace period from here, as this one does) unless open here."""
    now = router.clock()
    for agent_id in router.engine.agent_ids():
        if not router.presence.is_online(agent_id):
            router.presence_record.note(agent_id, False, now)


def _end_streams_of_others(router: RouterService) -> None:
    """End the streams of agents this router no longer routes: they reconnect to the owner."""
    for agent_id in router.hub.agent_ids():
        if router.engine.agent(agent_id) is None:
            router.hub.end(agent_id)
            router.presence.forget(agent_id)
