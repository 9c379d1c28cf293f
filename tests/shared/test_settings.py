"""One business calendar for the deployment: intake and callback must agree on opening hours."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from services.callback.settings import CallbackSettings
from services.intake.settings import IntakeSettings
from shared.settings import CommonSettings

ALWAYS_OPEN = {"default": {"timezone": "UTC", "hours": {d: ["00:00-24:00"] for d in
                                                         ("mon", "tue", "wed", "thu", "fri", "sat", "sun")}}}
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
