"""Ownership of the routing state: leases that fence every change a router makes.

The matching engine needs the whole view of a routing domain, so two routers acting on one domain would
offer a contact twice. A router therefore holds lease rows (owner, expiry) and renews them *inside every
transaction that changes state*: a router that lost a lease (paused, partitioned, replaced) cannot commit
anything, because its renewal misses a row and the transaction is rolled back. This is fencing, not just
leader election.

Two modes (``SWITCHBOARD_ROUTER_OWNERSHIP``):

* ``whole`` (the default): one lease, ``router/<tenant>``, over every domain of the database. A second
  router waits as a standby until the lease expires, then rebuilds and takes over.
* ``partitions``: one lease per partition of ``contacts`` (``router/<tenant>/contacts/<n>``); a
  partition's routing domains are the ``tenant/site`` keys that hash to it. A router takes the leases of
  the partitions its consumer is assigned (``domain_ownership.py``), so several routers are active at
  once, each over whole domains.

The two modes exclude each other on one database: a whole lease is not taken while a partition lease is
live, and no partition lease while a whole one is.
"""

from __future__ import annotations

from sqlalchemy import bindparam, insert, or_, select, update
from sqlalchemy.exc import IntegrityError

from services.router.store import leases
from shared.db import SqlSession, rowcount

WHOLE = "whole"
PARTITIONS = "partitions"

# Built once (every transaction renews): a reused construct is neither rebuilt nor re-keyed per execution.
RENEW = (
    update(leases)
    .where(leases.c.name.in_(bindparam("lease_names", expanding=True)), leases.c.owner == bindparam("lease_owner"))
    .values(expires_at=bindparam("expires_at"))
)
# One lease, the common case (one router, or a router owning one domain): an expanding IN is rewritten
# into SQL on every execution, which cost a lone transaction more than the UPDATE itself.
RENEW_ONE = (
    update(leases)
    .where(leases.c.name == bindparam("lease_name"), leases.c.owner == bindparam("lease_owner"))
    .values(expires_at=bindparam("expires_at"))
)


class OwnershipLost(RuntimeError):
    """Another router owns (some of) this state now; nothing may be changed by this one."""


class Ownership:
    """The leases this router holds: ``names`` (empty: it may change nothing)."""

    def __init__(self, name: str, owner: str, ttl_seconds: float, *, address: str | None = None) -> None:
        self.name = name  # the whole lease; partition leases are named under it
        self.owner = owner
        self.ttl = ttl_seconds
        self.address = address  # where this router answers (forwarded requests), if it shares domains
        self.names: set[str] = set()

    @property
    def held(self) -> bool:
        return bool(self.names)

    def partition_lease(self, partition: int) -> str:
        return f"{self.name}/contacts/{partition}"

    def partitions(self) -> set[int]:
        """The ``contacts`` partitions whose leases this router holds (partitions mode)."""
        prefix = f"{self.name}/contacts/"
        return {int(n[len(prefix) :]) for n in self.names if n.startswith(prefix)}

    async def try_acquire(self, session: SqlSession, now: float, name: str | None = None) -> bool:
        """Take one lease (default: the whole one) if it is free, expired or already ours (call inside a
        transaction)."""
        name = name or self.name
        if await self._other_mode_live(session, name, now):
            self.names.discard(name)
            return False
        result = await session.execute(
            update(leases)
            .where(leases.c.name == name)
            .where((leases.c.owner == self.owner) | (leases.c.expires_at < now))
            .values(owner=self.owner, expires_at=now + self.ttl, acquired_at=now, address=self.address)
        )
        if rowcount(result):
            self.names.add(name)
            return True
        exists = (await session.execute(select(leases.c.owner).where(leases.c.name == name))).first()
        if exists is not None:
            self.names.discard(name)
            return False
        try:
            async with session.begin_nested():
                await session.execute(
                    insert(leases).values(
                        name=name, owner=self.owner, expires_at=now + self.ttl, acquired_at=now, address=self.address
                    )
                )
        except IntegrityError:  # another router inserted it first
            self.names.discard(name)
            return False
        self.names.add(name)
        return True

    async def _other_mode_live(self, session: SqlSession, name: str, now: float) -> bool:
        """Is a lease of the other mode held by another router (whole vs partitions on one database)?"""
        other = (
            leases.c.name.startswith(f"{self.name}/", autoescape=True)
            if name == self.name
            else leases.c.name == self.name
        )
        found = await session.execute(
            select(leases.c.name).where(other, leases.c.owner != self.owner, leases.c.expires_at >= now).limit(1)
        )
        return found.first() is not None

    def renewal(self, now: float) -> tuple[list[str], float]:
        """The leases to extend and until when; raises :class:`OwnershipLost` if none is held."""
        names = sorted(self.names)
        if not names:
            raise OwnershipLost(f"router {self.owner} holds no lease under {self.name!r}")
        return names, now + self.ttl

    def confirm(self, names: list[str], renewed: set[str]) -> None:
        """Raise :class:`OwnershipLost` if a lease of ``names`` was not renewed (``names`` keeps the rest)."""
        lost = set(names) - renewed
        if lost:
            self.names -= lost
            raise OwnershipLost(f"router leases {sorted(lost)} are held by another instance")

    async def renew(self, session: SqlSession, now: float) -> None:
        """Extend every lease held within the caller's transaction; raise :class:`OwnershipLost` if any
        is not ours any more (then ``names`` keeps only the ones still ours). On PostgreSQL a
        transaction renews in its closing statement instead (``closing_statement.py``)."""
        names, expires_at = self.renewal(now)
        if len(names) == 1:
            params = {"lease_name": names[0], "lease_owner": self.owner, "expires_at": expires_at}
            result = await session.execute(RENEW_ONE, params)
        else:
            result = await session.execute(
                RENEW, {"lease_names": names, "lease_owner": self.owner, "expires_at": expires_at}
            )
        if rowcount(result) != len(names):
            ours = set(
                (
                    await session.execute(
                        select(leases.c.name).where(leases.c.name.in_(names), leases.c.owner == self.owner)
                    )
                ).scalars()
            )
            self.confirm(names, ours)

    async def release(self, session: SqlSession, names: set[str] | None = None) -> None:
        """Let others take these leases (default: all held) at once, instead of after their expiry."""
        names = set(self.names) if names is None else names
        if names:
            await session.execute(
                update(leases)
                .where(leases.c.name.in_(sorted(names)), leases.c.owner == self.owner)
                .values(expires_at=0.0)
            )
        self.names -= names

    async def holders(self, session: SqlSession, now: float) -> dict[str, tuple[str, str | None]]:
        """Every live lease under this router's name: lease -> (owner, address)."""
        rows = await session.execute(
            select(leases.c.name, leases.c.owner, leases.c.address).where(
                or_(leases.c.name == self.name, leases.c.name.startswith(f"{self.name}/", autoescape=True)),
                leases.c.expires_at >= now,
            )
        )
        return {row.name: (row.owner, row.address) for row in rows}
