"""Prometheus metrics of the router (served on /metrics with the shared ones).

Counters count what happened; gauges for the current state (queue length, agents by status, offers
outstanding) are refreshed from the database on each scrape by :func:`refresh_gauges`.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import Counter, Gauge, Histogram

CONTACTS_RECEIVED = Counter("switchboard_router_contacts_received_total", "Contacts received", ["channel"])
CONTACTS_ABANDONED = Counter(
    "switchboard_router_contacts_abandoned_total", "Contacts abandoned while queued", ["channel"]
)
CALLBACKS_OFFERED = Counter("switchboard_router_callbacks_offered_total", "Contacts diverted to a callback", ["reason"])
OFFERS = Counter("switchboard_router_offers_total", "Offers by outcome", ["outcome"])
COMPLETIONS = Counter("switchboard_router_completions_total", "Completed assignments", ["channel", "sale"])
AGENT_STATUS_CHANGES = Counter("switchboard_router_agent_status_changes_total", "Agent status changes", ["status"])
PRESENCE_LOST = Counter(
    "switchboard_router_presence_lost_total", "Agents whose stream stayed away beyond the grace period"
)
EVENTS_DUPLICATE = Counter("switchboard_router_events_duplicate_total", "Redelivered events skipped by the inbox")
ANSWER_WAIT = Histogram(
    "switchboard_router_answer_wait_seconds",
    "From receipt to acceptance by an agent",
    ["channel"],
    buckets=(1, 2, 5, 10, 15, 20, 30, 45, 60, 90, 120, 180, 300, 600, 1800),
)
GROUP_COMMIT_SIZE = Histogram(
    "switchboard_router_group_commit_size",
    "State changes (agent actions, batches of consumed events) committed together in one transaction",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
)
QUEUE_WAITING = Gauge("switchboard_router_waiting_contacts", "Contacts waiting", ["site", "channel"])
QUEUE_OLDEST = Gauge("switchboard_router_oldest_wait_seconds", "Longest current wait", ["site", "channel"])
AGENTS = Gauge("switchboard_router_agents", "Agents by status", ["status"])
STREAMS_OPEN = Gauge("switchboard_router_agent_streams_open", "Open agent streams")
OFFERS_OUTSTANDING = Gauge("switchboard_router_offers_outstanding", "Offers awaiting an answer")


def refresh_gauges(stats: dict[str, Any]) -> None:
    QUEUE_WAITING.clear()
    QUEUE_OLDEST.clear()
    for row in stats["waiting"]:
        QUEUE_WAITING.labels(row["site"], row["channel"]).set(row["waiting"])
        QUEUE_OLDEST.labels(row["site"], row["channel"]).set(row["oldest_wait_seconds"])
    AGENTS.clear()
    for status, n in stats["agents_by_status"].items():
        AGENTS.labels(status).set(n)
    OFFERS_OUTSTANDING.set(stats["offers_outstanding"])
