"""Agents' contact URIs in the router: how they are stored and what ``offer.accepted`` tells connectors.

Kept out of ``service.py`` so the router core only passes values through; connectors (Twilio, any PBX)
read the address from the event instead of calling back into the router.
"""

from __future__ import annotations

from typing import Any

from shared.events import Channel


def contact_uris_values(uris: dict[Channel, str] | None) -> dict[str, Any]:
    """Column values for an agent update: nothing when the caller left the addresses out (keep them)."""
    if uris is None:
        return {}
    return {"contact_uris": {c.value: u for c, u in uris.items()}}


def reach_of(agent_uris: dict[str, str] | None, contact_row: Any) -> dict[str, Any]:
    """The ``offer.accepted`` fields: the contact's channel and origin, the agent's address on it
    (``agent_uris``: the agent row's ``contact_uris``)."""
    uris = agent_uris or {}
    return {
        "channel": Channel(contact_row.channel),
        "contact_uri": uris.get(contact_row.channel),
        "source": contact_row.source,
        "external_id": contact_row.external_id,
    }
