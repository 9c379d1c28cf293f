"""A PBX-side webhook receiver for tests: verifies every request's signature, answers as scripted."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from services.intake.signatures import SignatureFailure, verify_generic

SECRET = "pbx-shared-secret-0123"


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes
    signature: SignatureFailure | None  # None: authentic and fresh


@dataclass
class Receiver:
    url: str = ""
    received: list[Received] = field(default_factory=list)
    statuses: list[int] = field(default_factory=list)  # answered in turn; then 204

    def verified(self) -> list[Received]:
        return [r for r in self.received if r.signature is None]


@contextmanager
def receiver(secret: str = SECRET) -> Iterator[Receiver]:
    rec = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            failure = verify_generic(
                secret.encode(),
                body=body,
                timestamp_header=self.headers.get("X-Switchboard-Timestamp"),
                signature_header=self.headers.get("X-Switchboard-Signature"),
                now=time.time(),
                tolerance_seconds=300,
            )
            rec.received.append(Received(dict(self.headers.items()), body, failure))
            status = rec.statuses.pop(0) if rec.statuses else 204
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    rec.url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield rec
    finally:
        server.shutdown()
        server.server_close()
