"""``SWITCHBOARD_INTAKE_FAST_PATH``: off by default, same answers either way, private internals only when on.

The fast path (docs/decisions/0001-intake-fast-path.md) is direct dispatch (``api/direct.py``, past
FastAPI's middleware stack and routing) plus strict E.164 parsing through phonenumbers' private helpers
(``phones.parse_e164_fast``). Here: both settings answer the same webhooks alike; with the default, intake
works while every private helper it could reach raises; the shortcuts run only when the setting is on.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from phonenumbers import phonenumberutil

from services.intake import phones, schemas
from services.intake.api.direct import IntakeAPI
from services.intake.app import create_app
from services.intake.settings import IntakeSettings
from shared.settings import CommonSettings
from tests.intake.conftest import IntakeFactory, contact_payload, run
from tests.intake.test_direct_dispatch import REQUESTS, SECRETS, _comparable

# Phone numbers as senders write them: strict E.164 (the fast path's short path) and everything else
# (phonenumbers.parse either way), valid and not.
PHONES = [
    "+4930901820",  # Germany, landline
    "+4915112345678",  # Germany, mobile
    "+390612345678",  # Italy: the leading zero is part of the number
    "+14155550123",  # USA: several zones, so no timezone guessed
    "+447911123456",  # UK mobile
    "+6421123456",  # New Zealand
    "+49030901820",  # a national prefix written after the country code
    "+49 30 901820",  # formatted
    "tel:+49-30-901820",  # RFC 3966
    "+15555555555",  # right shape, not an assigned number: 422
    "+4912",  # too short: 422
    "+999123456789",  # no such country code: 422
]


@pytest.fixture(autouse=True)
def fresh_phone_cache() -> Iterator[None]:
    """schemas caches normalised numbers: every test parses its numbers afresh, and leaves no trace."""
    schemas._e164.cache_clear()
    yield
    schemas._e164.cache_clear()
    phones.use_fast_path(False)


def contact_with(phone: str, external_id: str) -> dict[str, Any]:
    # No timezone in the payload: intake derives it from the number (rules.timezone_for parses it too).
    return contact_payload(external_id, customer={"id": "cust-1", "phone": phone, "tier": "premium"})


def published(events: list[Any]) -> list[tuple[str, Any, Any]]:
    return [(e.id, e.data["customer"]["phone"], e.data["customer"].get("timezone")) for _, _, e in events]


@pytest.mark.parametrize("phone", PHONES)
async def test_both_settings_answer_a_contact_alike(intake: IntakeFactory, tmp_path: Path, phone: str) -> None:
    """Each app is started (and sets the process-wide phone parser) right before it is asked."""
    answers = {}
    events = {}
    for fast_path in (False, True):
        app = await intake(fast_path=fast_path, data_dir=tmp_path / str(fast_path))
        assert phones.fast_path_in_use() is fast_path
        response = await app.client.post("/v1/contacts", json=contact_with(phone, "call-1"))
        answers[fast_path] = _comparable(response)
        events[fast_path] = published(app.events("contacts"))
    assert answers[False] == answers[True]
    assert events[False] == events[True]


@pytest.mark.parametrize("name", list(REQUESTS))
async def test_both_settings_answer_every_webhook_alike(intake: IntakeFactory, tmp_path: Path, name: str) -> None:
    """The answer classes of test_direct_dispatch (202, duplicate, 4xx of every kind, TwiML, forms)."""
    answers = {}
    for fast_path in (False, True):
        app = await intake(fast_path=fast_path, max_body_bytes=65_536, data_dir=tmp_path / str(fast_path), **SECRETS)
        ts = int(app.clock().timestamp())
        if name in ("duplicate", "idempotency key reused", "abandoned"):  # their first request comes first
            first = {"duplicate": "accepted", "idempotency key reused": "idempotency key", "abandoned": "accepted"}
            await app.client.request("POST", **REQUESTS[first[name]](ts))
        answers[fast_path] = _comparable(await app.client.request("POST", **REQUESTS[name](ts)))
    assert answers[False] == answers[True]


class PrivateGuard(ModuleType):
    """phonenumberutil as intake's phones module sees it: public names pass, private ones raise."""

    def __init__(self, module: ModuleType) -> None:
        super().__init__(module.__name__)
        self._module = module

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AssertionError(f"intake reached the private phonenumbers name {name}")
        return getattr(self._module, name)


