"""Ownership of the routing state: exactly one active router per database (per set of routing domains).

The matching engine needs the whole view of a domain, so two routers acting on the same state would
offer one contact twice. A router therefore holds a lease row (owner, expiry) and renews it *inside every
transaction that changes state*: a router that lost the lease (paused, partitioned, replaced) cannot
commit anything, because its renewal matches no row and the transaction is rolled back. This is fencing,
not just leader election. A second router started on the same database waits as a standby until the
lease expires, then rebuilds from the database and takes over.

With Kafka the consumer group already gives each router instance whole partitions of ``contacts`` (keyed
by routing domain); the lease is the safety net underneath (see README).
"""

from __future__ import annotations

from sqlalchemy import bindparam, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from services.router.store import leases
from shared.db import rowcount

# Built once (every transaction renews): a reused construct is neither rebuilt nor re-keyed per execution.
RENEW = (
    update(leases)
    .where(leases.c.name == bindparam("lease_name"), leases.c.owner == bindparam("lease_owner"))
    .values(expires_at=bindparam("expires_at"))
)


class OwnershipLost(RuntimeError):
    """Another router owns this state now; nothing may be changed by this one."""


class Ownership:
    def __init__(self, name: str, owner: str, ttl_seconds: float) -> None:
        self.name = name
        self.owner = owner
        self.ttl = ttl_seconds
        self.held = False

    async def try_acquire(self, session: AsyncSession, now: float) -> bool:
        """Take the lease if it is free, expired or already ours (call inside a transaction)."""
        result = await session.execute(
            update(leases)
            .where(leases.c.name == self.name)
            .where((leases.c.owner == self.owner) | (leases.c.expires_at < now))
            .values(owner=self.owner, expires_at=now + self.ttl, acquired_at=now)
        )
        if rowcount(result):
            self.held = True
            return True
        exists = (await session.execute(select(leases.c.owner).where(leases.c.name == self.name))).first()
        if exists is not None:
            self.held = False
            return False
        try:
            async with session.begin_nested():
                await session.execute(
                    insert(leases).values(name=self.name, owner=self.owner, expires_at=now + self.ttl, acquired_at=now)
                )
        except IntegrityError:  # another router inserted it first
            self.held = False
            return False
        self.held = True
        return True

    async def renew(self, session: AsyncSession, now: float) -> None:
        """Extend the lease within the caller's transaction; raise :class:`OwnershipLost` if not ours."""
        result = await session.execute(
            RENEW, {"lease_name": self.name, "lease_owner": self.owner, "expires_at": now + self.ttl}
        )
        if not rowcount(result):
            self.held = False
            raise OwnershipLost(f"router lease {self.name!r} is held by another instance")

    async def release(self, session: AsyncSession) -> None:
        await session.execute(
            update(leases).where(leases.c.name == self.name, leases.c.owner == self.owner).values(expires_at=0.0)
        )
        self.held = False
