"""Prometheus metrics of the connector: what it told telephone systems, and whether they listened.

Bus consumption, handler failures, consumer lag and DLQ size come from :mod:`shared.observability` like
on every service; these say what a PBX owner and a Twilio account owner ask first: "did the webhook
arrive?" and "did the agent's phone ring?"."""

from __future__ import annotations

from prometheus_client import Counter

WEBHOOK_DELIVERIES = Counter(
    "switchboard_connector_webhook_deliveries_total",
    "Outbound webhooks per subscription: delivered (2xx) or undeliverable (retries exhausted or a 4xx: "
    "the event goes to the DLQ for replay)",
    ["source", "outcome"],
)
WEBHOOK_ATTEMPTS = Counter(
    "switchboard_connector_webhook_attempts_total",
    "HTTP attempts of outbound webhooks, by what the receiver answered (2xx, 4xx, 5xx, 429, error)",
    ["source", "answer"],
)
DIALS = Counter(
    "switchboard_connector_dials_total",
    "Agents rung for accepted voice contacts (ring) and callbacks placed (call_out), by outcome: placed, "
    "or why not (failed, not_connected, caller_gone, ...)",
    ["kind", "outcome"],
)
