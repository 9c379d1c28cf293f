"""Rate limits per client and per source on intake's webhooks and web forms: ``429`` + ``Retry-After``.

Why: every web callback request schedules a call to a number the client chose (300 from one client in
3 s were all accepted, issue 13), and a flood of webhooks from one sender should not starve the others.
Two families, each limited per client address and per source:

* ``webhook``: JSON contact/abandon webhooks and Twilio's voice webhooks: machines, few addresses, high
  volume; the defaults are high and only stop a runaway sender.
* ``web_form``: the website's callback form: browsers, one person each; the defaults are low per client,
  and a number can be asked for only a few times an hour whoever asks (from however many addresses).

The client limit is checked before the body is read (a flood costs little); the source limit after the
signature check, so forged requests cannot spend a signing source's budget. Counting is the ``limits``
library's sliding-window counter in memory (O(1) a request, per process: with N intake replicas a
client gets up to N times the limit). The client is the socket peer as uvicorn reports it (with its
default ``--proxy-headers``, the ``X-Forwarded-For`` client of a proxy listed in ``FORWARDED_ALLOW_IPS``,
default loopback).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from fastapi import Request
from limits import RateLimitItem, parse_many
from limits.storage import MemoryStorage
from limits.strategies import SlidingWindowCounterRateLimiter

from services.intake.service import IntakeError


class Family(StrEnum):
    WEBHOOK = "webhook"
    WEB_FORM = "web_form"


class Dimension(StrEnum):
    CLIENT = "client"
    SOURCE = "source"
    PHONE = "phone"  # the number a web form asks us to call: no one is called back on demand of a flood


def parse_limits(spec: str) -> list[RateLimitItem]:
    """``"5/minute;30/hour"`` -> limit items (all must hold); ``""`` -> no limit. ValueError if malformed."""
    spec = spec.strip()
    return list(parse_many(spec)) if spec else []


@dataclass(frozen=True)
class RateLimitSpecs:
    """The configured limits (strings as the settings hold them), per family and dimension."""

    webhook_per_client: str
    webhook_per_source: str
    web_form_per_client: str
    web_form_per_source: str
    web_form_per_phone: str = ""


class RateLimits:
    """Checks and counts one request against its limits; raises the ``429`` when one is exhausted."""

    def __init__(self, specs: RateLimitSpecs, *, clock: Callable[[], float] = time.time) -> None:
        self._items: dict[tuple[Family, Dimension], list[RateLimitItem]] = {
            (Family.WEBHOOK, Dimension.CLIENT): parse_limits(specs.webhook_per_client),
            (Family.WEBHOOK, Dimension.SOURCE): parse_limits(specs.webhook_per_source),
            (Family.WEB_FORM, Dimension.CLIENT): parse_limits(specs.web_form_per_client),
            (Family.WEB_FORM, Dimension.SOURCE): parse_limits(specs.web_form_per_source),
            (Family.WEB_FORM, Dimension.PHONE): parse_limits(specs.web_form_per_phone),
        }
        self._limiter = SlidingWindowCounterRateLimiter(MemoryStorage())
        self._clock = clock  # only for Retry-After: the library keeps its own (wall) time

    def hit(self, family: Family, dimension: Dimension, key: str) -> None:
        """Count one request for ``key``; ``IntakeError(429)`` with ``Retry-After`` if over a limit."""
        for item in self._items[(family, dimension)]:
            if not self._limiter.hit(item, family.value, dimension.value, key):
                stats = self._limiter.get_window_stats(item, family.value, dimension.value, key)
                retry_after = max(1, math.ceil(stats.reset_time - self._clock()))
                raise IntakeError(
                    429,
                    "rate_limited",
                    f"too many requests from this {dimension.value} ({item}), retry later",
                    headers={"Retry-After": str(retry_after)},
                )

    def client(self, request: Request, family: Family) -> None:
        self.hit(family, Dimension.CLIENT, request.client.host if request.client else "unknown")

    def source(self, family: Family, source: str) -> None:
        self.hit(family, Dimension.SOURCE, source)

    def phone(self, family: Family, e164: str) -> None:
        self.hit(family, Dimension.PHONE, e164)


class NoRateLimits(RateLimits):
    """Rate limiting switched off (benchmarks, tests that post hundreds of requests from one address)."""

    def __init__(self) -> None:  # no storage, no timer thread
        pass

    def hit(self, family: Family, dimension: Dimension, key: str) -> None:
        return None
