"""Issue 13, point 3: webhooks signed by default beyond loopback (every configured source signs, the
abandon needs the proof of the contact), data files owner-only, no full phone number in DEBUG logs."""

from __future__ import annotations

import json
import stat
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from services.callback.app import create_app as create_callback
from services.callback.settings import CallbackSettings
from services.cli import _admin_token
from services.intake.app import create_app as create_intake
from services.intake.settings import IntakeSettings
from shared.files import private_file
from shared.settings import CommonSettings
from tests.conftest import ADMIN_HEADERS
from tests.intake.conftest import IntakeFactory, sign
from tests.security.conftest import SECRET, Stack, asgi, eventually

ROOT = Path(__file__).resolve().parents[2]
CONTACT = {
    "external_id": "call-1",
    "source": "acme",
    "channel": "voice",
    "customer": {"id": "cust-1", "phone": "+4930901820", "name": "Ada"},
}


def signed(payload: dict[str, Any], *, ts: int | None = None, secret: str = SECRET) -> dict[str, Any]:
    body = json.dumps(payload).encode()
    headers = {"content-type": "application/json", **sign(body, ts or int(time.time()), secret)}
    return {"content": body, "headers": headers}


async def test_signed_webhooks_pass_and_unsigned_replayed_or_tampered_ones_do_not(stack: Stack) -> None:
    intake = stack.intake
    unsigned = await intake.post("/v1/contacts", json=CONTACT)
    assert unsigned.status_code == 401
    replayed = await intake.post("/v1/contacts", **signed(CONTACT, ts=int(time.time()) - 3600))
    assert replayed.status_code == 401
    tampered = signed(CONTACT)
    tampered["content"] = tampered["content"].replace(b"Ada", b"Eve")
    assert (await intake.post("/v1/contacts", **tampered)).status_code == 401
    wrong_key = await intake.post("/v1/contacts", **signed(CONTACT, secret="guess"))
    assert wrong_key.status_code == 401
    accepted = await intake.post("/v1/contacts", **signed(CONTACT))
    assert accepted.status_code == 202, accepted.text


async def test_a_source_without_a_secret_must_sign_when_others_have_secrets(intake: IntakeFactory) -> None:
    app = await intake(source_secrets={"acme": SECRET}, listen_host="127.0.0.1")  # even on loopback
    r = await app.client.post("/v1/contacts", json={**CONTACT, "source": "other-ivr"})
    assert r.status_code == 401
    r = await app.client.post(
        "/v1/contacts", json={**CONTACT, "source": "other-ivr"}, headers={"X-Switchboard-Source": "other-ivr"}
    )
    assert r.status_code == 401


async def test_an_abandon_needs_the_proof_of_the_contact_it_abandons(stack: Stack) -> None:
    intake = stack.intake
    assert (await intake.post("/v1/contacts", **signed(CONTACT))).status_code == 202
    notice = {"source": "acme", "external_id": "call-1"}
    assert (await intake.post("/v1/contacts/abandoned", json=notice)).status_code == 401
    assert (await intake.post("/v1/contacts/abandoned", **signed(notice, secret="guess"))).status_code == 401
    # Claiming another, secret-less source does not reach acme's contact either.
    other = {"source": "nobody", "external_id": "call-1"}
    assert (await intake.post("/v1/contacts/abandoned", json=other)).status_code == 401
    assert (await intake.post("/v1/contacts/abandoned", **signed(notice))).status_code == 202


