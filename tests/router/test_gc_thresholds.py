"""Once its engine is rebuilt the router sets the cyclic collector's thresholds (``gc_thresholds``):
Python's default full passes paused it for up to 40 ms every few seconds at 300 contacts/s."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import ValidationError

from services.router.settings import RouterSettings
from tests.router.conftest import running_router


@pytest.fixture
def collector() -> Iterator[None]:
    """The test process's own thresholds, as they were, afterwards (they are process-wide)."""
    before = gc.get_threshold()
    gc.set_threshold(700, 10, 10)
    yield
    gc.set_threshold(*before)


async def test_the_router_sets_the_collector_thresholds_once_it_serves(tmp_path: Path, collector: None) -> None:
    async with running_router(tmp_path / "data", gc_thresholds=(12_345, 20, 30)):
        assert gc.get_threshold() == (12_345, 20, 30)


def test_the_default_makes_full_passes_rare_and_the_setting_reads_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    young, middle, old = RouterSettings().gc_thresholds
    assert young * middle * old >= 500 * 700 * 10 * 10  # allocations between full passes: 500x Python's or more
    monkeypatch.setenv("SWITCHBOARD_ROUTER_GC_THRESHOLDS", "[700, 10, 10]")
    assert RouterSettings().gc_thresholds == (700, 10, 10)
    monkeypatch.setenv("SWITCHBOARD_ROUTER_GC_THRESHOLDS", "[0, 10, 10]")  # 0 would switch collection off
    with pytest.raises(ValidationError):
        RouterSettings()
