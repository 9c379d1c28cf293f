"""The dashboard's promises panel: the router forwards the viewer's token to the callback service."""

from __future__ import annotations

import httpx

from tests.router.conftest import ADMIN, Router

SUMMARY = {
    "at": "2026-03-25T16:30:00Z",
    "overall": {
        "site": None,
        "date": None,
        "promised": 3,
        "fulfilled": 1,
        "open": 1,
        "at_risk": 1,
        "breached": 0,
        "breached_unflagged": 0,
        "closed": 1,
        "exhausted": 1,
        "same_day_fulfilment_rate": 0.3333,
    },
    "sites": [],
}
RISKY = {
    "id": "cb-1",
    "site": "main",
    "customer": {"id": "c2", "name": "Ada"},
    "status": "pending",
    "deadline": "2026-03-25T17:00:00Z",
    "attempts": 1,
    "last_result": "no_answer",
    "promise_text": "We will call you back today by 18:00 (Europe/Berlin time).",
}


async def test_promises_come_from_the_callback_service_with_the_viewers_token(router: Router) -> None:
    seen: list[httpx.Request] = []

    def callback_service(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.url.path == "/v1/summary/today":
            return httpx.Response(200, json=SUMMARY)
        return httpx.Response(200, json=[RISKY])

    router.app.state.callback_client = httpx.AsyncClient(
        base_url="http://callback.test", transport=httpx.MockTransport(callback_service)
    )
    r = await router.client.get("/v1/ops/promises", headers=ADMIN)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["overall"]["promised"] == 3 and body["overall"]["exhausted"] == 1
    assert body["overall"]["same_day_fulfilment_rate"] == 0.3333
    assert [p["customer_name"] for p in body["at_risk"]] == ["Ada"]
    assert all(req.headers["authorization"] == ADMIN["Authorization"] for req in seen)
    listing = seen[1].url.params
    assert listing["at_risk"] == "true" and listing.get_list("status") == ["pending", "released", "in_progress"]


async def test_agents_are_refused_and_an_unreachable_callback_service_is_a_clear_502(router: Router) -> None:
    _, agent = await router.register("alice")
    assert (await router.client.get("/v1/ops/promises", headers=agent)).status_code == 403
    assert (await router.client.get("/v1/ops/promises")).status_code == 401

    def down(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    router.app.state.callback_client = httpx.AsyncClient(
        base_url="http://callback.test", transport=httpx.MockTransport(down)
    )
    r = await router.client.get("/v1/ops/promises", headers=ADMIN)
    assert r.status_code == 502 and "SWITCHBOARD_ROUTER_CALLBACK_URL" in r.json()["detail"]

    def refuses(_request: httpx.Request) -> httpx.Response:
        return httpx.Response(403, json={"detail": "no"})

    router.app.state.callback_client = httpx.AsyncClient(
        base_url="http://callback.test", transport=httpx.MockTransport(refuses)
    )
    assert (await router.client.get("/v1/ops/promises", headers=ADMIN)).status_code == 403
