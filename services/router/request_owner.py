"""Which router answers a request, when several share the database (``ownership=partitions``).

A request about one agent, offer or contact belongs to the router that owns its routing domain. Any
router may receive it (behind a Kubernetes Service or a load balancer); one that does not own the domain
forwards it to the owner's address, read from the owner's lease (``forwarding.py``). Requests about no
single domain and unknown ids are answered where they arrive: lists and stats read the shared database
(every domain); the queue without ``?site=`` and agents' presence in lists are the answering router's
own domains (``GET /v1/router/ownership`` says which), the queue of one site goes to that site's owner.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING
from urllib.parse import parse_qs

from sqlalchemy import select
from starlette.types import Scope

from services.router.forwarding import ForwardingUnavailable
from services.router.store import agents, contacts, leases, offers
from shared.events import DEFAULT_SITE
from shared.topics import routing_domain

if TYPE_CHECKING:
    from services.router.service import RouterService


async def site_of(service: RouterService, method: str, path: str, body: bytes, query_string: bytes = b"") -> str | None:
    """The site of the agent, offer or contact a ``/v1`` request is about, or the site a queue is asked
    for (None: no single one)."""
    parts = path.strip("/").split("/")
    if len(parts) < 2 or parts[0] != "v1":
        return None
    kind, ident = parts[1], (parts[2] if len(parts) > 2 else None)
    if kind == "queue" and ident is None:  # one site's line is in its owner's engine
        sites = parse_qs(query_string.decode("latin-1")).get("site")
        return sites[0] if sites else None
    if kind == "agents" and ident is None:
        if method != "POST":
            return None
        try:
            site = json.loads(body or b"{}").get("site", DEFAULT_SITE)
        except (ValueError, AttributeError):
            return None  # answered here: 422
        return site if isinstance(site, str) else None
    if ident is None:
        return None
    if kind == "agents":
        query = select(agents.c.site).where(agents.c.agent_id == ident)
    elif kind == "offers":
        query = (
            select(contacts.c.site)
            .join(offers, offers.c.contact_id == contacts.c.contact_id)
            .where(offers.c.offer_id == ident)
        )
    elif kind == "contacts":
        query = select(contacts.c.site).where(contacts.c.contact_id == ident)
    else:
        return None
    async with service.sessionmaker() as session:
        site = (await session.execute(query)).scalar()
    return None if site is None else str(site)


async def owner_url(service: RouterService, scope: Scope, body: bytes) -> str | None:
    """None: answer here; else the base URL of the router that owns the request's domain."""
    if service.domains.whole:
        return None
    site = await site_of(service, scope["method"], scope["path"], body, scope.get("query_string", b""))
    if site is None or await service.domains.owns(site):
        return None
    lease = service.ownership.partition_lease(await service.domains.partition(site))
    async with service.sessionmaker() as session:
        row = (
            await session.execute(
                select(leases.c.owner, leases.c.address, leases.c.expires_at).where(leases.c.name == lease)
            )
        ).first()
    domain = routing_domain(service.tenant_id, site)
    if row is None or row.expires_at < service.clock() or row.owner == service.ownership.owner or not row.address:
        raise ForwardingUnavailable(f"no router owns routing domain {domain!r} right now; retry")
    return str(row.address)