async def test_the_default_path_works_without_any_private_internal(
    intake: IntakeFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    def forbidden(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the default path took a private shortcut")

    monkeypatch.setattr(phones, "_util", PrivateGuard(phonenumberutil))
    monkeypatch.setattr(phones, "parse_e164_fast", forbidden)
    monkeypatch.setattr(IntakeAPI, "enable_direct_dispatch", forbidden)
    monkeypatch.setattr(IntakeAPI, "_serve_direct", forbidden)
    app = await intake()  # the default settings
    assert app.settings.fast_path is False
    assert app.app.direct_paths == frozenset()
    for n, phone in enumerate(PHONES[:7]):
        response = await app.client.post("/v1/contacts", json=contact_with(phone, f"call-{n}"))
        assert response.status_code == 202, (phone, response.text)
    response = await app.client.post(
        "/v1/webhooks/twilio/voice?ivr=none",
        content=b"CallSid=CA123&From=%2B4930901820&To=%2B4930555000",
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert response.status_code == 200, response.text
    assert len(app.events("contacts")) == 8


@pytest.mark.parametrize("fast_path", [False, True])
async def test_the_shortcuts_run_only_when_the_setting_is_on(
    intake: IntakeFactory, monkeypatch: pytest.MonkeyPatch, fast_path: bool
) -> None:
    calls = {"direct": 0, "private phone helper": 0}
    serve_direct = IntakeAPI._serve_direct
    extract = phonenumberutil._extract_country_code

    async def counting_serve_direct(self: IntakeAPI, *args: Any) -> None:
        calls["direct"] += 1
        await serve_direct(self, *args)

    def counting_extract(*args: Any) -> Any:
        calls["private phone helper"] += 1
        return extract(*args)

    monkeypatch.setattr(IntakeAPI, "_serve_direct", counting_serve_direct)
    # Through intake's own reference only: phonenumbers.parse calls its helper itself, which is its business.
    guard = PrivateGuard(phonenumberutil)
    guard.__dict__["_extract_country_code"] = counting_extract
    for name in phones.PRIVATE_HELPERS[1:]:
        guard.__dict__[name] = getattr(phonenumberutil, name)
    monkeypatch.setattr(phones, "_util", guard)

    app = await intake(fast_path=fast_path)
    response = await app.client.post("/v1/contacts", json=contact_with("+4915112345678", "call-1"))
    assert response.status_code == 202
    assert bool(app.app.direct_paths) is fast_path
    assert phones.fast_path_in_use() is fast_path
    if fast_path:
        assert calls["direct"] == 1 and calls["private phone helper"] >= 1, calls
    else:
        assert calls == {"direct": 0, "private phone helper": 0}


def test_the_setting_is_off_unless_the_environment_switches_it_on(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SWITCHBOARD_INTAKE_FAST_PATH", raising=False)
    monkeypatch.chdir("/")  # no .env file
    assert IntakeSettings().fast_path is False
    monkeypatch.setenv("SWITCHBOARD_INTAKE_FAST_PATH", "true")
    assert IntakeSettings().fast_path is True


async def test_the_phone_parser_returns_to_the_public_api_when_a_fast_app_stops(tmp_path: Path) -> None:
    common = CommonSettings(data_dir=tmp_path, log_json=False, log_level="WARNING")
    app = create_app(IntakeSettings(fast_path=True, listen_host="127.0.0.1", rate_limits_enabled=False), common)
    async with run(app) as client:
        assert phones.fast_path_in_use()
        assert (await client.post("/v1/contacts", json=contact_payload())).status_code == 202
    assert not phones.fast_path_in_use()
