"""The accept path shared by every endpoint: dedupe -> publish (await the durable ack) -> record -> answer.

Order matters. The event is published *before* the idempotency row is written, and the client hears
``202`` only after both: a crash in between leaves an event without a row, so the client's retry is
published again, under the same deterministic event id, and consumers drop the copy. The other order
(row first) could remember a request whose event never made it: a lost contact answered ``duplicate``.

Concurrent identical requests in one process (telephony systems retry fast) wait for the first
instead of racing it; across processes the deterministic ids make the race harmless.
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
from services.intake.group_commit import GroupCommit
from services.intake.readiness import RecentOutcomes
from services.intake.store import (
    IdempotencyStore,
    RequestKey,
    Scope,
    StoredRequest,
    StoreUnavailable,
)
from shared.bus.base import BusUnavailable, EventBus
from shared.events import EventData, deterministic_id, encode_event
from shared.topics import route

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


@dataclass(frozen=True, slots=True)
class _Submission:
    endpoint: str
    keys: tuple[RequestKey, ...]
    fingerprint: str
    prepared: Prepared


# What a batch hands back per submission: the answer, the refusal, or the batch to wait for before
# looking again (another batch holds one of its keys).
_Outcome = Result | IntakeError | asyncio.Future[None]


class IntakeService:
    """Accepts requests in batches: one lookup, one publish and one insert serve every concurrent request.

    A request waits on one future; a batch costs three round trips however many requests it holds.
    Batches run one after another: overlapping them was measured slower (smaller batches, more
    round trips and GIL hand-offs per request). A key is *claimed* by the batch handling it until
    that batch is done: a copy of the request in the same batch waits for it and then, in the next
    batch, finds its row, so it is answered ``duplicate``, never published twice by this process.
    """

    def __init__(
        self,
        bus: EventBus,
        store: IdempotencyStore,
        *,
        source: str,
        publish_timeout: float,
        retry_after: int,
        clock: Callable[[], datetime],
        outcomes: RecentOutcomes | None = None,
    ) -> None:
        self.bus = bus
        self.store = store
        self.source = source
        self.publish_timeout = publish_timeout
        self.retry_after = retry_after
        self.clock = clock
        # What readiness learns from real requests: did the last one persist?
        self.outcomes = outcomes or RecentOutcomes(failure_window=10.0)
        self._claims: dict[str, asyncio.Future[None]] = {}
        self._accepts: GroupCommit[_Submission, _Outcome] = GroupCommit(self._accept_batch)

    def unavailable(self, reason: str, detail: str) -> IntakeError:
        return IntakeError(503, reason, detail, headers={"Retry-After": str(self.retry_after)})

    def too_slow(self) -> IntakeError:
        """A request that could not be answered within the publish timeout: 503, never a longer wait."""
        self.outcomes.failed()
        log.warning("intake.answer_timeout", timeout=self.publish_timeout)
        return self.unavailable("timeout", "event bus or idempotency store too slow, retry later")

    async def lookup(self, keys: Sequence[RequestKey]) -> StoredRequest | None:
        try:
            async with asyncio.timeout(self.publish_timeout):
                return await self.store.find(keys)
        except StoreUnavailable as exc:
            log.warning("intake.store_unavailable", error=str(exc))
            self.outcomes.failed()
            raise self.unavailable("store_unavailable", "idempotency store unavailable, retry later") from exc
        except TimeoutError:
            raise self.too_slow() from None

    async def submit(
        self,
        endpoint: str,
        keys: Sequence[RequestKey],
        fingerprint: str,
        prepare: Callable[[], Prepared],
    ) -> Result:
        """Publish the prepared event once per key set; a seen request gets its first answer back.

        ``prepare`` runs before the lookup: a duplicate (rare: a sender's retry) wastes it, every
        first-time request saves a round trip.

        The answer never waits longer than the publish timeout in all (queueing behind a slow batch
        included): past it the client hears 503 + ``Retry-After``. Its event may still be committed
        after that; the retry is then answered from the store or dropped downstream by its event id.
        """
        submission = _Submission(endpoint, tuple(keys), fingerprint, prepare())
        try:
            async with asyncio.timeout(self.publish_timeout):
                while True:
                    outcome = await self._accepts.submit(submission)
                    if isinstance(outcome, Result):
                        return outcome
                    if isinstance(outcome, IntakeError):
                        raise outcome
                    # Another copy of this request is in flight: wait for it (shielded: our cancellation
                    # must not cancel the other request's batch), then look again.
                    await asyncio.shield(outcome)
        except TimeoutError:
            raise self.too_slow() from None

    async def _accept_batch(self, batch: list[_Submission]) -> list[_Outcome]:
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        outcomes: list[_Outcome] = [done] * len(batch)
        mine: list[int] = []
        claims = self._claims
        for i, submission in enumerate(batch):  # no await in this loop: claiming is atomic
            holder = next((claims[k.hash] for k in submission.keys if k.hash in claims), None)
            if holder is not None:
                outcomes[i] = holder
                continue
            for k in submission.keys:
                claims[k.hash] = done
            mine.append(i)
        try:
            if mine:
                await self._accept_claimed(batch, mine, outcomes)
        finally:
            for i in mine:
                for k in batch[i].keys:
                    if claims.get(k.hash) is done:
                        del claims[k.hash]
            done.set_result(None)
        return outcomes

    async def _accept_claimed(self, batch: list[_Submission], mine: list[int], outcomes: list[_Outcome]) -> None:
        started = asyncio.get_running_loop().time()
        try:
            async with asyncio.timeout(self.publish_timeout):
                seen = await self.store.find_many([batch[i].keys for i in mine])
        except (StoreUnavailable, TimeoutError) as exc:
            log.warning("intake.store_unavailable", error=str(exc) or type(exc).__name__)
            self.outcomes.failed()
            for i in mine:
                outcomes[i] = self.unavailable("store_unavailable", "idempotency store unavailable, retry later")
            return
        fresh: list[int] = []
        for i, found in zip(mine, seen, strict=True):
            if found is not None:
                outcomes[i] = self._replay(batch[i], found)
            else:
                fresh.append(i)
        if not fresh:
            return
        failures = await self._publish([batch[i].prepared for i in fresh])
        now = self.clock()
        rows: list[StoredRequest] = []
        for i, failure in zip(fresh, failures, strict=True):
            if failure is not None:
                outcomes[i] = failure
                continue
            submission = batch[i]
            prepared = submission.prepared
            own_rows = [
                StoredRequest(
                    key=k,
                    resource_id=prepared.resource_id,
                    event_id=prepared.event_id,
                    site=prepared.site,
                    fingerprint=submission.fingerprint,
                    status_code=prepared.status_code,
                    media_type=prepared.media_type,
                    response=prepared.response,
                    created_at=now,
                )
                for k in submission.keys
            ]
            rows.extend(own_rows)
            outcomes[i] = Result(own_rows[0], duplicate=False)
            metrics.accepted(submission.endpoint, prepared.data.event_type).inc()
        if rows:
            self.outcomes.succeeded()
        # The events are durable: the answers stay 2xx whatever happens to their rows (a retry then
        # re-publishes the same event ids, which consumers drop). So the rows get what is left of the
        # publish timeout, not the store's lock wait (30 s): a locked store does not hold answers.
        budget = max(0.05, self.publish_timeout - (asyncio.get_running_loop().time() - started))
        try:
            async with asyncio.timeout(budget):
                await self.store.record_many(rows)
        except (StoreUnavailable, TimeoutError) as exc:
            metrics.STORE_FAILURES.inc()
            log.error("intake.record_failed", error=str(exc) or type(exc).__name__, events=len(rows))

    def _replay(self, submission: _Submission, seen: StoredRequest) -> Result | IntakeError:
        if seen.key.scope == Scope.IDEMPOTENCY_KEY and seen.fingerprint != submission.fingerprint:
            return IntakeError(
                422, "idempotency_key_reused", "Idempotency-Key was already used for a different request"
            )
        metrics.duplicates(submission.endpoint).inc()
        return Result(seen, duplicate=True)

    async def _publish(self, batch: list[Prepared]) -> list[IntakeError | None]:
        """Publish every event and wait for the bus's durable acks; per event, ``None`` or its 503."""
        started = time.perf_counter()
        records = []
        for prepared in batch:
            data = prepared.data
            topic, key = route(data)
            records.append((topic, key, encode_event(data, source=self.source, event_id=prepared.event_id)))
        try:
            async with asyncio.timeout(self.publish_timeout):
                results = await self.bus.publish_many(records)
        except TimeoutError:
            self.outcomes.failed()
            log.warning("intake.publish_timeout", timeout=self.publish_timeout, events=len(batch))
            return [
                self.unavailable("bus_timeout", "event bus did not acknowledge in time, retry later") for _ in batch
            ]
        elapsed = time.perf_counter() - started
        failures: list[IntakeError | None] = []
        for prepared, result in zip(batch, results, strict=True):
            event_type = prepared.data.event_type
            if result is None:
                metrics.publish_seconds(event_type).observe(elapsed)
                failures.append(None)
            elif isinstance(result, BusUnavailable):
                self.outcomes.failed()
                log.warning("intake.bus_unavailable", error=str(result), event_type=event_type)
                failures.append(self.unavailable("bus_unavailable", "event bus unavailable, retry later"))
            else:  # any failure to get the ack means "not accepted"
                self.outcomes.failed()
                log.error("intake.publish_failed", event_type=event_type, error=repr(result))
                failures.append(self.unavailable("bus_error", "event could not be published, retry later"))
        return failures
