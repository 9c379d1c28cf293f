"""Idle and slow connections are closed; oversized heads refused (issue 13: header and idle timeouts).

uvicorn alone holds a connection that never completes its request head open for ever (its keep-alive
clock starts only after a response), so a few hundred slow clients could hold every socket.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import ServiceProcess

pytestmark = pytest.mark.e2e

TIMEOUT = 1.0


@pytest.fixture(scope="module")
def callback(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    data_dir: Path = tmp_path_factory.mktemp("connections")
    env = {
        "SWITCHBOARD_HTTP_HEADER_TIMEOUT_SECONDS": str(TIMEOUT),
        "SWITCHBOARD_HTTP_KEEP_ALIVE_TIMEOUT_SECONDS": str(TIMEOUT),
        "SWITCHBOARD_HTTP_MAX_HEADER_BYTES": "8192",
    }
    proc = ServiceProcess("callback", data_dir, env).start()
    try:
        yield proc
    finally:
        proc.kill()


def closed_within(sock: socket.socket, seconds: float) -> float | None:
    """Seconds until the server closed the connection (reads drained), or None if it stayed open."""
    started = time.monotonic()
    sock.settimeout(0.2)
    while time.monotonic() - started < seconds:
        try:
            data = sock.recv(65536)
        except TimeoutError:
            continue
        except ConnectionResetError:
            return time.monotonic() - started
        if data == b"":
            return time.monotonic() - started
    return None


def healthz(sock: socket.socket) -> bytes:
    """One GET /healthz on an open connection; the whole answer (head and body may arrive apart)."""
    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    answer = b""
    while not answer.endswith(b'{"status":"ok"}'):
        chunk = sock.recv(4096)
        if not chunk:
            break
        answer += chunk
    return answer


SLOW_HEAD = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Padding: " + b"a" * 200


def cut_off_while_trickling(sock: socket.socket, head: bytes) -> bool:
    """Send ``head`` a byte every 50 ms (slowloris); whether the server closed the connection within
    the head timeout (plus slack) instead of waiting for the rest."""
    started = time.monotonic()
    try:
        for byte in head:
            sock.sendall(bytes([byte]))
            time.sleep(0.05)
            if time.monotonic() - started > TIMEOUT + 3:
                return False
    except (BrokenPipeError, ConnectionResetError):
        pass
    return time.monotonic() - started < TIMEOUT + 3 and closed_within(sock, 1.0) is not None


def test_a_connection_that_sends_nothing_is_closed(callback: ServiceProcess) -> None:
    with socket.create_connection(("127.0.0.1", callback.port)) as s:
        assert closed_within(s, TIMEOUT + 3) is not None


def test_a_request_head_sent_a_byte_at_a_time_is_cut_off(callback: ServiceProcess) -> None:
    """Slowloris: each byte resets nothing; the head must be complete within the timeout."""
    with socket.create_connection(("127.0.0.1", callback.port)) as s:
        assert cut_off_while_trickling(s, SLOW_HEAD)


def test_the_next_request_head_on_a_kept_alive_connection_is_cut_off_too(callback: ServiceProcess) -> None:
    """After a response, the first byte of the next head stops uvicorn's keep-alive clock: without a
    clock of its own that head could then trickle in for ever."""
    with socket.create_connection(("127.0.0.1", callback.port)) as s:
        s.settimeout(5)
        assert healthz(s).startswith(b"HTTP/1.1 200")
        assert cut_off_while_trickling(s, SLOW_HEAD)


def test_an_idle_keep_alive_connection_is_closed(callback: ServiceProcess) -> None:
    with socket.create_connection(("127.0.0.1", callback.port)) as s:
        s.settimeout(5)
        assert healthz(s).startswith(b"HTTP/1.1 200")
        assert closed_within(s, TIMEOUT + 3) is not None


def test_keep_alive_still_serves_several_requests(callback: ServiceProcess) -> None:
    with socket.create_connection(("127.0.0.1", callback.port)) as s:
        s.settimeout(5)
        for _ in range(3):
            assert healthz(s).startswith(b"HTTP/1.1 200")
            time.sleep(TIMEOUT / 3)


def test_an_oversized_request_head_is_refused(callback: ServiceProcess) -> None:
    """The bytes of a head still incomplete are capped (memory a slow client can pin); a complete head
    arriving in one read (at most 64 KiB) is parsed as before."""
    with socket.create_connection(("127.0.0.1", callback.port)) as s:
        s.settimeout(5)
        answer = b""
        try:
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: ")
            for _ in range(10):
                s.sendall(b"a" * 2048)
                time.sleep(0.02)
            s.sendall(b"\r\n\r\n")
            answer = s.recv(4096)
        except (BrokenPipeError, ConnectionResetError):
            return
    assert answer == b"" or answer.startswith(b"HTTP/1.1 431"), answer[:80]
