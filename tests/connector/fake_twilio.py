"""A local HTTP server standing in for Twilio's REST API: records every request, answers as scripted."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    form: dict[str, list[str]]


@dataclass
class FakeTwilio:
    url: str = ""
    requests: list[Seen] = field(default_factory=list)
    # Per call SID, the statuses to answer in turn (the last one repeats); default 200.
    script: dict[str, list[tuple[int, dict[str, object]]]] = field(default_factory=dict)
    delay_seconds: float = 0.0  # answer this late (a hung API)

    def answer(self, call_sid: str) -> tuple[int, dict[str, object]]:
        queue = self.script.get(call_sid)
        if not queue:
            return 200, {"sid": call_sid, "status": "in-progress"}
        return queue.pop(0) if len(queue) > 1 else queue[0]


def twilio_error(status: int, code: int, message: str) -> tuple[int, dict[str, object]]:
    return status, {
        "code": code,
        "message": message,
        "more_info": f"https://www.twilio.com/docs/errors/{code}",
        "status": status,
    }


@contextmanager
def fake_twilio() -> Iterator[FakeTwilio]:
    fake = FakeTwilio()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
            body = self.rfile.read(int(self.headers.get("Content-Length", 0))).decode()
            fake.requests.append(Seen("POST", self.path, dict(self.headers.items()), parse_qs(body)))
            time.sleep(fake.delay_seconds)
            call_sid = self.path.rsplit("/", 1)[-1].removesuffix(".json")
            status, doc = fake.answer(call_sid)
            raw = json.dumps(doc).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    fake.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield fake
    finally:
        server.shutdown()
        server.server_close()
