"""Which routing domains this router acts on: every domain of its database (``ownership=whole``), or
those whose ``contacts`` partition it holds (``ownership=partitions``).

A routing domain is ``tenant/site`` (``shared.topics.routing_domain``), the key of its events on
``contacts``; the bus says which partition a key lands in, exactly as its producer does. The engine, the
open offers and the streams hold only owned domains: the rebuild loads nothing else.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable

from services.router.errors import NotOwnedHere
from services.router.ownership import Ownership
from shared.topics import routing_domain

PartitionOf = Callable[[str], Awaitable[int]]


class OwnedDomains:
    def __init__(self, tenant_id: str, ownership: Ownership, *, whole: bool) -> None:
        self.tenant_id = tenant_id
        self.whole = whole
        self._ownership = ownership  # the leases held are the one truth of what is owned
        self._partition_of: PartitionOf | None = None
        self._known: dict[str, int] = {}  # site -> its partition (sites are few and never move)

    @property
    def partitions(self) -> set[int]:
        return self._ownership.partitions()

    def use(self, partition_of: PartitionOf) -> None:
        """The bus's own key -> partition function (``EventBus.partition_of`` on ``contacts``)."""
        self._partition_of = partition_of

    async def partition(self, site: str) -> int:
        known = self._known.get(site)
        if known is None:
            if self._partition_of is None:
                raise RuntimeError("partition ownership needs the bus's partitioner (OwnedDomains.use)")
            known = self._known[site] = await self._partition_of(routing_domain(self.tenant_id, site))
        return known

    async def learn(self, sites: Iterable[str]) -> None:
        """Look up the partitions of these sites, so :meth:`owns_known` can answer without waiting."""
        if not self.whole:
            for site in set(sites):
                await self.partition(site)

    def owns_known(self, site: str) -> bool:
        """Owned? For a site passed to :meth:`learn` before (or any site, owning the whole database)."""
        return self.whole or self._known[site] in self.partitions

    async def owns(self, site: str) -> bool:
        return self.whole or await self.partition(site) in self.partitions

    async def require(self, site: str) -> None:
        """Refuse a change to a domain another router owns (a request that raced a move of ownership)."""
        if not await self.owns(site):
            domain = routing_domain(self.tenant_id, site)
            raise NotOwnedHere(f"routing domain {domain!r} is owned by another router now; retry")

    def owned(self) -> list[str]:
        """The domains this router acts on, of those it has seen: ``['*']`` for the whole database."""
        if self.whole:
            return ["*"]
        held = self.partitions
        return sorted(routing_domain(self.tenant_id, s) for s, p in self._known.items() if p in held)
