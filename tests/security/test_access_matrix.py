"""Every endpoint of all three services x {no token, agent, other agent, supervisor, admin}.

The tables below are the access decision for each route; the test walks the apps' route tables, so a
route added without a decision here fails ``test_every_route_has_an_access_decision``. "ok" means the
caller got past authentication and authorisation (2xx, or 404/409 where the state has moved on, e.g. an
offer the agent already accepted); every protected route must also answer 2xx to at least one caller.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from enum import Enum
from typing import Any

import httpx

from tests.security.conftest import Stack, offer_for

PRINCIPALS = ("none", "bob", "alice", "supervisor", "admin")  # the agent before others change its work


class Access(Enum):
    #          none  agent(own) other agent supervisor admin
    PUBLIC = ("ok", "ok", "ok", "ok", "ok")
    ANY = (401, "ok", "ok", "ok", "ok")
    TRUSTED = (401, 403, 403, "ok", "ok")
    ADMIN = (401, 403, 403, 403, "ok")
    SEE_OWN = (401, "ok", 403, "ok", "ok")  # the agent's own work; supervisors read everything
    ACT_OWN = (401, "ok", 403, 403, "ok")  # only the agent (or the operator) acts on its work
    SIGNED = (401, 401, 401, 401, 401)  # webhooks: a source's signature, no bearer token, decides
    AGENT = (401, "ok", "ok", 403, 403)  # about the calling agent itself: no agent, nothing to say

    def expected(self, principal: str) -> int | str:
        return dict(zip(("none", "alice", "bob", "supervisor", "admin"), self.value, strict=True))[principal]


Request = Callable[[Stack], Awaitable[tuple[str, Any]]]  # -> (url, json body or None)


def fixed(url: str, body: Any = None) -> Request:
    async def build(_stack: Stack) -> tuple[str, Any]:
        return url, body

    return build


PROFILE = {"name": "Carol", "roles": ["service"], "capacity": {"chat": 1}}


async def _offer(stack: Stack) -> tuple[str, Any]:
    if "offer" not in stack.ids:
        offer = await offer_for(stack, "alice", "m-1")
        stack.ids["offer"], stack.ids["contact"] = offer["offer_id"], offer["contact_id"]
    return f"/v1/offers/{stack.ids['offer']}", None


async def _offer_to_decline(stack: Stack) -> tuple[str, Any]:
    url, _ = await _offer(stack)
    return url + "/decline", {"reason": "matrix"}


async def _offer_to_accept(stack: Stack) -> tuple[str, Any]:
    offer = await offer_for(stack, "alice", "m-2")  # the declined one may come back: either is alice's
    stack.ids["accepted_contact"] = offer["contact_id"]
    return f"/v1/offers/{offer['offer_id']}/accept", None


async def _complete(stack: Stack) -> tuple[str, Any]:
    return f"/v1/contacts/{stack.ids['accepted_contact']}/complete", {"resolved": True}


async def _timeline(stack: Stack) -> tuple[str, Any]:
    return f"/v1/contacts/{stack.ids['accepted_contact']}/timeline", None


async def _promises(stack: Stack) -> tuple[str, Any]:
    """The router relays to the in-process callback app, so the callback service's own check answers."""
    transport = stack.callback._transport  # type: ignore[attr-defined]
    stack.router.app.state.callback_client = httpx.AsyncClient(transport=transport, base_url="http://callback")
    return "/v1/ops/promises", None


