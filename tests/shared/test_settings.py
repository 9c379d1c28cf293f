"""One business calendar for the deployment: intake and callback must agree on opening hours."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from services.callback.settings import CallbackSettings
from services.intake.settings import IntakeSettings
from shared.settings import CommonSettings

ALWAYS_OPEN = {
    "default": {
        "timezone": "UTC",
        "hours": {d: ["00:00-24:00"] for d in ("mon", "tue", "wed", "thu", "fri", "sat", "sun")},
    }
}
SUNDAY_NIGHT = datetime(2026, 11, 29, 23, 30, tzinfo=UTC)


def test_deployment_sites_config_reaches_intake_and_callback(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    path = tmp_path / "sites.yaml"
    path.write_text(json.dumps(ALWAYS_OPEN))
    monkeypatch.setenv("SWITCHBOARD_SITES_FILE", str(path))
    common = CommonSettings()
    for settings in (IntakeSettings(), CallbackSettings()):
        assert settings.calendars(common).for_site("anywhere").is_open(SUNDAY_NIGHT)


def test_default_calendar_is_weekday_office_hours_and_a_service_override_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    common = CommonSettings()
    assert not IntakeSettings().calendars(common).for_site("main").is_open(SUNDAY_NIGHT)
    monkeypatch.setenv("SWITCHBOARD_SITES_JSON", json.dumps(ALWAYS_OPEN))
    monkeypatch.setenv("SWITCHBOARD_CALLBACK_SITES_JSON", json.dumps({"default": {"hours": {}}}))
    common = CommonSettings()
    assert IntakeSettings().calendars(common).for_site("main").is_open(SUNDAY_NIGHT)
    assert not CallbackSettings().calendars(common).for_site("main").is_open(SUNDAY_NIGHT)


def test_one_promise_source_for_intake_and_callback_with_deprecated_aliases(monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 12: intake used its own cut-off and no calling hours; both now read SWITCHBOARD_PROMISE_*."""
    from services.callback.lifecycle import Policy
    from shared.promise import PromisePolicy, WhenNoOverlap
    from shared.settings import PromiseSettings

    assert PromiseSettings().policy() == PromisePolicy()  # defaults: 30 min, 08:00-21:00, 2 days, decline
    monkeypatch.setenv("SWITCHBOARD_PROMISE_CUTOFF_MINUTES", "45")
    monkeypatch.setenv("SWITCHBOARD_PROMISE_CUSTOMER_CALLING_HOURS", "09:00-20:00")
    monkeypatch.setenv("SWITCHBOARD_PROMISE_MAX_BUSINESS_DAYS", "1")
    monkeypatch.setenv("SWITCHBOARD_PROMISE_WHEN_NO_OVERLAP", "site_hours")
    expected = PromisePolicy(45, (540, 1200), 1, WhenNoOverlap.SITE_HOURS)
    assert PromiseSettings().policy() == expected
    assert Policy.from_settings(CallbackSettings()).promise == expected  # what the callback service plans with
    for name in ("CUTOFF_MINUTES", "CUSTOMER_CALLING_HOURS"):
        monkeypatch.delenv(f"SWITCHBOARD_PROMISE_{name}")
    monkeypatch.setenv("SWITCHBOARD_CALLBACK_CUTOFF_MINUTES", "10")  # deprecated, still read
    monkeypatch.setenv("SWITCHBOARD_CALLBACK_CUSTOMER_CALLING_HOURS", "")  # empty: any hour
    assert PromiseSettings().policy() == PromisePolicy(10, None, 1, WhenNoOverlap.SITE_HOURS)
    monkeypatch.delenv("SWITCHBOARD_CALLBACK_CUTOFF_MINUTES")
    monkeypatch.setenv("SWITCHBOARD_INTAKE_CALLBACK_CUTOFF_MINUTES", "5")
    assert PromiseSettings().cutoff_minutes == 5


def test_the_default_configuration_knows_exactly_the_default_site() -> None:
    calendars = CommonSettings().calendars()
    assert calendars.configured_sites() == ["main"] and calendars.is_configured("main")
    assert not calendars.is_configured("berlin")
    assert calendars.unknown_site_error("berlin") == "unknown site 'berlin'; configured sites: main"
