"""uvicorn as the services run it: idle and header-read timeouts, a header size cap (issue 13).

uvicorn closes an idle keep-alive connection after ``timeout_keep_alive`` but starts that clock only
after a response: a connection that never sends a request, or sends its head a byte at a time
(slowloris), is held open for ever. :class:`HeaderTimeoutProtocol` closes a connection whose request
head is not complete within ``header_timeout`` seconds of its first byte (or of the connection, for
the first request).
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol

from shared.http_limits import HttpServerSettings


class HeaderTimeoutProtocol(H11Protocol):
    header_timeout: float = 10.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_timer: asyncio.TimerHandle | None = None

    def _waiting_for_head(self) -> bool:
        return self.cycle is None or self.cycle.response_complete

    def _arm(self) -> None:
        if self._head_timer is None:
            self._head_timer = self.loop.call_later(self.header_timeout, self._head_timed_out)

    def _disarm(self) -> None:
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

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self._waiting_for_head() and not self.transport.is_closing():
            self.transport.close()


def protocol_with_header_timeout(seconds: float) -> type[HeaderTimeoutProtocol]:
    return type("HeaderTimeoutProtocol", (HeaderTimeoutProtocol,), {"header_timeout": seconds})


def uvicorn_limits(settings: HttpServerSettings | None = None) -> dict[str, Any]:
    """Keyword arguments for ``uvicorn.run``: the limits of :class:`HttpServerSettings`."""
    settings = settings or HttpServerSettings()
    return {
        "http": protocol_with_header_timeout(settings.header_timeout_seconds),
        "timeout_keep_alive": settings.keep_alive_timeout_seconds,
        "h11_max_incomplete_event_size": settings.max_header_bytes,
        "timeout_graceful_shutdown": settings.graceful_shutdown_seconds,
    }
