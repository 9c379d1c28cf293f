"""The accept path shared by every endpoint: dedupe -> publish (await the durable ack) -> record -> answer.

Order matters. The event is published *before* the idempotency row is written, and the client hears
``202`` only after both: a crash in between leaves an event without a row, so the client's retry is
published again, under the same deterministic event id, and consumers drop the copy. The other order
(row first) could remember a request whose event never made it: a lost contact answered ``duplicate``.

Concurrent identical requests in one process (telephony systems retry fast) wait for the first instead
of racing it; across processes the deterministic ids make the race harmless.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import cached_property

import structlog

from services.intake import metrics
from services.intake.store import IdempotencyStore, RequestKey, Scope, StoredRequest, StoreUnavailable
from shared.bus.base import BusUnavailable, EventBus
from shared.events import EventData, deterministic_id

log = structlog.get_logger(__name__)


class IntakeError(Exception):
    """A request intake refuses; rendered as a problem body with ``status_code``."""

    def __init__(self, status_code: int, reason: str, detail: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status_code = status_code
        self.reason = reason
        self.detail = detail
        self.headers = headers or {}


@dataclass(frozen=True)
class Prepared:
    """What a first-time request publishes and answers (built only when it is not a duplicate)."""

    data: EventData
    resource_id: str
    site: str
    status_code: int
    media_type: str
    response: str

    @cached_property
    def event_id(self) -> str:
        return event_id_for(self.data.event_type, self.resource_id)


def event_id_for(event_type: str, resource_id: str) -> str:
    """Deterministic CloudEvents id: a retry that slips past the dedupe is dropped by consumers."""
    return deterministic_id("event", event_type, resource_id)


@dataclass(frozen=True, slots=True)
class Result:
    stored: StoredRequest
    duplicate: bool


class IntakeService:
    def __init__(
        self,
        bus: EventBus,
        store: IdempotencyStore,
        *,
        source: str,
        publish_timeout: float,
        retry_after: int,
        clock: Callable[[], datetime],
    ) -> None:
        self.bus = bus
        self.store = store
        self.source = source
        self.publish_timeout = publish_timeout
        self.retry_after = retry_after
        self.clock = clock
        self._inflight: dict[RequestKey, asyncio.Future[None]] = {}

    def unavailable(self, reason: str, detail: str) -> IntakeError:
        return IntakeError(503, reason, detail, headers={"Retry-After": str(self.retry_after)})

    async def lookup(self, keys: Sequence[RequestKey]) -> StoredRequest | None:
        try:
            return await self.store.find(keys)
        except StoreUnavailable as exc:
            log.warning("intake.store_unavailable", error=str(exc))
            raise self.unavailable("store_unavailable", "idempotency store unavailable, retry later") from exc

    async def submit(
        self,
        endpoint: str,
        keys: Sequence[RequestKey],
        fingerprint: str,
        prepare: Callable[[], Prepared],
    ) -> Result:
        """Publish the prepared event once per key set; a seen request gets its first answer back."""
        while True:
            waiting = next((self._inflight[k] for k in keys if k in self._inflight), None)
            if waiting is None:
                break
            await asyncio.shield(waiting)  # the first finished (or failed): look again
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        for k in keys:
            self._inflight[k] = done
        try:
            return await self._submit(endpoint, keys, fingerprint, prepare)
        finally:
            for k in keys:
                if self._inflight.get(k) is done:
                    del self._inflight[k]
            done.set_result(None)

    async def _submit(
        self,
        endpoint: str,
        keys: Sequence[RequestKey],
        fingerprint: str,
        prepare: Callable[[], Prepared],
    ) -> Result:
        seen = await self.lookup(keys)
        if seen is not None:
            if seen.key.scope == Scope.IDEMPOTENCY_KEY and seen.fingerprint != fingerprint:
                raise IntakeError(
                    422, "idempotency_key_reused", "Idempotency-Key was already used for a different request"
                )
            metrics.duplicates(endpoint).inc()
            return Result(seen, duplicate=True)

        prepared = prepare()
        await self.publish(prepared.data, prepared.event_id)
        now = self.clock()
        rows = [
            StoredRequest(
                key=k,
                resource_id=prepared.resource_id,
                event_id=prepared.event_id,
                site=prepared.site,
                fingerprint=fingerprint,
                status_code=prepared.status_code,
                media_type=prepared.media_type,
                response=prepared.response,
                created_at=now,
            )
            for k in keys
        ]
        try:
            await self.store.record(rows)
        except StoreUnavailable as exc:
            # The event is durable: the answer stays 202. A retry re-publishes the same event id.
            metrics.STORE_FAILURES.inc()
            log.error("intake.record_failed", error=str(exc), event_id=prepared.event_id)
        metrics.accepted(endpoint, prepared.data.event_type).inc()
        return Result(rows[0], duplicate=False)

    async def publish(self, data: EventData, event_id: str) -> None:
        """Return once the bus durably accepted the event; otherwise raise a 503."""
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self.publish_timeout):
                await self.bus.emit(data, source=self.source, event_id=event_id)
        except BusUnavailable as exc:
            log.warning("intake.bus_unavailable", error=str(exc), event_type=data.event_type)
            raise self.unavailable("bus_unavailable", "event bus unavailable, retry later") from exc
        except TimeoutError as exc:
            log.warning("intake.publish_timeout", timeout=self.publish_timeout, event_type=data.event_type)
            raise self.unavailable("bus_timeout", "event bus did not acknowledge in time, retry later") from exc
        except Exception as exc:  # any failure to get the ack means "not accepted"
            log.exception("intake.publish_failed", event_type=data.event_type)
            raise self.unavailable("bus_error", "event could not be published, retry later") from exc
        metrics.publish_seconds(data.event_type).observe(time.perf_counter() - started)