@pytest.mark.parametrize("listen_host", ["0.0.0.0", "::", "10.1.2.3", None])
async def test_beyond_loopback_signatures_are_required_without_any_secret_configured(
    intake: IntakeFactory, listen_host: str | None
) -> None:
    app = await intake(listen_host=listen_host)
    assert (await app.client.post("/v1/contacts", json=CONTACT)).status_code == 401
    assert (
        await app.client.post("/v1/contacts/abandoned", json={"source": "acme", "external_id": "x"})
    ).status_code == 401
    twilio = await app.client.post(
        "/v1/webhooks/twilio/voice",
        content=b"CallSid=CA1&From=%2B4930901820&To=%2B4930555000",
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert twilio.status_code == 401


async def test_on_loopback_without_secrets_unsigned_is_accepted_for_development(intake: IntakeFactory) -> None:
    app = await intake(listen_host="127.0.0.1")
    assert (await app.client.post("/v1/contacts", json=CONTACT)).status_code == 202


async def test_the_explicit_opt_out_is_honoured_and_logged_loudly(
    intake: IntakeFactory, capfd: pytest.CaptureFixture[str]
) -> None:
    app = await intake(listen_host="0.0.0.0", require_signatures=False)
    assert (await app.client.post("/v1/contacts", json=CONTACT)).status_code == 202
    err = capfd.readouterr().err
    assert "SIGNATURES_DISABLED_ON_A_PUBLIC_INTERFACE" in err and "critical" in err.lower()


def test_the_listen_host_decides_by_default() -> None:
    assert not IntakeSettings(listen_host="127.0.0.1").signatures_required()
    assert not IntakeSettings(listen_host="localhost").signatures_required()
    assert not IntakeSettings(listen_host="::1").signatures_required()
    assert IntakeSettings(listen_host="0.0.0.0").signatures_required()
    assert IntakeSettings().signatures_required()  # unknown: public
    assert IntakeSettings(listen_host="127.0.0.1", source_secrets={"a": "b"}).signatures_required()


async def test_data_files_are_owner_only(stack: Stack, tmp_path: Path) -> None:
    r = await stack.callback.post(
        "/v1/callbacks", json={"customer": {"id": "c", "phone": "+4930901820"}}, headers=stack.headers["admin"]
    )
    assert r.status_code == 201
    files = [p for p in (tmp_path / "data").iterdir() if p.is_file()]
    names = {p.name for p in files}
    assert {"bus.sqlite3", "router.sqlite3", "callback.sqlite3", "intake.sqlite3"} <= names
    assert any(n.endswith("-wal") for n in names)
    modes = {p.name: oct(stat.S_IMODE(p.stat().st_mode)) for p in files}
    assert modes == {n: oct(0o600) for n in modes}


def test_existing_world_readable_files_are_tightened(tmp_path: Path) -> None:
    old = tmp_path / "router.sqlite3"
    old.write_bytes(b"")
    old.chmod(0o644)
    token = tmp_path / "admin-token"
    token.write_text("an-old-token-from-before\n")
    token.chmod(0o644)
    private_file(old)
    assert stat.S_IMODE(old.stat().st_mode) == 0o600
    assert _admin_token(tmp_path) == "an-old-token-from-before"
    assert stat.S_IMODE(token.stat().st_mode) == 0o600


def test_a_generated_admin_token_is_owner_only_and_kept(tmp_path: Path) -> None:
    token = _admin_token(tmp_path)
    assert len(token) >= 32 and _admin_token(tmp_path) == token
    assert stat.S_IMODE((tmp_path / "admin-token").stat().st_mode) == 0o600


@pytest.mark.parametrize("inline", [False, True], ids=["through-aiosqlite", "inline"])
async def test_debug_logs_contain_no_full_phone_number(
    capfd: pytest.CaptureFixture[str], tmp_path: Path, inline: bool
) -> None:
    """Without the masking processor this fails: at DEBUG, aiosqlite logs the SQL parameters (the
    customer's phone among them) of the callback service's writes when they go through it
    (``sqlite_inline_writes=False``). Inline, on the standard driver, nothing logs them at all."""
    common = CommonSettings(data_dir=tmp_path / "dbg", log_json=True, log_level="DEBUG")
    intake_app = create_intake(IntakeSettings(listen_host="127.0.0.1"), common)
    callback_app = create_callback(common, CallbackSettings(scheduler_enabled=False, sqlite_inline_writes=inline))
    async with asgi(intake_app, "http://intake") as intake, asgi(callback_app, "http://callback") as callback:
        form = b"phone=%2B4930901820&name=Ada&message=call+me"
        r = await intake.post(
            "/v1/callback-requests", content=form, headers={"content-type": "application/x-www-form-urlencoded"}
        )
        assert r.status_code == 202, r.text
        r = await callback.post(
            "/v1/callbacks", json={"customer": {"id": "c", "phone": "+4930901820"}}, headers=ADMIN_HEADERS
        )
        assert r.status_code == 201, r.text

        async def consumed() -> bool:  # the web form's request reached the callback service too
            r = await callback.get("/v1/callbacks", headers=ADMIN_HEADERS)
            return len(r.json()) == 2

        await eventually(consumed, timeout=10)
    logs = capfd.readouterr().err
    assert '"level": "debug"' in logs  # DEBUG was on, and libraries logged at it
    for shape in ("4930901820", "30901820", "901820"):
        assert shape not in logs, shape
    if not inline:
        assert "****20" in logs  # the numbers were there, masked


def test_docker_compose_has_no_built_in_token() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    env = compose["x-switchboard"]["environment"]
    assert env["SWITCHBOARD_ADMIN_TOKEN"].startswith("${SWITCHBOARD_ADMIN_TOKEN:?")  # required, no default
    assert "change-me" not in (ROOT / "docker-compose.yml").read_text()
