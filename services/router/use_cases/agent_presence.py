"""Presence: an agent is reachable while its stream is open, and for a grace period after it closed.

Streams report here synchronously; the tick applies the grace period, taking an agent who stayed away
out of routing (its open offers go to the next agent) and bringing back one who returned.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import structlog

from services.router import metrics

if TYPE_CHECKING:
    from services.router.service import RouterService

log = structlog.get_logger(__name__)


def stream_opened(router: RouterService, agent_id: str) -> None:
    """An agent's stream connected (synchronous: safe from a stream's setup and teardown)."""
    now = router.clock()
    router.presence.connected(agent_id)
    router.presence_record.note(agent_id, True, now)  # for the other routers' lists
    if agent_id in router.absent and agent_id in router.engine.agent_ids():
        router.absent.discard(agent_id)
        router.engine.set_connected(agent_id, True, now)
    metrics.STREAMS_OPEN.inc()
    router.wake()


def stream_closed(router: RouterService, agent_id: str) -> None:
    """The grace period starts; the tick takes the agent out of routing when it runs out."""
    now = router.clock()
    router.presence.disconnected(agent_id, now)
    router.presence_record.note(agent_id, router.presence.is_online(agent_id), now)  # another may be open
    metrics.STREAMS_OPEN.dec()


def apply_presence(router: RouterService, now: float) -> set[str]:
    """Tell the engine about agents whose grace ran out, or who came back; return the newly gone."""
    gone: set[str] = set()
    known = set(router.engine.agent_ids())
    for agent_id in router.presence.known():
        if agent_id not in known:
            continue
        present = router.presence.is_present(agent_id, now)
        if not present and agent_id not in router.absent:
            router.absent.add(agent_id)
            router.engine.set_connected(agent_id, False, now)
            metrics.PRESENCE_LOST.inc()
            log.info("router.agent_absent", agent_id=agent_id, grace=router.presence.grace)
            gone.add(agent_id)
        elif present and agent_id in router.absent:
            router.absent.discard(agent_id)
            router.engine.set_connected(agent_id, True, now)
    return gone
