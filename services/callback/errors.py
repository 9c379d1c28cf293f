"""Refusals of the callback use cases; the API turns each into its HTTP answer (404, 409, 422)."""

from __future__ import annotations

from datetime import UTC, datetime

from services.callback.store import Commitment


class CommitmentNotFound(LookupError):
    pass


class AttemptBeforeRequest(ValueError):
    """An attempt dated before the commitment existed (API input error)."""


class CommitmentClosed(ValueError):
    """An attempt typed in for a promise that has already ended (API: 409)."""

    def __init__(self, c: Commitment) -> None:
        super().__init__(f"callback {c.id} is {c.status}" + (f" ({c.close_reason})" if c.close_reason else ""))
        self.status = c.status
        self.close_reason = c.close_reason


class AttemptTooSoon(ValueError):
    """An attempt typed in inside the retry spacing after the previous one (API: 409)."""

    def __init__(self, c: Commitment, at: datetime) -> None:
        retry_at = c.not_before if c.not_before.tzinfo else c.not_before.replace(tzinfo=UTC)
        super().__init__(
            f"attempt at {at.isoformat()} is inside the retry spacing; the next attempt is allowed from "
            f"{retry_at.isoformat()}"
        )
        self.retry_at = retry_at
