"""Agent client streams and presence.

The hub fans out messages to every open stream of an agent (an agent may have a desk client and a
phone open). Presence is the set of open streams: an agent whose last stream closed is still considered
present for a grace period (a reconnecting browser, a router restart), then gets no offers until it
connects again. Presence is deliberately not persisted: after a restart every agent starts its grace
period, which is exactly the time its client needs to reconnect.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict
from dataclasses import dataclass

from pydantic import BaseModel

_QUEUE_LIMIT = 1000  # a client that stops reading is cut off rather than growing memory forever


@dataclass(frozen=True, slots=True)
class StreamMessage:
    event: str
    data: BaseModel  # the event's model (stream_events.py), serialised when it is sent


class StreamHub:
    def __init__(self) -> None:
        self._queues: dict[str, set[asyncio.Queue[StreamMessage | None]]] = defaultdict(set)

    def open(self, agent_id: str) -> asyncio.Queue[StreamMessage | None]:
        queue: asyncio.Queue[StreamMessage | None] = asyncio.Queue(maxsize=_QUEUE_LIMIT)
        self._queues[agent_id].add(queue)
        return queue

    def close(self, agent_id: str, queue: asyncio.Queue[StreamMessage | None]) -> None:
        queues = self._queues.get(agent_id)
        if queues is not None:
            queues.discard(queue)
            if not queues:
                del self._queues[agent_id]

    def connections(self, agent_id: str) -> int:
        return len(self._queues.get(agent_id, ()))

    def publish(self, agent_id: str, event: str, data: BaseModel) -> None:
        message = StreamMessage(event, data)
        for queue in list(self._queues.get(agent_id, ())):
            try:
                queue.put_nowait(message)
            except asyncio.QueueFull:
                # The client is not reading: end its stream (it reconnects and gets a fresh snapshot).
                self.close(agent_id, queue)
                with contextlib.suppress(asyncio.QueueFull, asyncio.QueueEmpty):
                    queue.get_nowait()
                    queue.put_nowait(None)

    def agent_ids(self) -> list[str]:
        """Agents with at least one open stream."""
        return list(self._queues)

    def end(self, agent_id: str) -> None:
        """Ask the agent's streams to end (its domain moved to another router: the client reconnects)."""
        for queue in list(self._queues.get(agent_id, ())):
            with contextlib.suppress(asyncio.QueueFull, asyncio.QueueEmpty):
                if queue.full():  # a client not reading: make room for the end
                    queue.get_nowait()
                queue.put_nowait(None)

    def shutdown(self) -> None:
        """Ask every open stream to end (service shutdown)."""
        for queues in list(self._queues.values()):
            for queue in list(queues):
                with contextlib.suppress(asyncio.QueueFull, asyncio.QueueEmpty):
                    queue.put_nowait(None)


class Presence:
    """Who may get offers: an open stream, or a stream closed less than ``grace`` seconds ago.

    ``since`` for an agent that never connected is when the router learned about it (registration or
    start-up), so a new agent or a restarted router gives clients the grace period to (re)connect.
    """

    def __init__(self, grace_seconds: float) -> None:
        self.grace = grace_seconds
        self._open: dict[str, int] = {}
        self._gone_since: dict[str, float] = {}

    def track(self, agent_id: str, now: float) -> None:
        if agent_id not in self._open and agent_id not in self._gone_since:
            self._gone_since[agent_id] = now

    def forget(self, agent_id: str) -> None:
        self._open.pop(agent_id, None)
        self._gone_since.pop(agent_id, None)

    def connected(self, agent_id: str) -> None:
        self._open[agent_id] = self._open.get(agent_id, 0) + 1
        self._gone_since.pop(agent_id, None)

    def disconnected(self, agent_id: str, now: float) -> None:
        left = self._open.get(agent_id, 0) - 1
        if left > 0:
            self._open[agent_id] = left
        else:
            self._open.pop(agent_id, None)
            self._gone_since[agent_id] = now

    def known(self) -> list[str]:
        return [*self._open, *self._gone_since]

    def is_online(self, agent_id: str) -> bool:
        return agent_id in self._open

    def is_present(self, agent_id: str, now: float) -> bool:
        if agent_id in self._open:
            return True
        since = self._gone_since.get(agent_id)
        return since is not None and now - since < self.grace

    def disconnected_since(self, agent_id: str) -> float | None:
        return self._gone_since.get(agent_id)
