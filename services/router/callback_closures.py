"""Closures of callbacks, passed on to the router that owns their domain (``ownership=partitions``).

The callback service publishes ``callback.attempted`` / ``fulfilled`` / ``breached`` on ``callbacks``,
keyed by customer (so one customer's promises stay in order). A router drops a queued callback on them,
but with several active routers the one that consumes a customer's partition is not, in general, the
one that owns the callback's routing domain. Whoever consumes it therefore publishes the same event (same
CloudEvents id) on ``contacts`` under its domain's key, where the domain's owner handles it like any
other consumed event: inbox dedupe makes a second pass-on (a crash between publish and commit) harmless.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from shared.bus import EventBus
from shared.events import CallbackAttempted, CallbackBreached, CallbackFulfilled, Envelope
from shared.topics import CONTACTS, routing_domain

if TYPE_CHECKING:
    from services.router.service import RouterService

CLOSURES = (CallbackAttempted, CallbackFulfilled, CallbackBreached)


async def pass_on(bus: EventBus, router: RouterService, envelope: Envelope) -> None:
    """Publish a callback's closure on ``contacts`` under its domain (before the offset is committed)."""
    data = envelope.payload
    if not isinstance(data, CLOSURES) or envelope.source == router.source:
        return  # not a closure, or a router's own attempt (applied where the call was completed)
    await bus.publish(CONTACTS, envelope, routing_domain(data.tenant_id, data.site))
