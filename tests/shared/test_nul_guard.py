"""NUL characters get a 422 at the edge of every service, never a 500 or a dead letter downstream."""

from __future__ import annotations

import httpx
import pytest
from fastapi import FastAPI, Request

from shared.nul_guard import RejectNulBytes


def _app() -> FastAPI:
    app = FastAPI()
    app.add_middleware(RejectNulBytes)

    @app.post("/echo")
    async def echo(request: Request) -> dict[str, str]:
        return {"body": (await request.body()).decode()}

    @app.get("/items/{item}")
    async def item(item: str, q: str = "") -> dict[str, str]:
        return {"item": item, "q": q}

    return app


@pytest.fixture
async def client() -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=_app()), base_url="http://t")


@pytest.mark.parametrize(
    ("method", "url", "kwargs", "where"),
    [
        ("GET", "/items/a%00b", {}, "path"),
        ("GET", "/items/a?q=x%00", {}, "query"),
        ("POST", "/echo", {"content": b'{"id": "a\\u0000b"}', "headers": {"content-type": "application/json"}}, "body"),
        (
            "POST",
            "/echo",
            {"content": b"phone=%2B49&name=A%00", "headers": {"content-type": "application/x-www-form-urlencoded"}},
            "body",
        ),
    ],
)
async def test_nul_anywhere_is_a_422_with_its_location(
    client: httpx.AsyncClient, method: str, url: str, kwargs: dict, where: str
) -> None:
    r = await client.request(method, url, **kwargs)
    assert r.status_code == 422
    assert r.json()["detail"][0]["loc"] == [where]


async def test_clean_requests_pass_unchanged_including_their_body(client: httpx.AsyncClient) -> None:
    body = '{"id": "a\\\\u0000 is only text here", "n": "ü"}'.replace("\\\\u0000", "u0000")
    r = await client.post("/echo", content=body.encode(), headers={"content-type": "application/json"})
    assert r.status_code == 200 and r.json()["body"] == body
    r = await client.get("/items/a%20b", params={"q": "x"})
    assert r.json() == {"item": "a b", "q": "x"}
    big = "x" * (2 << 20)  # beyond the scan cap: passed on whole, not truncated
    r = await client.post("/echo", content=big.encode(), headers={"content-type": "text/plain"})
    assert r.json()["body"] == big
