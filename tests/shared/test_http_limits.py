"""The shared input-limit pieces on their own: what is refused, what passes untouched, what a 422 quotes."""

from __future__ import annotations

import math
from typing import Any

import pytest

from shared.http_limits import BodyGuard, body_error, excerpt, trimmed_errors

JSON = b"application/json"
FORM = b"application/x-www-form-urlencoded"


@pytest.mark.parametrize(
    ("content_type", "body", "type_"),
    [
        (JSON, b'{"a": 1e400}', "finite_number"),
        (JSON, b'{"a": -1e999}', "finite_number"),
        (JSON, b"[NaN]", "finite_number"),
        (JSON, b'{"a": Infinity}', "finite_number"),
        (JSON, b'"\xff"', "json_invalid"),
        (b"application/vnd.api+json", b'{"a": 1e400}', "finite_number"),
        (FORM, b"a=%ff%fe", "form_invalid"),
        (FORM, b"a=\xff", "form_invalid"),
    ],
)
def test_bodies_no_parser_downstream_handles_safely_are_refused(content_type: bytes, body: bytes, type_: str) -> None:
    error = body_error(content_type, body)
    assert error is not None and error[1] == type_


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        (JSON, b'{"a": 1.5e300, "b": [1, 2, {"c": -0.0}]}'),
        (JSON, b"{not json"),  # malformed: the framework answers its own 422
        (FORM, b"a=%C3%A9&b=+x+"),
        (b"text/plain", b"\xff\xfe"),
    ],
)
def test_other_bodies_pass(content_type: bytes, body: bytes) -> None:
    assert body_error(content_type, body) is None


def test_a_422_quotes_scalars_briefly_and_never_containers() -> None:
    assert excerpt("x" * 10_000) == "x" * 64 + "..."
    assert excerpt(math.inf) == "inf"
    assert excerpt(7) == 7 and excerpt(None) is None and excerpt(True) is True
    assert excerpt({"whole": "body"}) is None and excerpt([1, 2]) is None
    errors: list[dict[str, Any]] = [
        {"loc": ("body", "x"), "msg": "bad", "type": "t", "input": {"x": "y" * 10**6}, "ctx": {"e": ValueError()}}
    ]
    assert trimmed_errors(errors) == [{"loc": ["body", "x"], "msg": "bad", "type": "t"}]


async def test_a_request_without_a_body_keeps_its_own_receive() -> None:
    """Streaming GETs (server-sent events) listen on receive() for the disconnect: it must be theirs."""
    seen: dict[str, Any] = {}

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen["receive"] = receive

    async def receive() -> dict[str, Any]:
        return {"type": "http.disconnect"}

    async def send(message: Any) -> None:
        raise AssertionError("the guard must not answer")

    scope = {"type": "http", "method": "GET", "headers": []}
    await BodyGuard(app, max_body_bytes=10)(scope, receive, send)
    assert seen["receive"] is receive


async def test_a_body_within_the_limit_is_replayed_whole_then_the_servers_messages_follow() -> None:
    messages = [
        {"type": "http.request", "body": b'{"a":', "more_body": True},
        {"type": "http.request", "body": b" 1}", "more_body": False},
        {"type": "http.disconnect"},
    ]
    got: list[Any] = []

    async def receive() -> dict[str, Any]:
        return messages.pop(0)

    async def app(scope: Any, receive: Any, send: Any) -> None:
        got.append(await receive())
        got.append(await receive())

    scope = {"type": "http", "method": "POST", "headers": [(b"content-type", JSON), (b"content-length", b"8")]}
    await BodyGuard(app, max_body_bytes=100)(scope, receive, None)  # type: ignore[arg-type]
    assert got == [{"type": "http.request", "body": b'{"a": 1}', "more_body": False}, {"type": "http.disconnect"}]
