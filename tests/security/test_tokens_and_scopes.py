"""Issue 13, point 2: one operator token everywhere, agent tokens any service verifies (and stops
accepting once re-issued), supervisor tokens from the admin, scheduling fields from trusted callers only."""

from __future__ import annotations

import time

import jwt
import pytest

from services.callback.app import create_app as create_callback
from services.intake.app import create_app as create_intake
from services.intake.settings import IntakeSettings
from services.router.app import create_app as create_router
from services.router.settings import RouterSettings
from shared.auth import Authenticator, AuthSettings, MissingAdminToken, Scope
from shared.settings import CommonSettings
from tests.conftest import TEST_ADMIN_TOKEN
from tests.security.conftest import Stack, bearer, eventually


@pytest.mark.parametrize("token", [None, "", "change-me", "short"])
@pytest.mark.parametrize("service", ["intake", "router", "callback"])
def test_no_service_starts_without_a_strong_admin_token(
    service: str, token: str | None, monkeypatch: pytest.MonkeyPatch, tmp_path: object
) -> None:
    monkeypatch.delenv("SWITCHBOARD_ADMIN_TOKEN", raising=False)
    monkeypatch.delenv("SWITCHBOARD_ROUTER_ADMIN_TOKEN", raising=False)
    if token is not None:
        monkeypatch.setenv("SWITCHBOARD_ADMIN_TOKEN", token)
    common = CommonSettings(data_dir=tmp_path, log_json=False)  # type: ignore[arg-type]
    with pytest.raises(MissingAdminToken):
        if service == "intake":
            create_intake(IntakeSettings(), common)
        elif service == "router":
            create_router(RouterSettings(), common)
        else:
            create_callback(common)


def test_the_old_router_variable_still_names_the_operator_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SWITCHBOARD_ADMIN_TOKEN")
    monkeypatch.setenv("SWITCHBOARD_ROUTER_ADMIN_TOKEN", "an-old-style-but-long-token")
    assert AuthSettings().required_admin_token() == "an-old-style-but-long-token"


async def test_the_operator_token_works_on_all_three_services(stack: Stack) -> None:
    admin = stack.headers["admin"]
    assert (await stack.router.client.get("/v1/stats", headers=admin)).status_code == 200
    assert (await stack.callback.get("/v1/summary/today", headers=admin)).status_code == 200
    assert (await stack.callback.get("/v1/callbacks", headers=bearer(TEST_ADMIN_TOKEN + "x"))).status_code == 401


async def test_an_agent_token_is_verified_by_the_callback_service_and_revoked_when_reissued(stack: Stack) -> None:
    old = stack.headers["alice"]
    promise = {"customer": {"id": "cust-9", "phone": "+4930901829"}, "promised_by_agent_id": "alice"}
    created = await stack.callback.post("/v1/callbacks", json=promise, headers=old)
    assert created.status_code == 201, created.text
    url = f"/v1/callbacks/{created.json()['id']}"
    assert (await stack.callback.get(url, headers=old)).status_code == 200

    r = await stack.router.client.post("/v1/agents/alice/token", headers=stack.headers["admin"])
    assert r.status_code == 200
    new = bearer(r.json()["token"])
    assert (await stack.router.client.get("/v1/agents/alice", headers=old)).status_code == 401  # at once
    assert (await stack.router.client.get("/v1/agents/alice", headers=new)).status_code == 200

    async def old_refused() -> bool:  # the callback service hears of the new token over the bus
        return (await stack.callback.get(url, headers=old)).status_code == 401

    await eventually(old_refused, timeout=10)
    assert (await stack.callback.get(url, headers=new)).status_code == 200


async def test_forged_expired_and_foreign_tokens_are_refused(stack: Stack) -> None:
    now = int(time.time())
    claims = {"iss": "switchboard", "sub": "alice", "scope": "agent", "jti": "x", "iat": now}
    foreign_key = jwt.encode(claims, b"not-our-key-not-our-key-not-our-key!", algorithm="HS256")
    unsigned = jwt.encode(claims, None, algorithm="none")
    own = Authenticator(AuthSettings(admin_token=TEST_ADMIN_TOKEN))
    admin_claim = jwt.encode({**claims, "scope": "admin"}, own._key, algorithm="HS256")
    expired = jwt.encode(
        {**claims, "scope": "supervisor", "sub": "sam", "iat": now - 7200, "exp": now - 3600},
        own._key,
        algorithm="HS256",
    )
    eternal_supervisor = jwt.encode({**claims, "scope": "supervisor", "sub": "sam"}, own._key, algorithm="HS256")
    for token in (foreign_key, unsigned, admin_claim, expired, eternal_supervisor, "garbage", "x" * 5000):
        for client, path in ((stack.router.client, "/v1/strategy"), (stack.callback, "/v1/callbacks")):
            r = await client.get(path, headers=bearer(token))
            assert r.status_code == 401, (path, token[:40], r.status_code)
            assert r.headers["www-authenticate"] == "Bearer"