ROUTER: dict[tuple[str, str], tuple[Access, Request]] = {
    ("GET", "/healthz"): (Access.PUBLIC, fixed("/healthz")),
    ("GET", "/livez"): (Access.PUBLIC, fixed("/livez")),
    ("GET", "/readyz"): (Access.PUBLIC, fixed("/readyz")),
    ("GET", "/metrics"): (Access.PUBLIC, fixed("/metrics")),
    ("GET", "/openapi.json"): (Access.PUBLIC, fixed("/openapi.json")),
    ("GET", "/docs"): (Access.PUBLIC, fixed("/docs")),
    ("GET", "/docs/oauth2-redirect"): (Access.PUBLIC, fixed("/docs/oauth2-redirect")),
    ("GET", "/redoc"): (Access.PUBLIC, fixed("/redoc")),
    ("POST", "/v1/agents"): (Access.ADMIN, fixed("/v1/agents", {**PROFILE, "agent_id": None})),
    ("GET", "/v1/agents"): (Access.TRUSTED, fixed("/v1/agents")),
    ("GET", "/v1/agents/{agent_id}"): (Access.SEE_OWN, fixed("/v1/agents/alice")),
    ("PUT", "/v1/agents/{agent_id}"): (Access.ADMIN, fixed("/v1/agents/carol", PROFILE)),
    ("POST", "/v1/agents/{agent_id}/token"): (Access.ADMIN, fixed("/v1/agents/carol/token")),
    ("PUT", "/v1/agents/{agent_id}/status"): (
        Access.SEE_OWN,
        fixed("/v1/agents/alice/status", {"status": "available"}),
    ),
    ("GET", "/v1/agents/{agent_id}/offers"): (Access.SEE_OWN, fixed("/v1/agents/alice/offers")),
    ("GET", "/v1/agents/{agent_id}/assignments"): (Access.SEE_OWN, fixed("/v1/agents/alice/assignments")),
    # Opening the stream is the agent's presence (it then gets offers): not a supervisor's to fake.
    ("GET", "/v1/agents/{agent_id}/stream"): (Access.ACT_OWN, fixed("/v1/agents/alice/stream")),
    ("GET", "/v1/offers/{offer_id}"): (Access.SEE_OWN, _offer),
    ("POST", "/v1/offers/{offer_id}/decline"): (Access.ACT_OWN, _offer_to_decline),
    ("POST", "/v1/offers/{offer_id}/accept"): (Access.ACT_OWN, _offer_to_accept),
    ("POST", "/v1/contacts/{contact_id}/complete"): (Access.ACT_OWN, _complete),
    ("GET", "/v1/contacts/{contact_id}/timeline"): (Access.TRUSTED, _timeline),  # customer data
    ("GET", "/v1/queue"): (Access.TRUSTED, fixed("/v1/queue")),
    ("GET", "/v1/strategy"): (Access.ANY, fixed("/v1/strategy")),
    ("POST", "/v1/strategy/reload"): (Access.ADMIN, fixed("/v1/strategy/reload")),
    ("GET", "/v1/stats"): (Access.TRUSTED, fixed("/v1/stats")),
    ("GET", "/v1/router/ownership"): (Access.TRUSTED, fixed("/v1/router/ownership")),
    # The dashboard page is static and holds nothing secret; its data is customer data.
    ("GET", "/ops/dashboard"): (Access.PUBLIC, fixed("/ops/dashboard")),
    ("GET", "/v1/ops/dashboard"): (Access.TRUSTED, fixed("/v1/ops/dashboard")),
    ("GET", "/v1/ops/dashboard/stream"): (Access.TRUSTED, fixed("/v1/ops/dashboard/stream")),
    # Today's promises, relayed to the callback service with the caller's own token (customer data).
    ("GET", "/v1/ops/promises"): (Access.TRUSTED, _promises),
    # The agent console page is static too; /v1/console/me is the calling agent's own profile and figures.
    ("GET", "/agent"): (Access.PUBLIC, fixed("/agent")),
    ("GET", "/v1/console/me"): (Access.AGENT, fixed("/v1/console/me")),
    ("POST", "/v1/auth/supervisor-tokens"): (
        Access.ADMIN,
        fixed("/v1/auth/supervisor-tokens", {"name": "sue", "ttl_seconds": 60}),
    ),
}


