"""Erlang C against the published example and its own invariants."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.erlang import agents_needed, erlang_c, service_level


def test_published_example_100_contacts_per_half_hour() -> None:
    """100 contacts / 30 min, 180 s handling, 80 % within 20 s: 14 agents at ≈ 0.888 (10 Erlangs)."""
    s = agents_needed(100 / 1800, 180, 0.8, 20)
    assert s.agents == 14
    assert s.traffic_erlangs == pytest.approx(10.0)
    assert s.service_level == pytest.approx(0.888, abs=0.0005)
    assert s.probability_of_waiting == pytest.approx(0.1741, abs=0.0001)
    assert s.average_speed_of_answer_seconds == pytest.approx(7.8, abs=0.05)
    assert s.occupancy == pytest.approx(10 / 14)
    # One agent fewer misses the target: 14 is the fewest, not just enough.
    thirteen = service_level(13, 10.0, 180, 20)
    assert thirteen < 0.8 and thirteen == pytest.approx(0.7956, abs=0.0001)


def test_edges() -> None:
    assert agents_needed(0, 180, 0.8, 20).agents == 0
    assert erlang_c(10, 10.0) == 1.0 and service_level(10, 10.0, 180, 20) == 0.0  # cannot keep up
    assert erlang_c(5, 0.0) == 0.0 and service_level(0, 0.0, 180, 20) == 1.0
    # Large loads stay finite (no A**N / N! overflow).
    big = agents_needed(5.0, 300, 0.8, 20)
    assert 1500 < big.agents < 1600 and math.isfinite(big.service_level)


@pytest.mark.parametrize(
    "args",
    [(-1, 180, 0.8, 20), (0.1, 0, 0.8, 20), (0.1, 180, 0, 20), (0.1, 180, 1.0, 20), (float("nan"), 180, 0.8, 20)],
)
def test_bad_input_is_refused(args: tuple[float, float, float, float]) -> None:
    with pytest.raises(ValueError):
        agents_needed(*args)


@given(
    rate=st.floats(0.001, 1.0),
    aht=st.floats(10, 900),
    target=st.floats(0.5, 0.95),
    within=st.floats(5, 120),
)
def test_fewest_agents_that_meet_the_target(rate: float, aht: float, target: float, within: float) -> None:
    s = agents_needed(rate, aht, target, within)
    assert s.service_level >= target and s.agents > s.traffic_erlangs
    assert service_level(s.agents - 1, s.traffic_erlangs, aht, within) < target
