"""The dashboard's words and counts (pure)."""

from __future__ import annotations

from services.router.dashboard import agents_by_role, goals_in_words, throughput
from services.router.strategy import load_strategy

STRATEGY = load_strategy(None)


def test_throughput_counts_each_event_in_its_minute() -> None:
    now = 10 * 60 + 30.0  # half-way through minute 10
    rows = [
        (now - 5, now - 2, None, "assigned"),  # received and answered this minute
        (now - 65, now - 60, now - 10, "completed"),  # received and answered last minute, completed now
        (now - 61, None, now - 1, "abandoned"),
        (now - 3600, now - 3590, now - 3500, "completed"),  # long before the chart: nowhere
    ]
    buckets = throughput(rows, now, minutes=3)
    assert [b.minute for b in buckets] == [8 * 60, 9 * 60, 10 * 60]
    assert [(b.received, b.answered, b.completed, b.abandoned) for b in buckets] == [
        (0, 0, 0, 0),
        (2, 1, 0, 0),
        (1, 1, 1, 1),
    ]


def test_goals_say_what_service_does_and_does_not_do() -> None:
    goals = {g.topic: g.text for g in goals_in_words(STRATEGY)}
    assert goals["service level: voice"] == "80% of voice contacts answered within 20 s."
    assert goals["rule: unhappy_customer"].startswith("Complaints and cancellations go to brand ambassadors")
    assert goals["rule: unhappy_customer"].endswith("Served by brand ambassador, then service after 90 s.")
    assert "never goes to sales first" in goals["does not: sell to short questions"]
    assert goals["does not: push everyone to sales"].startswith("At most 30% of contacts go to sales per 1 hour")
    assert "brand ambassador up to 50 per contact" in goals["goodwill"]
    no_callbacks = STRATEGY.model_copy(update={"callback": STRATEGY.callback.model_copy(update={"enabled": False})})
    assert "does not: call back" in {g.topic for g in goals_in_words(no_callbacks)}


def test_agents_by_role_counts_an_agent_under_each_role_it_holds() -> None:
    by = agents_by_role([{"roles": ["service", "sales"], "status": "busy"}, {"roles": ["service"], "status": "break"}])
    assert by["service"] == {"busy": 1, "break": 1} and by["sales"] == {"busy": 1} and by["brand_ambassador"] == {}
