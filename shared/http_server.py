"""uvicorn as the services run it: httptools, idle and header-read timeouts, a header size cap (issue 13).

The HTTP parser is httptools (llhttp, in C), not h11 (pure Python): parsing heads and framing responses
and stream events was a visible share of the router's CPU per contact under load, and of intake's per
webhook. ``bench/bench_e2e.py`` measured 3–19 % less router CPU per contact at 20–30 contacts/s, and a
lower post → 202 p99.

uvicorn closes an idle keep-alive connection after ``timeout_keep_alive`` but starts that clock only
after a response: a connection that never sends a request, or sends its head a byte at a time
(slowloris), is held open for ever. :class:`GuardedHttpProtocol` closes a connection whose request head
is not complete within ``header_timeout`` seconds of its first byte (or of the connection, for the first
request). uvicorn caps an incomplete head only on h11 (``h11_max_incomplete_event_size``); here the
protocol does it for httptools: a head still incomplete after ``max_header_bytes`` is answered 431 and
the connection closed, so a slow client cannot pin memory with an endless head.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from shared.http_limits import HttpServerSettings

_TOO_LARGE = (
    b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
    b"content-type: text/plain; charset=utf-8\r\n"
    b"content-length: 31\r\n"
    b"connection: close\r\n"
    b"\r\n"
    b"Request header fields too large"
)


class GuardedHttpProtocol(HttpToolsProtocol):
    header_timeout: float = 10.0
    max_header_bytes: int = 16 * 1024

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_timer: asyncio.TimerHandle | None = None
        self._head_bytes = 0  # bytes received of a request head not yet complete

    def _waiting_for_head(self) -> bool:
        return self.cycle is None or self.cycle.response_complete

    def _arm(self) -> None:
        if self._head_timer is None:
            self._head_timer = self.loop.call_later(self.header_timeout, self._head_timed_out)

    def _disarm(self) -> None:
        self._head_bytes = 0
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def data_received(self, data: bytes) -> None:
        if self._waiting_for_head():
            self._arm()  # bytes of a new request head: its clock runs from the first of them
        super().data_received(data)
        if not self._waiting_for_head():
            self._disarm()  # the head is complete: the request runs (the app bounds its own work)
            return
        self._head_bytes += len(data)
        if self._head_bytes > self.max_header_bytes and not self.transport.is_closing():
            self.transport.write(_TOO_LARGE)
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self._waiting_for_head() and not self.transport.is_closing():
            self.transport.close()


def guarded_protocol(settings: HttpServerSettings) -> type[GuardedHttpProtocol]:
    """The protocol class with this server's limits (uvicorn takes a class, and builds one per connection)."""
    limits = {"header_timeout": settings.header_timeout_seconds, "max_header_bytes": settings.max_header_bytes}
    return type("GuardedHttpProtocol", (GuardedHttpProtocol,), limits)


def uvicorn_limits(settings: HttpServerSettings | None = None) -> dict[str, Any]:
    """Keyword arguments for ``uvicorn.run``: the limits of :class:`HttpServerSettings`."""
    settings = settings or HttpServerSettings()
    return {
        "http": guarded_protocol(settings),
        "timeout_keep_alive": settings.keep_alive_timeout_seconds,
        "timeout_graceful_shutdown": settings.graceful_shutdown_seconds,
    }
