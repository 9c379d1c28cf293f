"""Topic names and partition keys, defined in one place.

| topic       | events                                                   | key             |
|-------------|----------------------------------------------------------|-----------------|
| `contacts`  | contact.requested / abandoned / agent_dialed /           | routing domain  |
|             | customer_dialed,                                         |                 |
|             | callback.due                                             |                 |
| `routing`   | offer.*, assignment.*, agent.status_changed /            | routing domain  |
|             | work_changed / token_issued                              |                 |
| `callbacks` | callback.requested / scheduled / at_risk / attempted /   | customer id     |
|             | fulfilled / breached                                     |                 |
| `<t>.dlq`   | anything that could not be handled, with the error       | original key    |

The routing domain (tenant/site) is the unit one router instance owns: it needs every contact *and*
every agent of its domain to match. ``callback.due`` therefore travels on ``contacts`` keyed by domain,
so it reaches the router that owns the customer's site. Callback lifecycle events are keyed by customer
so that duplicate promises to one customer stay in order and can be merged. Routers sharing the domains
pass the closures of callbacks on to ``contacts`` under the domain's key (``CHANNEL_NOTES``).
"""

from __future__ import annotations

from shared.events import (
    AgentDialed,
    AgentStatusChanged,
    AgentTokenIssued,
    AgentWorkChanged,
    AssignmentCompleted,
    CallbackAtRisk,
    CallbackAttempted,
    CallbackBreached,
    CallbackDue,
    CallbackFulfilled,
    CallbackRequested,
    CallbackScheduled,
    ContactAbandoned,
    ContactRequested,
    CustomerDialed,
    EventData,
    OfferAccepted,
    OfferDeclined,
    OfferMade,
    OfferTimedOut,
)

CONTACTS = "contacts"
ROUTING = "routing"
CALLBACKS = "callbacks"
ALL_TOPICS = (CONTACTS, ROUTING, CALLBACKS)
DLQ_SUFFIX = ".dlq"


def dlq(topic: str) -> str:
    return topic + DLQ_SUFFIX


def routing_domain(tenant_id: str, site: str) -> str:
    return f"{tenant_id}/{site}"


_TOPIC_OF: dict[type[EventData], str] = {
    ContactRequested: CONTACTS,
    ContactAbandoned: CONTACTS,
    CallbackDue: CONTACTS,
    AgentDialed: CONTACTS,
    CustomerDialed: CONTACTS,
    OfferMade: ROUTING,
    OfferAccepted: ROUTING,
    OfferDeclined: ROUTING,
    OfferTimedOut: ROUTING,
    AssignmentCompleted: ROUTING,
    AgentStatusChanged: ROUTING,
    AgentWorkChanged: ROUTING,
    AgentTokenIssued: ROUTING,
    CallbackRequested: CALLBACKS,
    CallbackScheduled: CALLBACKS,
    CallbackAtRisk: CALLBACKS,
    CallbackAttempted: CALLBACKS,
    CallbackFulfilled: CALLBACKS,
    CallbackBreached: CALLBACKS,
}


# Each topic's record key, as a ``str.format`` template over the payload (``data``): what ``key_for``
# computes, stated once for the published contract (docs/asyncapi.yaml; tests check the two agree).
KEY_FORMATS: dict[str, str] = {
    CONTACTS: "{data.tenant_id}/{data.site}",
    ROUTING: "{data.tenant_id}/{data.site}",
    CALLBACKS: "{data.tenant_id}/{data.customer.id}",
}


# What else a topic may carry, beyond its own event types (published in docs/asyncapi.yaml).
CHANNEL_NOTES: dict[str, str] = {
    CONTACTS: "Routers sharing the routing domains (SWITCHBOARD_ROUTER_OWNERSHIP=partitions) also pass "
    "callback.attempted / fulfilled / breached from `callbacks` on to here, same event id, under the "
    "routing domain key, so the domain's owner drops a queued callback (services/router/callback_closures.py).",
}


def topic_for(data: EventData) -> str:
    return _TOPIC_OF[type(data)]


def event_types_on(topic: str) -> list[type[EventData]]:
    """The payload types published to a (logical, non-DLQ) topic, in the order they are declared."""
    return [cls for cls, t in _TOPIC_OF.items() if t == topic]


def key_for(data: EventData) -> str:
    """The partition key: routing domain for contacts/routing, customer id for callbacks."""
    topic = topic_for(data)
    if topic == CALLBACKS:
        return f"{data.tenant_id}/{data.customer.id}"  # type: ignore[attr-defined]
    return routing_domain(data.tenant_id, data.site)  # type: ignore[attr-defined]


def route(data: EventData) -> tuple[str, str]:
    """(topic, key) for a payload."""
    return topic_for(data), key_for(data)
