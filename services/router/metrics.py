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
AGENT_STATUS_CHANGES = Counter(
    "switchboard_router_agent_status_changes_total", "Agent status changes (the agent's own choice)", ["status"]
)
AGENT_ACTIVITY_CHANGES = Counter(
    "switchboard_router_agent_activity_changes_total",
    "Changes of the router's view of an agent's work (idle, offered, on_contact, wrap_up)",
    ["activity"],
)
PRESENCE_LOST = Counter(
    "switchboard_router_presence_lost_total", "Agents whose stream stayed away beyond the grace period"
)
EVENTS_DUPLICATE = Counter("switchboard_router_events_duplicate_total", "Redelivered events skipped by the inbox")
# Strategy deviations (issue 15): recorded, never forced.
HANDLING_OVERRUNS = Counter(
    "switchboard_router_handling_overruns_total",
    "Contacts held beyond the allowed handling time of the agent's role",
    ["role", "channel"],
)
SALES_ON_SHORT_QUESTIONS = Counter(
    "switchboard_router_sales_on_short_questions_total",
    "Sales recorded on short questions, which the strategy keeps free of sales pushes",
    ["role", "channel"],
)
UNSERVABLE = Counter(
    "switchboard_router_unservable_contacts_total",
    "Contacts queued that no agent on duty could serve, by the first reason that ruled everybody out",
    ["reason", "channel"],
)
ANSWER_WAIT = Histogram(
    "switchboard_router_answer_wait_seconds",
    "From receipt to acceptance by an agent",
    ["channel"],
    buckets=(1, 2, 5, 10, 15, 20, 30, 45, 60, 90, 120, 180, 300, 600, 1800),
)
# Handling = completion - answer (wrap-up not included), observed at completion.
HANDLING_TIME = Histogram(
    "switchboard_router_handling_time_seconds",
    "From acceptance by an agent to completion of the contact",
    ["channel"],
    buckets=(15, 30, 60, 90, 120, 180, 240, 300, 450, 600, 900, 1200, 1800, 3600),
)
GROUP_COMMIT_SIZE = Histogram(
    "switchboard_router_group_commit_size",
    "State changes (agent actions, batches of consumed events) committed together in one transaction",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
)
QUEUE_WAITING = Gauge("switchboard_router_waiting_contacts", "Contacts waiting", ["site", "channel"])
QUEUE_OLDEST = Gauge("switchboard_router_oldest_wait_seconds", "Longest current wait", ["site", "channel"])
QUEUE_BY_ROLE = Gauge(
    "switchboard_router_waiting_contacts_by_role",
    "Contacts waiting, by channel and the first role of their plan",
    ["channel", "role"],
)
AGENTS = Gauge("switchboard_router_agents", "Agents by their own status", ["status"])
AGENTS_BY_ACTIVITY = Gauge(
    "switchboard_router_agents_by_activity", "Agents by the router's view of their work", ["activity"]
)
OWNS_ROUTING_STATE = Gauge(
    "switchboard_router_owns_routing_state",
    "1 while this instance owns the routing state and serves it; 0 as a standby",
    ["lease"],
)
# forwarding.py: requests this instance passed to the owner of their routing domain, by how they ended.
REQUESTS_FORWARDED = Counter(
    "switchboard_router_requests_forwarded_total",
    "Requests proxied to the instance owning their routing domain, by outcome (proxied, client_closed, "
    "upstream_unavailable, upstream_timeout, upstream_lost, loop_refused, resolver_unavailable)",
    ["outcome"],
)
OWNED_PARTITIONS = Gauge(
    "switchboard_router_owned_partitions",
    "`contacts` partitions whose routing domains this instance owns (ownership=partitions; 0 otherwise)",
)
OWNED_DOMAINS = Gauge(
    "switchboard_router_owned_domains",
    "routing domains (tenant/site) this instance owns, of those it has seen (ownership=partitions)",
)
STREAMS_OPEN = Gauge("switchboard_router_agent_streams_open", "Open agent streams")
OFFERS_OUTSTANDING = Gauge("switchboard_router_offers_outstanding", "Offers awaiting an answer")
# Service level over the stats window, in the three definitions /v1/stats reports (stats.py says which is which).
SERVICE_LEVEL = Gauge(
    "switchboard_router_service_level", "Service level attained over the recent window", ["channel", "definition"]
)
SERVICE_LEVEL_TARGET = Gauge(
    "switchboard_router_service_level_target", "The strategy's service-level target", ["channel"]
)
ABANDONMENT_RATE = Gauge("switchboard_router_abandonment_rate", "Abandoned / (answered + abandoned)", ["channel"])
# Staffing (staffing.py): role="all" is the whole channel, pooled.
STAFF_NEEDED = Gauge("switchboard_router_staffing_agents_needed", "Agents needed (Erlang C)", ["channel", "role"])
STAFF_ON_DUTY = Gauge("switchboard_router_staffing_agents_on_duty", "Agents on duty", ["channel", "role"])
ARRIVAL_RATE = Gauge("switchboard_router_arrival_rate_per_hour", "Live arrival rate", ["channel", "role"])
HANDLING_SECONDS = Gauge(
    "switchboard_router_handling_seconds", "Average handling time incl. wrap-up used for staffing", ["channel"]
)