async def test_only_the_admin_issues_supervisor_tokens_and_they_expire(stack: Stack) -> None:
    for who in ("alice", "supervisor"):
        r = await stack.router.client.post(
            "/v1/auth/supervisor-tokens", json={"name": "eve"}, headers=stack.headers[who]
        )
        assert r.status_code == 403
    too_long = await stack.router.client.post(
        "/v1/auth/supervisor-tokens", json={"name": "eve", "ttl_seconds": 10**9}, headers=stack.headers["admin"]
    )
    assert too_long.status_code == 422
    r = await stack.router.client.post(
        "/v1/auth/supervisor-tokens", json={"name": "eve", "ttl_seconds": 60}, headers=stack.headers["admin"]
    )
    claims = jwt.decode(r.json()["token"], options={"verify_signature": False})
    assert claims["scope"] == Scope.SUPERVISOR and claims["exp"] - claims["iat"] == 60


async def test_scheduling_fields_only_from_trusted_callers(stack: Stack) -> None:
    jump = {"customer": {"id": "cust-vip", "phone": "+4930901822"}, "virtual_start_time": "2020-01-01T00:00:00Z"}
    vip = {"customer": {"id": "cust-vip2", "phone": "+4930901823", "tier": "vip"}}
    in_bobs_name = {"customer": {"id": "cust-3", "phone": "+4930901824"}, "promised_by_agent_id": "bob"}
    for body in (jump, vip, in_bobs_name):
        r = await stack.callback.post("/v1/callbacks", json=body, headers=stack.headers["alice"])
        assert r.status_code == 403, (body, r.text)
    assert (await stack.callback.post("/v1/callbacks", json=jump)).status_code == 401
    r = await stack.callback.post("/v1/callbacks", json=jump, headers=stack.headers["supervisor"])
    assert r.status_code == 201, r.text
    assert r.json()["virtual_start_time"].startswith("2020-01-01")


async def test_an_agent_records_attempts_only_in_its_own_name(stack: Stack) -> None:
    from services.callback.store import Commitment

    r = await stack.callback.post(
        "/v1/callbacks", json={"customer": {"id": "cust-5", "phone": "+4930901825"}}, headers=stack.headers["admin"]
    )
    cid = r.json()["id"]
    service = stack.callback_app.state.service
    async with service.sessionmaker() as s, s.begin():
        (await s.get(Commitment, cid)).released_to_agent_id = "alice"
    url = f"/v1/callbacks/{cid}/attempts"
    as_bob = await stack.callback.post(
        url, json={"result": "wrong_number", "agent_id": "bob"}, headers=stack.headers["alice"]
    )
    assert as_bob.status_code == 403
    bobs = await stack.callback.post(url, json={"result": "wrong_number"}, headers=stack.headers["bob"])
    assert bobs.status_code == 403
    mine = await stack.callback.post(url, json={"result": "no_answer"}, headers=stack.headers["alice"])
    assert mine.status_code == 200
    assert mine.json()["attempt_history"][0]["agent_id"] == "alice"


async def test_openapi_declares_the_bearer_scheme(stack: Stack) -> None:
    for client in (stack.router.client, stack.callback):
        spec = (await client.get("/openapi.json")).json()
        assert spec["components"]["securitySchemes"]["bearer"] == {
            "type": "http",
            "scheme": "bearer",
            "description": spec["components"]["securitySchemes"]["bearer"]["description"],
        }
        secured = [op for path in spec["paths"].values() for op in path.values() if op.get("security")]
        assert secured, "no operation declares its security"
    router_spec = (await stack.router.client.get("/openapi.json")).json()
    assert router_spec["paths"]["/v1/queue"]["get"]["security"] == [{"bearer": []}]


async def test_intake_openapi_declares_its_signature_schemes(stack: Stack) -> None:
    spec = (await stack.intake.get("/openapi.json")).json()
    assert set(spec["components"]["securitySchemes"]) == {"switchboardSignature", "twilioSignature"}
    assert spec["paths"]["/v1/contacts"]["post"]["security"] == [{"switchboardSignature": []}]
    assert spec["paths"]["/v1/contacts/abandoned"]["post"]["security"] == [{"switchboardSignature": []}]
    assert spec["paths"]["/v1/webhooks/twilio/voice"]["post"]["security"] == [{"twilioSignature": []}]
