"""Staffing per channel and role from arrivals and the team on duty (pure)."""

from __future__ import annotations

import pytest

from services.router.staffing import MIN_MEASURED, Arrival, OnDutyAgent, estimate, first_role
from services.router.strategy import load_strategy
from shared.events import Channel, Intent, Role, Tier

STRATEGY = load_strategy(None)  # default: voice 80 % within 20 s, 30 s wrap-up, 300 s expected handling
VOICE_WRAP = STRATEGY.wrap_up_seconds(Channel.VOICE)


def duty(*roles: Role, channels: tuple[Channel, ...] = (Channel.VOICE,)) -> OnDutyAgent:
    return OnDutyAgent(roles=frozenset(roles), channels=frozenset(channels))


def test_published_example_from_live_figures() -> None:
    """100 voice contacts in 30 min handled in 150 s + 30 s wrap-up = 180 s: 14 agents needed."""
    arrivals = [Arrival(Channel.VOICE, Role.SERVICE, 180 - VOICE_WRAP) for _ in range(100)]
    team = [duty(Role.SERVICE)] * 11 + [duty(Role.SERVICE, Role.SALES)]
    rows = {(r.channel, r.role): r for r in estimate(STRATEGY, arrivals, team, 1800)}
    voice = rows[("voice", None)]
    assert voice.agents_needed == 14 and voice.agents_on_duty == 12 and voice.shortfall == 2
    assert voice.handling_source == "measured" and voice.handling_seconds == 180
    assert voice.arrival_rate_per_hour == 200 and voice.traffic_erlangs == 10
    assert voice.service_level_with_needed == pytest.approx(0.888, abs=0.0005)
    assert rows[("voice", "service")].agents_needed == 14 and rows[("voice", "service")].agents_on_duty == 12
    # Sales has an agent on duty but no demand: needs nobody.
    assert rows[("voice", "sales")].agents_needed == 0 and rows[("voice", "sales")].agents_on_duty == 1


def test_unmeasured_handling_falls_back_to_the_strategy() -> None:
    arrivals = [Arrival(Channel.VOICE, Role.SERVICE, 10.0)] * (MIN_MEASURED - 1)
    (voice, _service) = estimate(STRATEGY, arrivals, [], 900)
    policy = STRATEGY.channel_policy(Channel.VOICE)
    assert voice.handling_source == "strategy"
    assert voice.handling_seconds == policy.expected_handling_seconds + policy.wrap_up_seconds
    assert voice.agents_on_duty == 0 and voice.shortfall == voice.agents_needed


def test_separate_pools_need_at_least_the_pooled_team() -> None:
    arrivals = [Arrival(Channel.VOICE, Role.SERVICE, 150.0)] * 50 + [Arrival(Channel.VOICE, Role.SALES, 150.0)] * 50
    rows = {(r.channel, r.role): r for r in estimate(STRATEGY, arrivals, [], 1800)}
    split = rows[("voice", "service")].agents_needed + rows[("voice", "sales")].agents_needed
    assert split >= rows[("voice", None)].agents_needed == 14


def test_channels_without_traffic_or_agents_are_left_out_and_a_bad_window_is_refused() -> None:
    assert estimate(STRATEGY, [], [duty(Role.SERVICE, channels=(Channel.CHAT,))], 900)[0].channel == "chat"
    assert estimate(STRATEGY, [], [], 900) == []
    with pytest.raises(ValueError):
        estimate(STRATEGY, [], [], 0)


def test_role_is_who_the_strategy_sends_the_contact_to_first() -> None:
    assert first_role(STRATEGY, Channel.VOICE, Intent.COMPLAINT, Tier.STANDARD, None) is Role.BRAND_AMBASSADOR
    assert first_role(STRATEGY, Channel.VOICE, Intent.PURCHASE, Tier.STANDARD, None) is Role.SALES
    assert first_role(STRATEGY, Channel.CHAT, Intent.QUESTION, Tier.STANDARD, None) is Role.SERVICE