# Sales share vs cap and goodwill vs budget over the strategy's rolling periods (stats' figures).
SALES_SHARE = Gauge("switchboard_router_sales_share", "Share of offers sent to sales over the sales-share period")
SALES_SHARE_CAP = Gauge("switchboard_router_sales_share_cap", "The strategy's cap on the sales share")
GOODWILL_SPENT = Gauge("switchboard_router_goodwill_spent", "Goodwill granted over the goodwill period", ["role"])
GOODWILL_BUDGET = Gauge(
    "switchboard_router_goodwill_budget", "The strategy's goodwill budget per period (role=all: overall)", ["role"]
)

SALES_TARGET = Gauge("switchboard_router_sales_target", "Sales target per period", ["subject", "name"])
SALES_ACTUAL = Gauge("switchboard_router_sales_actual", "Sales in the target's period", ["subject", "name"])

# Strategy coverage (coverage.py): is each role staffed for the traffic the rules send to it first?
ROLE_UNDERSTAFFED = Gauge(
    "switchboard_router_role_understaffed",
    "1 when a role's share of agents on duty is below the share of traffic the rules send to it first",
    ["role"],
)
RULE_FIRST_ROLE_SHARE = Gauge(
    "switchboard_router_rule_first_offer_to_first_role_share",
    "Share of a rule's contacts whose first offer went to the rule's first role (stats window)",
    ["rule"],
)
RULE_FIRST_ROLE_ON_DUTY = Gauge(
    "switchboard_router_rule_first_role_on_duty", "Agents on duty holding the rule's first role", ["rule"]
)

UNSERVABLE_WAITING = Gauge(
    "switchboard_router_unservable_waiting",
    "Contacts waiting now that nobody on duty can serve, by the reason that rules everybody out",
    ["reason"],
)

SL_DEFINITIONS = {"offered": "share", "answered": "answered_share", "with_abandoned": "with_abandoned_share"}


def refresh_gauges(stats: dict[str, Any]) -> None:
    QUEUE_WAITING.clear()
    QUEUE_OLDEST.clear()
    for row in stats["waiting"]:
        QUEUE_WAITING.labels(row["site"], row["channel"]).set(row["waiting"])
        QUEUE_OLDEST.labels(row["site"], row["channel"]).set(row["oldest_wait_seconds"])
    QUEUE_BY_ROLE.clear()
    for row in stats.get("waiting_by_role", []):
        QUEUE_BY_ROLE.labels(row["channel"], row["role"]).set(row["waiting"])
    AGENTS.clear()
    for status, n in stats["agents_by_status"].items():
        AGENTS.labels(status).set(n)
    AGENTS_BY_ACTIVITY.clear()
    for activity, n in stats.get("agents_by_activity", {}).items():
        AGENTS_BY_ACTIVITY.labels(activity).set(n)
    OFFERS_OUTSTANDING.set(stats["offers_outstanding"])
    _refresh_service_level(stats.get("service_level", {}))
    _refresh_staffing(stats.get("staffing", []))
    _refresh_sales_targets(stats.get("sales_targets", []))
    _refresh_sales_share_and_goodwill(stats.get("sales_share"), stats.get("goodwill"))
    _refresh_coverage(stats.get("strategy_coverage", {}))
    UNSERVABLE_WAITING.clear()
    for reason, n in stats.get("unservable", {}).get("by_reason", {}).items():
        UNSERVABLE_WAITING.labels(reason).set(n)