async def _callback(stack: Stack) -> tuple[str, Any]:
    """A commitment that is alice's work: promised by her and released to her."""
    if "callback" not in stack.ids:
        r = await stack.callback.post(
            "/v1/callbacks",
            json={"customer": {"id": "cust-own", "phone": "+4930901820"}, "promised_by_agent_id": "alice"},
            headers=stack.headers["admin"],
        )
        assert r.status_code == 201, r.text
        stack.ids["callback"] = r.json()["id"]
        service = stack.callback_app.state.service
        from services.callback.store import Commitment

        async with service.sessionmaker() as s, s.begin():
            (await s.get(Commitment, stack.ids["callback"])).released_to_agent_id = "alice"
    return f"/v1/callbacks/{stack.ids['callback']}", None


async def _attempt(stack: Stack) -> tuple[str, Any]:
    url, _ = await _callback(stack)
    return url + "/attempts", {"result": "no_answer"}


CALLBACK: dict[tuple[str, str], tuple[Access, Request]] = {
    ("GET", "/healthz"): (Access.PUBLIC, fixed("/healthz")),
    ("GET", "/livez"): (Access.PUBLIC, fixed("/livez")),
    ("GET", "/readyz"): (Access.PUBLIC, fixed("/readyz")),
    ("GET", "/metrics"): (Access.PUBLIC, fixed("/metrics")),
    ("GET", "/openapi.json"): (Access.PUBLIC, fixed("/openapi.json")),
    ("GET", "/docs"): (Access.PUBLIC, fixed("/docs")),
    ("GET", "/docs/oauth2-redirect"): (Access.PUBLIC, fixed("/docs/oauth2-redirect")),
    ("GET", "/redoc"): (Access.PUBLIC, fixed("/redoc")),
    ("POST", "/v1/callbacks"): (
        Access.ANY,
        fixed("/v1/callbacks", {"customer": {"id": "c-any", "phone": "+4930901821"}}),
    ),
    ("GET", "/v1/callbacks"): (Access.TRUSTED, fixed("/v1/callbacks")),
    ("GET", "/v1/callbacks/{callback_id}"): (Access.SEE_OWN, _callback),
    ("POST", "/v1/callbacks/{callback_id}/attempts"): (Access.SEE_OWN, _attempt),
    ("GET", "/v1/summary/today"): (Access.TRUSTED, fixed("/v1/summary/today")),
}

UNSIGNED_CONTACT = {
    "external_id": "x-1",
    "source": "acme",
    "channel": "voice",
    "customer": {"id": "cust-1", "phone": "+4930901820"},
}
INTAKE: dict[tuple[str, str], tuple[Access, Request]] = {
    ("GET", "/healthz"): (Access.PUBLIC, fixed("/healthz")),
    ("GET", "/livez"): (Access.PUBLIC, fixed("/livez")),
    ("GET", "/readyz"): (Access.PUBLIC, fixed("/readyz")),
    ("GET", "/metrics"): (Access.PUBLIC, fixed("/metrics")),
    ("GET", "/openapi.json"): (Access.PUBLIC, fixed("/openapi.json")),
    ("GET", "/docs"): (Access.PUBLIC, fixed("/docs")),
    ("GET", "/docs/oauth2-redirect"): (Access.PUBLIC, fixed("/docs/oauth2-redirect")),
    ("GET", "/redoc"): (Access.PUBLIC, fixed("/redoc")),
    ("POST", "/v1/contacts"): (Access.SIGNED, fixed("/v1/contacts", UNSIGNED_CONTACT)),
    ("POST", "/v1/contacts/abandoned"): (
        Access.SIGNED,
        fixed("/v1/contacts/abandoned", {"source": "acme", "external_id": "x-1"}),
    ),
    # A source without a secret, while another source has one: it must sign too.
    ("POST", "/v1/callback-requests"): (Access.PUBLIC, fixed("/v1/callback-requests", {"phone": "+4930901820"})),
    ("POST", "/v1/webhooks/twilio/voice"): (Access.SIGNED, fixed("/v1/webhooks/twilio/voice", None)),
    ("POST", "/v1/webhooks/twilio/status"): (Access.SIGNED, fixed("/v1/webhooks/twilio/status", None)),
    ("POST", "/v1/webhooks/twilio/queue-result"): (Access.SIGNED, fixed("/v1/webhooks/twilio/queue-result", None)),
    ("POST", "/v1/webhooks/twilio/dial-result"): (
        Access.SIGNED,
        fixed("/v1/webhooks/twilio/dial-result?agent=alice", None),
    ),
    ("POST", "/v1/webhooks/twilio/callback-result"): (
        Access.SIGNED,
        fixed("/v1/webhooks/twilio/callback-result?callback=cb&agent=a&site=main&leg=agent", None),
    ),
    ("POST", "/v1/contacts/dial-result"): (
        Access.SIGNED,
        fixed("/v1/contacts/dial-result", {"source": "acme", "external_id": "x-1", "agent_id": "a", "result": "busy"}),
    ),
}


