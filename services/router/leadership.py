"""Who acts on the routing state: this router takes the ownership lease, or waits as a standby.

The lease itself and its fencing are in ``ownership.py``; here is what the router does around it: wait
until it owns the state, take it back after losing it (and rebuild, since the other owner changed
things), and hand it over at once on a clean stop instead of making a standby wait for the expiry.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING

import structlog

from services.router import rebuild
from shared.faults import is_transient

if TYPE_CHECKING:
    from services.router.service import RouterService

log = structlog.get_logger(__name__)


async def try_acquire(router: RouterService) -> bool:
    """Take the lease if it is free, expired or already ours."""
    async with router.sessionmaker() as session, session.begin():
        now = router.clock()
        if await router.ownership.try_acquire(session, now):
            router.writer.renewed_at = now
            return True
    return False


async def acquire(router: RouterService) -> None:
    """Wait (as a standby) until this router owns the routing state."""
    waiting = False
    while True:
        try:
            if await try_acquire(router):
                break
        except Exception as exc:
            if not is_transient(exc):
                raise
            # The database is away for a moment: a standby keeps waiting, it does not die (it is healthy).
            log.warning("router.lease_unreachable", error=repr(exc)[:300])
            await asyncio.sleep(min(1.0, router.ownership.ttl / 3))
            continue
        if not waiting:
            log.warning("router.standby", lease=router.ownership.name, ttl=router.ownership.ttl)
            waiting = True
        await asyncio.sleep(min(1.0, router.ownership.ttl / 3))
    log.info("router.owner", lease=router.ownership.name, owner=router.ownership.owner)


async def regain(router: RouterService) -> None:
    """After losing ownership: wait to own it again, then rebuild (the other owner changed things)."""
    await acquire(router)
    async with router.writer.lock:
        await rebuild.from_database(router)


async def hand_over(router: RouterService) -> None:
    """Release the lease on a clean stop, so a standby takes over at once (best effort)."""
    if router.ownership.held:
        with contextlib.suppress(Exception):
            async with router.sessionmaker() as session, session.begin():
                await router.ownership.release(session)