def _refresh_coverage(cov: dict[str, Any]) -> None:
    for gauge in (ROLE_UNDERSTAFFED, RULE_FIRST_ROLE_SHARE, RULE_FIRST_ROLE_ON_DUTY):
        gauge.clear()
    for row in cov.get("roles", []):
        ROLE_UNDERSTAFFED.labels(row["role"]).set(1 if row["understaffed"] else 0)
    for row in cov.get("rules", []):
        RULE_FIRST_ROLE_ON_DUTY.labels(row["rule"]).set(row["first_role_on_duty"])
        if row["first_offer_to_first_role_share"] is not None:
            RULE_FIRST_ROLE_SHARE.labels(row["rule"]).set(row["first_offer_to_first_role_share"])


def _refresh_sales_share_and_goodwill(share: dict[str, Any] | None, goodwill: dict[str, Any] | None) -> None:
    """A budget of None (no limit) has no sample: "unlimited" is not 0."""
    if share is not None:
        SALES_SHARE.set(share["share"])
        SALES_SHARE_CAP.set(share["cap"])
    GOODWILL_SPENT.clear()
    GOODWILL_BUDGET.clear()
    if goodwill is None:
        return
    GOODWILL_SPENT.labels("all").set(goodwill["spent"])
    if goodwill.get("budget") is not None:
        GOODWILL_BUDGET.labels("all").set(goodwill["budget"])
    for role, row in goodwill.get("by_role", {}).items():
        GOODWILL_SPENT.labels(role).set(row["spent"])
        GOODWILL_BUDGET.labels(role).set(row["budget"])


def _refresh_sales_targets(rows: list[dict[str, Any]]) -> None:
    SALES_TARGET.clear()
    SALES_ACTUAL.clear()
    for row in rows:
        subject, name = ("role", row["role"]) if row["role"] is not None else ("team", row["team"])
        SALES_TARGET.labels(subject, name).set(row["target"])
        SALES_ACTUAL.labels(subject, name).set(row["actual"])


def _refresh_service_level(levels: dict[str, dict[str, Any]]) -> None:
    """A definition with nothing to measure yet has no sample, rather than a misleading 0."""
    for gauge in (SERVICE_LEVEL, SERVICE_LEVEL_TARGET, ABANDONMENT_RATE):
        gauge.clear()
    for channel, sl in levels.items():
        SERVICE_LEVEL_TARGET.labels(channel).set(sl["target_share"])
        for definition, key in SL_DEFINITIONS.items():
            if sl.get(key) is not None:
                SERVICE_LEVEL.labels(channel, definition).set(sl[key])
        if sl.get("abandonment_rate") is not None:
            ABANDONMENT_RATE.labels(channel).set(sl["abandonment_rate"])


def _refresh_staffing(rows: list[dict[str, Any]]) -> None:
    for gauge in (STAFF_NEEDED, STAFF_ON_DUTY, ARRIVAL_RATE, HANDLING_SECONDS):
        gauge.clear()
    for row in rows:
        role = row["role"] or "all"
        if row["agents_needed"] is not None:
            STAFF_NEEDED.labels(row["channel"], role).set(row["agents_needed"])
        STAFF_ON_DUTY.labels(row["channel"], role).set(row["agents_on_duty"])
        ARRIVAL_RATE.labels(row["channel"], role).set(row["arrival_rate_per_hour"])
        if row["role"] is None:
            HANDLING_SECONDS.labels(row["channel"]).set(row["handling_seconds"])