def _flatten(routes: Any) -> list[Any]:
    """Every route, including those of included routers (FastAPI may wrap them lazily)."""
    out = []
    for route in routes:
        if hasattr(route, "effective_candidates"):
            out.extend(_flatten(route.effective_candidates()))
        elif hasattr(route, "routes") and not hasattr(route, "methods"):
            out.extend(_flatten(route.routes))
        else:
            out.append(route)
    return out


def routes_of(app: Any) -> set[tuple[str, str]]:
    found = set()
    for route in _flatten(app.routes):
        for method in getattr(route, "methods", None) or ():
            if method != "HEAD":
                found.add((method, route.path))
    assert found, "no routes found: the route walk no longer understands FastAPI's route table"
    return found


async def _call(client: httpx.AsyncClient, method: str, url: str, body: Any, headers: dict[str, str]) -> int:
    if url.endswith("/stream"):
        async with client.stream(method, url, headers=headers) as response:
            return response.status_code  # the stream's first bytes are not needed: the status decides
    if url.startswith("/v1/webhooks/twilio"):
        headers = {**headers, "content-type": "application/x-www-form-urlencoded"}
        return (
            await client.request(method, url, content=b"CallSid=CA1&From=%2B4930901820", headers=headers)
        ).status_code
    return (await client.request(method, url, json=body, headers=headers)).status_code


async def check_matrix(
    stack: Stack, client: httpx.AsyncClient, table: dict[tuple[str, str], tuple[Access, Request]]
) -> None:
    failures = []
    for (method, _path), (access, build) in table.items():
        url, body = await build(stack)
        got_2xx = False
        for principal in PRINCIPALS:
            status = await _call(client, method, url, body, stack.headers[principal])
            expected = access.expected(principal)
            if expected == "ok":
                ok = status < 300 or status in (404, 409) and access is not Access.PUBLIC
                got_2xx |= status < 300
            else:
                ok = status == expected
            if not ok:
                failures.append(f"{method} {url} as {principal}: {status}, expected {expected}")
        if access not in (Access.SIGNED,) and not got_2xx:
            failures.append(f"{method} {url}: no caller got a 2xx")
    assert not failures, "\n".join(failures)


async def test_every_route_has_an_access_decision(stack: Stack) -> None:
    assert routes_of(stack.router.app) == set(ROUTER)
    assert routes_of(stack.callback_app) == set(CALLBACK)
    intake_app = stack.intake._transport.app  # type: ignore[attr-defined]
    assert routes_of(intake_app) == set(INTAKE)


async def test_router_access_matrix(stack: Stack) -> None:
    await check_matrix(stack, stack.router.client, ROUTER)


async def test_callback_access_matrix(stack: Stack) -> None:
    await check_matrix(stack, stack.callback, CALLBACK)


async def test_intake_access_matrix(stack: Stack) -> None:
    await check_matrix(stack, stack.intake, INTAKE)
