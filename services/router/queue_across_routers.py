"""The queue of every routing domain, whichever router is asked.

A waiting contact's place in line lives in the engine of the router that owns its domain. With several
active routers (``ownership=partitions``) any of them answers ``GET /v1/queue`` and the dashboard, so the
one asked adds the other owners' lines to its own: it asks each live lease holder's advertised address
for its local queue (marked as forwarded, so the owner answers from its own engine and asks nobody
else), then merges them in serving order (priority, then time waited). Routers call each other with the
operator token they share. An owner that does not answer makes the whole answer a 503 with
``Retry-After`` (ownership is moving, or it died and its domains are being taken over): a queue with a
silent hole would look shorter than it is. A router owning the whole database answers from its engine.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import httpx

from services.router.errors import RouterError
from services.router.forwarding import FORWARDED_BY
from shared.events import Channel

if TYPE_CHECKING:
    from services.router.service import RouterService
    from services.router.strategy import Strategy

ASK_TIMEOUT = httpx.Timeout(3.0, connect=1.0)


class OtherRouterUnavailable(RouterError):
    """An owner of some domains did not answer: the queue cannot be told whole right now."""

    status_code = 503


def serving_order(item: dict[str, Any]) -> tuple[float, float]:
    """The engine's order, as far as an item tells it: higher priority first, then longer waited."""
    return (-float(item["priority"]), -float(item["waited_seconds"]))


class QueueAcrossRouters:
    """The read side the API and the dashboard use: the router's views, with the queue made whole."""

    def __init__(
        self,
        router: RouterService,
        *,
        admin_token: str,
        instance_id: str | None,
        client: Callable[[], httpx.AsyncClient],
    ) -> None:
        self._router = router
        self._admin = {"Authorization": f"Bearer {admin_token}"}
        self._instance_id = instance_id or router.ownership.owner
        self._client = client

    # What the dashboard reads besides the queue is the router's own read side (the database's).
    @property
    def strategy(self) -> Strategy:
        return self._router.views.strategy

    def clock(self) -> float:
        return self._router.views.clock()

    async def stats(self) -> dict[str, Any]:
        return await self._router.views.stats()

    async def list_agents(self) -> list[dict[str, Any]]:
        return await self._router.views.list_agents()

    async def activity_since(self, since: float) -> list[tuple[float, float | None, float | None, str]]:
        return await self._router.views.activity_since(since)

    async def queue(
        self, *, limit: int | None = None, site: str | None = None, channel: Channel | None = None, local: bool = False
    ) -> tuple[list[dict[str, Any]], int]:
        """Waiting contacts of every domain in serving order, and how many wait in all. ``local``: this
        router's own line only (what another router asks for); a site's queue is its owner's line
        (the request was forwarded there)."""
        items, total = await self._router.views.queue(limit=limit, site=site, channel=channel)
        if local or site is not None or self._router.domains.whole:
            return items, total
        others = await self._other_owners()
        answers = await asyncio.gather(*(self._ask(url, limit, channel) for url in others))
        for more, count in answers:
            items = items + more
            total += count
        items.sort(key=serving_order)
        return (items[:limit] if limit is not None else items), total

    async def _other_owners(self) -> list[str]:
        async with self._router.sessionmaker() as session:
            holders = await self._router.ownership.holders(session, self._router.clock())
        me = self._router.ownership.owner
        return sorted({address for owner, address in holders.values() if owner != me and address})

    async def _ask(self, base_url: str, limit: int | None, channel: Channel | None) -> tuple[list[dict[str, Any]], int]:
        params: dict[str, Any] = {}
        if limit is not None:
            params["limit"] = limit
        if channel is not None:
            params["channel"] = channel.value
        headers = {**self._admin, FORWARDED_BY.decode(): self._instance_id}
        try:
            r = await self._client().get(f"{base_url}/v1/queue", params=params, headers=headers, timeout=ASK_TIMEOUT)
        except httpx.HTTPError as exc:
            raise OtherRouterUnavailable(
                f"the router at {base_url} did not answer ({type(exc).__name__}); retry"
            ) from exc
        if r.status_code != 200:
            raise OtherRouterUnavailable(f"the router at {base_url} answered {r.status_code}; retry")
        body = r.json()
        return list(body["items"]), int(body["total"])
