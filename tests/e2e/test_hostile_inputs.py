"""Hand-made hostile inputs against the three real services: always a short 4xx, never a 500 (issue 13).

Each case was a 500 or an amplified echo before ``shared/http_limits.py``: ``1e400`` in JSON, invalid
UTF-8 in a form or JSON body, a 300-character or directory-named time zone (``ZoneInfo`` raises
``OSError``), bodies far beyond any legitimate size (echoed back twice as large in the 422).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import TEST_ADMIN_TOKEN
from tests.e2e.conftest import ServiceProcess

pytestmark = pytest.mark.e2e

ADMIN = TEST_ADMIN_TOKEN  # the operator token every service gets from service_env
H = {"Authorization": f"Bearer {ADMIN}"}
JSON_CT = "application/json"
FORM_CT = "application/x-www-form-urlencoded"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, ServiceProcess]]:
    data_dir: Path = tmp_path_factory.mktemp("hostile")
    env = {
        "SWITCHBOARD_HTTP_MAX_BODY_BYTES": str(256 * 1024),
        # A 429 would hide the answer under test (rate limits have their own tests).
        "SWITCHBOARD_INTAKE_RATE_LIMITS_ENABLED": "false",
    }
    procs: dict[str, ServiceProcess] = {}
    try:
        for name in ("intake", "router", "callback"):
            procs[name] = ServiceProcess(name, data_dir, env).start()
        yield procs
    finally:
        for proc in procs.values():
            proc.kill()


def _callback(customer: dict[str, object] | None = None, **extra: object) -> bytes:
    body = {"customer": {"id": "c-1", "phone": "+4930123456", **(customer or {})}, **extra}
    return json.dumps(body).encode()


CASES = [
    # (service, path, body, content type)
    ("router", "/v1/agents", b'{"agent_id": "a1", "skills": {"support": 1e400}}', JSON_CT),
    ("router", "/v1/agents", b'{"agent_id": "a1", "max_chat": NaN}', JSON_CT),
    ("router", "/v1/agents", b"agent_id=\xff\xfe", FORM_CT),
    ("router", "/v1/agents", b"\xff\xfe{}", JSON_CT),
    ("router", "/v1/agents", json.dumps({"agent_id": "a1", "timezone": "x" * 300}).encode(), JSON_CT),
    ("router", "/v1/agents", b"[" * 100_000 + b"]" * 100_000, JSON_CT),
    ("router", "/v1/agents", b"1" * 5000, JSON_CT),
    ("router", "/v1/contacts/some-contact/complete", b'{"goodwill_amount": 1e400}', JSON_CT),
    ("router", "/v1/contacts/some-contact/complete", b"resolved=\xff", FORM_CT),
    ("router", "/v1/contacts/some-contact/complete", b"resolved=true", FORM_CT),
    ("callback", "/v1/callbacks", _callback({"timezone": "x" * 300}), JSON_CT),
    ("callback", "/v1/callbacks", _callback({"timezone": "America"}), JSON_CT),
    ("callback", "/v1/callbacks", b'{"customer": {"id": "c"}, "priority": 1e400}', JSON_CT),
    ("callback", "/v1/callbacks", b'{"customer": {"id": "c"}, "priority": -Infinity}', JSON_CT),
    ("callback", "/v1/callbacks", b"customer=\xff", FORM_CT),
    ("callback", "/v1/callbacks", b"\xc3\x28", JSON_CT),
    ("callback", "/v1/callbacks/cb-1/attempts", b'{"result": "no_answer", "x": 1e400}', JSON_CT),
    ("intake", "/v1/callback-requests", json.dumps({"phone": "+4930123456", "timezone": "America"}).encode(), JSON_CT),
    ("intake", "/v1/callback-requests", b"phone=%2B4930123456&timezone=America", FORM_CT),
    ("intake", "/v1/callback-requests", b"phone=%2B4930123456&timezone=" + b"x" * 300, FORM_CT),
    ("intake", "/v1/callback-requests", b"phone=\xff", FORM_CT),
    ("intake", "/v1/contacts", b'{"source": "s", "external_id": "e", "channel": "voice", "x": 1e400}', JSON_CT),
    (
        "intake",
        "/v1/contacts",
        json.dumps(
            {"source": "s", "external_id": "e", "channel": "voice", "customer": {"id": "c", "timezone": "America"}}
        ).encode(),
        JSON_CT,
    ),
]


@pytest.mark.parametrize(
    ("service", "path", "body", "content_type"), CASES, ids=[f"{c[0]}{c[1]}-{i}" for i, c in enumerate(CASES)]
)
def test_hostile_body_gets_a_short_4xx(
    stack: dict[str, ServiceProcess], service: str, path: str, body: bytes, content_type: str
) -> None:
    r = httpx.post(stack[service].url + path, content=body, headers={**H, "content-type": content_type}, timeout=30)
    assert 400 <= r.status_code < 500, (r.status_code, r.text[:500])
    assert len(r.content) < 2048, f"{len(r.content)} bytes answered to {len(body)} sent"


@pytest.mark.parametrize("service", ["router", "callback"])
def test_a_body_over_the_limit_is_refused_with_413_not_echoed(stack: dict[str, ServiceProcess], service: str) -> None:
    path = "/v1/agents" if service == "router" else "/v1/callbacks"
    big = b'{"x": "' + b"a" * (5 * 1024 * 1024) + b'"}'
    r = httpx.post(stack[service].url + path, content=big, headers={**H, "content-type": JSON_CT}, timeout=30)
    assert r.status_code == 413, r.text[:300]
    assert len(r.content) < 200


@pytest.mark.parametrize("service", ["router", "callback"])
def test_a_chunked_body_over_the_limit_is_refused_with_413(stack: dict[str, ServiceProcess], service: str) -> None:
    """No Content-Length to refuse up front: the guard counts while it reads."""
    path = "/v1/agents" if service == "router" else "/v1/callbacks"

    def chunks() -> Iterator[bytes]:
        yield b'{"x": "'
        for _ in range(64):
            yield b"a" * 16384
        yield b'"}'

    r = httpx.post(stack[service].url + path, content=chunks(), headers={**H, "content-type": JSON_CT}, timeout=30)
    assert r.status_code == 413, r.text[:300]


def test_a_422_quotes_only_a_short_excerpt_of_the_input(stack: dict[str, ServiceProcess]) -> None:
    """FastAPI echoes ``input`` whole (a 100 MB body came back as 210 MB); here at most an excerpt."""
    body = _callback({"name": "n" * 200_000})
    r = httpx.post(stack["callback"].url + "/v1/callbacks", content=body, headers={**H, "content-type": JSON_CT})
    assert r.status_code == 422
    assert len(r.content) < 1024, len(r.content)
    assert any(e["loc"][-1] == "name" for e in r.json()["detail"])


def test_a_malformed_content_length_is_a_400(stack: dict[str, ServiceProcess]) -> None:
    """The HTTP parser refuses it before the app for us; the guard would too: never a 500."""
    import socket

    with socket.create_connection(("127.0.0.1", stack["callback"].port), timeout=10) as s:
        s.sendall(
            b"POST /v1/callbacks HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 12abc\r\n\r\n{}"
        )
        head = s.recv(4096)
    assert head.startswith(b"HTTP/1.1 4"), head[:100]
